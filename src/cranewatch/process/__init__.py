"""Process integrity: crane signals from the wire, crane state, physical-relation checks."""
