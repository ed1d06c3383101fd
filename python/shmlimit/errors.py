"""Exceptions of shmlimit's setup calls, one class per ``ErrorCode``.

Every error of the C++ library (``shmlimit::Error``) arrives as a subclass of
:class:`Error` whose ``code`` is the library's stable ``ErrorCode``. Where a
builtin exception means the same thing, the class derives from it too, so
``except FileNotFoundError`` catches a missing segment.
"""
from __future__ import annotations

import enum
from typing import Dict, Type


class ErrorCode(enum.IntEnum):
    """The C++ ``shmlimit::ErrorCode`` values (stable; they cross the C API)."""

    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    EXISTS = 3
    PERMISSION = 4
    INCOMPATIBLE = 5
    CORRUPT = 6
    TIMEOUT = 7
    POLICY_CONFLICT = 8
    TABLE_FULL = 9
    SYSTEM = 10
    READ_ONLY = 11
    NO_SPACE = 12


class Error(Exception):
    """Base class of every shmlimit error. ``code`` is its :class:`ErrorCode`
    (``None`` for a code this version does not know)."""

    code: "ErrorCode | None" = None


class InvalidArgumentError(Error, ValueError):
    """A bad name, rate, option or policy spec."""

    code = ErrorCode.INVALID_ARGUMENT


class NotFoundError(Error, FileNotFoundError):
    """The segment (or configuration file) does not exist."""

    code = ErrorCode.NOT_FOUND


class ExistsError(Error, FileExistsError):
    """``Limiter.create`` on a name that already exists."""

    code = ErrorCode.EXISTS


class AccessError(Error, PermissionError):
    """The segment's mode (or the file's) refuses us."""

    code = ErrorCode.PERMISSION


class IncompatibleError(Error):
    """Magic, layout version, fingerprint, size or capacity differ."""

    code = ErrorCode.INCOMPATIBLE


class CorruptError(Error):
    """The segment's header contradicts itself."""

    code = ErrorCode.CORRUPT


class OpenTimeoutError(Error, TimeoutError):
    """Waited too long for another process that is initialising the segment."""

    code = ErrorCode.TIMEOUT


class PolicyConflictError(Error):
    """Same policy name, other parameters, and ``replace`` was not given."""

    code = ErrorCode.POLICY_CONFLICT


class TableFullError(Error):
    """No room left in the segment's policy table."""

    code = ErrorCode.TABLE_FULL


class SystemFailureError(Error, OSError):
    """Any other operating-system error."""

    code = ErrorCode.SYSTEM


class ReadOnlyError(Error):
    """A write through a read-only handle."""

    code = ErrorCode.READ_ONLY


class NoSpaceError(Error, OSError):
    """create: /dev/shm (tmpfs) cannot hold every byte of the segment; the
    message names the bytes needed and free and how to give it more room."""

    code = ErrorCode.NO_SPACE


# Each class above states its code once; the lookup is built from them.
_BY_CODE: Dict[int, Type[Error]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        ExistsError,
        AccessError,
        IncompatibleError,
        CorruptError,
        OpenTimeoutError,
        PolicyConflictError,
        TableFullError,
        SystemFailureError,
        ReadOnlyError,
        NoSpaceError,
    )
    if cls.code is not None
}
assert len(_BY_CODE) == len(ErrorCode), "one class per ErrorCode"


def error_class(code: int) -> Type[Error]:
    """The class for a C++ ``ErrorCode`` value (:class:`Error` for an unknown one)."""
    return _BY_CODE.get(int(code), Error)
