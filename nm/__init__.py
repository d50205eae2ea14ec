"""Node manager: runs the VMs of one host through libvirt and keeps the CM told."""
