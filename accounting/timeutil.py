"""Nanosecond integers are the ledger's time unit; these convert at the edges."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

NS = 1_000_000_000


def ts_to_ns(ts: Timestamp) -> int:
    return ts.seconds * NS + ts.nanos


def ns_to_ts(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // NS, nanos=ns % NS)


def now_ns() -> int:
    return time.time_ns()
