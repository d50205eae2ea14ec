"""Starts held while a registration is taken and delivered.

A node manager registering again sends the CM the full list of what it runs,
and the CM ends the instances on that host the list does not name (those not
in flight).  A start that finished after the list was taken but before the CM
read it would have its instance Running there by the start's own answer, then
ended as missing.  So the reporter holds starts from taking its list until the
CM has answered: starts under way finish first (and are listed), new ones wait.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StartGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._starting = 0
        self._held = False

    @contextmanager
    def start(self) -> Iterator[None]:
        """Around one start (or resume): waits while a registration holds the gate."""
        with self._cond:
            while self._held:
                self._cond.wait()
            self._starting += 1
        try:
            yield
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Around taking and sending a registration: after the starts under way."""
        with self._cond:
            while self._held:
                self._cond.wait()
            self._held = True
            while self._starting:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()
