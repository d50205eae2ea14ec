"""Tashi's tests, one folder per service: cm/, nm/ (nm/network/), scheduler/,
accounting/, cli/, runtime/, and e2e/ for every service together.

Shared by all: conftest.py (the fixtures cm, icm, images), harness.py (process
launchers, the in-process CM, stopping, `wait_for` and the other waits),
guests.py (a private libvirtd and a tiny real guest), netns.py (network
namespaces, dnsmasq).  A folder's own helpers are in its support.py.
"""
