"""Tests of the node manager (tashi.nm): driver, disks, reporter, real guests."""
