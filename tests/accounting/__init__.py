"""Tests of accounting (tashi.accounting); helpers in tests/accounting/support.py."""
