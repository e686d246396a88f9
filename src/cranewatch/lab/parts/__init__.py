"""The lab's programs: each runs as its own process inside a host's namespace.

Started by the runner as ``python -m cranewatch.lab.parts.<name> ...`` through
``ip netns exec``; they speak real protocols (Modbus/TCP via pymodbus, MQTT via paho-mqtt,
HTTP, DNS, NTP, syslog, RFB, TLS) to real daemons or to each other.
"""
