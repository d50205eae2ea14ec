"""End-to-end tests: every service together, with a real Prometheus."""
