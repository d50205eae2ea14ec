"""The cluster manager's errors are the shared `tashi.runtime.errors` ones.

`CMError` stays as a name for the modules that import it; it is `ServiceError`.
"""

from __future__ import annotations

from tashi.runtime.errors import (
    ServiceError,
    denied,
    exists,
    invalid,
    not_found,
    precondition,
)

CMError = ServiceError

__all__ = ["CMError", "ServiceError", "denied", "exists", "invalid", "not_found", "precondition"]
