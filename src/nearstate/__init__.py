"""nearstate: the whole dataset of a read-heavy service, compact, in the memory of every
process that reads it.

The nouns: a :class:`Schema` of record types; a :class:`WriteState` staging the records of
the next version; snapshot and delta blobs kept in a :class:`BlobStore` and made current by
an :class:`Announcer`; a :class:`Producer` that turns each next state into a version; a
:class:`Consumer` holding the current version — a :class:`ReadState` (one immutable
version, a :class:`TypeState` per type, whose :class:`Record` views decode fields on
access) or a :class:`LayeredState` (a snapshot plus deltas); a :class:`LocalDataset`
directory bundling the local ports. Every error derives from
:class:`NearstateError`.
"""

from .consumer import Consumer, RefreshEvent
from .dataset import LocalDataset
from .errors import (
    BlobError,
    BlobNotFound,
    ChecksumError,
    CycleError,
    DatasetError,
    DeltaError,
    FormatError,
    InputError,
    LockedError,
    NearstateError,
    SchemaError,
)
from .index import HashIndex
from .infer import SchemaInferrer, infer_schema
from .jsonl import ImportResult, export_jsonl, export_records, import_jsonl
from .layered import Changes, LayeredState
from .ports import AnnouncementWatcher, Announcer, BlobStore
from .producer import CountChange, CycleResult, Incremental, Producer, RequiredFields
from .read_state import ReadState, Record, TypeState, from_bytes, load
from .schema import Field, FieldType, LongText, Ref, Schema, TypeDef, record
from .write_state import WriteState

__version__ = "0.1.0"

__all__ = [
    "AnnouncementWatcher",
    "Announcer",
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "Changes",
    "ChecksumError",
    "Consumer",
    "CountChange",
    "CycleError",
    "CycleResult",
    "DatasetError",
    "DeltaError",
    "Field",
    "FieldType",
    "FormatError",
    "HashIndex",
    "ImportResult",
    "Incremental",
    "InputError",
    "LayeredState",
    "LocalDataset",
    "LockedError",
    "LongText",
    "NearstateError",
    "Producer",
    "ReadState",
    "Record",
    "Ref",
    "RefreshEvent",
    "RequiredFields",
    "Schema",
    "SchemaError",
    "SchemaInferrer",
    "TypeDef",
    "TypeState",
    "WriteState",
    "__version__",
    "export_jsonl",
    "export_records",
    "from_bytes",
    "import_jsonl",
    "infer_schema",
    "load",
    "record",
]
