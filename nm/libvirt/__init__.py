"""The libvirt driver, split by concern: connection and host facts, state mapping,
domain XML, disks, events."""
