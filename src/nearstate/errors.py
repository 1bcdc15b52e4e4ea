"""Every error nearstate raises derives from :class:`NearstateError`.

The tree::

    NearstateError
    ├── SchemaError          a schema is invalid, a record contradicts it, or two schemas
    │                        are incompatible (names the type and field)
    ├── InputError           bad input to an import (names the line and field)
    ├── BlobError            a blob cannot be read
    │   ├── FormatError      not a nearstate blob, wrong version, truncated, bad layout
    │   ├── ChecksumError    a section's bytes do not match its checksum (names the section)
    │   └── BlobNotFound     a blob store has no blob of that name
    ├── DatasetError         a dataset is missing, empty or inconsistent
    │   ├── LockedError      another producer holds the right to publish
    │   └── ServerUnreachable  the dataset's server cannot be reached (retry later)
    ├── DeltaError           a delta does not apply to the state it is given (names the blob)
    ├── CycleError           a producer cycle failed; ``stage`` says where (nothing announced)
    ├── ConflictError        a transaction's condition failed (carries the key's current
    │                        token); nothing of the transaction was committed
    ├── LogError             the log cannot be read or written
    │   ├── LogUnavailable   the log's storage or server cannot be reached (retry later)
    │   └── LogTrimmed       the entries asked for were trimmed (load a newer version)
    └── ReadTimeout          a read-your-writes or strong read did not become possible in
                             time (also a TimeoutError); no stale data is returned

Third-party exceptions are converted where they enter (``raise ... from e``), so callers
only ever need to catch these.
"""

from __future__ import annotations


class NearstateError(Exception):
    """Root of every error raised by nearstate."""


class SchemaError(NearstateError):
    """A schema is invalid, a value contradicts it, or two schemas are incompatible."""


class InputError(NearstateError):
    """Input to an import is malformed; the message names the line and the field."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None):
        self.line = line
        self.field = field
        self.detail = message  #: the message without the line and field
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class BlobError(NearstateError):
    """A blob cannot be read."""


class FormatError(BlobError):
    """The bytes are not a well-formed nearstate blob (wrong magic, version, truncated...)."""


class ChecksumError(BlobError):
    """A section's bytes do not match the checksum recorded for it."""

    def __init__(self, message: str, *, section: str):
        self.section = section
        super().__init__(message)


class BlobNotFound(BlobError):
    """A blob store has no blob of that name."""

    def __init__(self, message: str, *, name: str):
        self.name = name
        super().__init__(message)


class DatasetError(NearstateError):
    """A dataset is missing, empty or inconsistent."""


class LockedError(DatasetError):
    """Another producer holds the right to publish this dataset."""


class ServerUnreachable(DatasetError):
    """The server holding the dataset cannot be reached: nothing listens at its address,
    or it does not answer. A wrong address and a server that is down look the same from
    here; retry later if the address is right."""


class DeltaError(NearstateError):
    """A delta does not apply to the state it is given (wrong origin, bad checksum)."""


class CycleError(NearstateError):
    """A producer cycle failed at ``stage``; nothing was announced."""

    def __init__(self, message: str, *, stage: str):
        self.stage = stage
        super().__init__(f"cycle failed at {stage}: {message}")


class ConflictError(NearstateError):
    """A transaction's condition failed; nothing of it was committed.

    ``type_name`` and ``key`` name the record, ``current`` is the key's current token
    (None when the key is absent), ``expected`` what the condition asked for.
    """

    def __init__(
        self, message: str, *, type_name: str, key: object, current: int | None,
        expected: object,
    ):  # fmt: skip
        self.type_name = type_name
        self.key = key
        self.current = current
        self.expected = expected
        super().__init__(message)


class LogError(NearstateError):
    """The log cannot be read or written."""


class LogUnavailable(LogError):
    """The log's storage (a file, a server) cannot be reached now; retrying may succeed."""


class LogTrimmed(LogError):
    """The entries asked for were trimmed from the log; load a newer version first."""


class ReadTimeout(NearstateError, TimeoutError):
    """A read that must see a token (read-your-writes) or the log's head (strong) could not
    within its timeout. Nothing stale was returned."""
