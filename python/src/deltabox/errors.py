"""Exceptions carrying the daemon's error code and message (what failed, why, what to do)."""
from __future__ import annotations


class DeltaBoxError(Exception):
    """An operation failed. `code` is the daemon's machine-readable code."""

    def __init__(self, message: str, code: str = "internal", status: int = 0):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


class NotFound(DeltaBoxError):
    """No such sandbox or checkpoint."""


class BadRequest(DeltaBoxError):
    """Invalid input (ids, bases, options)."""


class Removed(DeltaBoxError):
    """The sandbox or checkpoint was removed."""


class Busy(DeltaBoxError):
    """A background process prevents the checkpoint."""


class NotCapturable(DeltaBoxError):
    """A process cannot be checkpointed exactly (threads, sockets, shared mappings ...)."""


class NoTemplate(DeltaBoxError):
    """The checkpoint's process template is gone; restore with files_only=True."""


class Dead(DeltaBoxError):
    """The sandbox is not running."""


class NoSpace(DeltaBoxError):
    """The layer store is full."""


class DaemonUnavailable(DeltaBoxError):
    """No daemon answers and none could be started."""


BY_CODE = {
    "not_found": NotFound,
    "invalid_id": BadRequest,
    "bad_request": BadRequest,
    "removed": Removed,
    "busy": Busy,
    "not_capturable": NotCapturable,
    "no_template": NoTemplate,
    "dead": Dead,
    "no_space": NoSpace,
}


def from_response(status: int, body: dict) -> DeltaBoxError:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code = err.get("code", "internal")
    message = err.get("message", f"HTTP {status}")
    return BY_CODE.get(code, DeltaBoxError)(message, code, status)
