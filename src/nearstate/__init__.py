"""nearstate: the whole dataset of a read-heavy service, compact, in the memory of every
process that reads it.

The nouns: a :class:`Schema` of record types; a :class:`WriteState` staging the records of
the next version; a snapshot blob on disk; a :class:`ReadState` (one immutable version, a
:class:`TypeState` per type) whose :class:`Record` views decode fields on access; a
:class:`LocalDataset` directory holding versions. Every error derives from
:class:`NearstateError`.
"""

from .dataset import LocalDataset
from .errors import (
    BlobError,
    ChecksumError,
    DatasetError,
    FormatError,
    InputError,
    NearstateError,
    SchemaError,
)
from .index import HashIndex
from .infer import SchemaInferrer, infer_schema
from .jsonl import ImportResult, export_jsonl, export_records, import_jsonl
from .read_state import ReadState, Record, TypeState, from_bytes, load
from .schema import Field, FieldType, LongText, Ref, Schema, TypeDef, record
from .write_state import WriteState

__version__ = "0.1.0"

__all__ = [
    "BlobError",
    "ChecksumError",
    "DatasetError",
    "Field",
    "FieldType",
    "FormatError",
    "HashIndex",
    "ImportResult",
    "InputError",
    "LocalDataset",
    "LongText",
    "NearstateError",
    "ReadState",
    "Record",
    "Ref",
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
