"""Tests of the node manager's host networking (tashi.nm.network)."""
