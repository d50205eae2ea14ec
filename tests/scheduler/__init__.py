"""Tests of the scheduler (tashi.scheduler); helpers in tests/scheduler/support.py."""
