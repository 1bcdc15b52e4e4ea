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
    │   └── LockedError      another producer holds the right to publish
    ├── DeltaError           a delta does not apply to the state it is given (names the blob)
    └── CycleError           a producer cycle failed; ``stage`` says where (nothing announced)

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


class DeltaError(NearstateError):
    """A delta does not apply to the state it is given (wrong origin, bad checksum)."""


class CycleError(NearstateError):
    """A producer cycle failed at ``stage``; nothing was announced."""

    def __init__(self, message: str, *, stage: str):
        self.stage = stage
        super().__init__(f"cycle failed at {stage}: {message}")
