"""Tests of the `tashi` command line (tashi.cli)."""
