"""nearstate: the whole dataset of a read-heavy service, compact, in the memory of every
process that reads it.

The nouns: a :class:`Schema` of record types; a :class:`WriteState` staging the records of
the next version; snapshot and delta blobs kept in a :class:`BlobStore` and made current by
an :class:`Announcer`; a :class:`Producer` that turns each next state into a version; a
:class:`Consumer` holding the current version — a :class:`ReadState` (one immutable
version, a :class:`TypeState` per type, whose :class:`Record` views decode fields on
access) or a :class:`LayeredState` (a snapshot plus deltas); a :class:`Writer` committing
upserts, deletes and :class:`Transaction` objects to the :class:`Log`, each returning a
:class:`Token` a consumer can wait for (read-your-writes); a :class:`Compactor` folding
the Log into versions; a :class:`Dataset` bundling the ports of one backend — a
:class:`LocalDataset` directory or a :class:`NatsDataset` in NATS JetStream — opened with
``nearstate.open(url)``. Every error derives from :class:`NearstateError`.
"""

from .compaction import Compactor, compact
from .consumer import Consumer, RefreshEvent
from .dataset import Dataset, LocalDataset, NatsDataset, open_dataset
from .errors import (
    BlobError,
    BlobNotFound,
    ChecksumError,
    ConflictError,
    CycleError,
    DatasetError,
    DeltaError,
    FormatError,
    InputError,
    LockedError,
    LogError,
    LogTrimmed,
    LogUnavailable,
    NearstateError,
    ReadTimeout,
    SchemaError,
    ServerUnreachable,
)
from .index import HashIndex
from .infer import SchemaInferrer, infer_schema
from .jsonl import ImportResult, export_jsonl, export_records, import_jsonl
from .layered import Changes, LayeredState, State
from .ordered import OrderedIndex, Query, above, below, between, one_of, prefix
from .ports import AnnouncementWatcher, Announcer, BlobStore, Log
from .producer import CountChange, CycleResult, Incremental, Producer, RequiredFields
from .read_state import ReadState, Record, TypeState, from_bytes, load
from .schema import Field, FieldType, LongText, Ref, Schema, TypeDef, record
from .write_state import WriteState
from .writer import Token, Transaction, Writer

open = open_dataset

__version__ = "0.1.0"

__all__ = [
    "AnnouncementWatcher",
    "Announcer",
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "Changes",
    "ChecksumError",
    "Compactor",
    "ConflictError",
    "Consumer",
    "CountChange",
    "CycleError",
    "CycleResult",
    "Dataset",
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
    "Log",
    "LogError",
    "LogTrimmed",
    "LogUnavailable",
    "LongText",
    "NatsDataset",
    "NearstateError",
    "OrderedIndex",
    "Producer",
    "Query",
    "ReadState",
    "ReadTimeout",
    "Record",
    "Ref",
    "RefreshEvent",
    "RequiredFields",
    "Schema",
    "SchemaError",
    "SchemaInferrer",
    "ServerUnreachable",
    "State",
    "Token",
    "Transaction",
    "TypeDef",
    "TypeState",
    "WriteState",
    "Writer",
    "__version__",
    "above",
    "below",
    "between",
    "compact",
    "export_jsonl",
    "export_records",
    "from_bytes",
    "import_jsonl",
    "infer_schema",
    "load",
    "one_of",
    "open",
    "prefix",
    "record",
]
