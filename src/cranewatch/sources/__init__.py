"""Where packets and events come from: capture files, live interfaces, Zeek logs."""
