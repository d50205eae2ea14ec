"""Tests of the shared runtime (tashi.runtime): clients, errors, informer, interceptors."""
