"""Exceptions raised by the public sealbox API.

Every error derives from SealboxError, so callers can catch one type. Messages
name the value at fault and what to do next; they never contain a secret value.
"""

from __future__ import annotations


class SealboxError(Exception):
    """Base class of every sealbox error."""


class InvalidSpecError(SealboxError, ValueError):
    """A sandbox, network or secret specification has an invalid field."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


class SandboxExistsError(SealboxError):
    """A sandbox with the requested name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"sandbox {name!r} already exists; remove it first, or replace it (replace=True in Python, --replace on the command line)"
        )


class SandboxNotFoundError(SealboxError, LookupError):
    """No sandbox with the requested name is registered."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"sandbox {name!r} not found; `sealbox ls` lists the existing ones")


class SandboxNotRunningError(SealboxError):
    """The sandbox exists but is not running, so nothing can be executed in it."""

    def __init__(self, name: str, status: str) -> None:
        self.name = name
        self.status = status
        super().__init__(f"sandbox {name!r} is {status}, not running")


class SandboxStartError(SealboxError):
    """The sandbox could not be started; the message carries the failing step."""


class ExecTimeoutError(SealboxError, TimeoutError):
    """A command ran longer than its timeout; its process tree was killed."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        super().__init__(f"command {command!r} timed out after {timeout:g} s; its process tree was killed")


class ImageNotFoundError(SealboxError, LookupError):
    """The image reference names no known image or directory."""

    def __init__(self, reference: str, reason: str = "") -> None:
        self.reference = reference
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"image {reference!r} not found{detail}; use 'host' or the path of a root filesystem directory"
        )


class PrerequisiteError(SealboxError):
    """A required host tool or kernel feature is missing."""

    def __init__(self, tool: str, package: str | None = None, detail: str = "") -> None:
        self.tool = tool
        self.package = package
        hint = f"; install it with `apt-get install {package}`" if package else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{tool} is required but not available{extra}{hint}")
