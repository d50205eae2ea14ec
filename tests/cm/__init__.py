"""Tests of the cluster manager (tashi.cm)."""
