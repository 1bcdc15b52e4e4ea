"""Corrupted, truncated, padded and foreign files are refused with a BlobError.

One small snapshot (several types; int, str, text with a trained dictionary, ref, list,
nullable float, nested record) is damaged in every region: a bit flipped in every header
byte and at the first, middle and last byte and the padding of every section, every
truncation, appended bytes. Loading must raise :class:`nearstate.FormatError` or
:class:`nearstate.ChecksumError` and nothing else; a ChecksumError names the section that
holds the damaged byte.
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

import nearstate
from nearstate import Field, FieldType, LocalDataset, Schema, TypeDef
from nearstate.blob import parse_blob

PREAMBLE = 32  # magic, version, flags, header length, header checksum
ALIGN = 64
FULL_SCAN_LIMIT = 20_000  # blobs up to this size have every byte flipped


def _text(rng: random.Random, n_words: int, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n_words)).capitalize() + "."


def schema() -> Schema:
    return Schema(
        [
            TypeDef(
                "Person",
                (Field("id", FieldType("int")), Field("name", FieldType("str"))),
                key=("id",),
            ),
            TypeDef(
                "Info",
                (Field("studio", FieldType("str")), Field("budget", FieldType("int", True))),
            ),
            TypeDef(
                "Movie",
                (
                    Field("id", FieldType("int")),
                    Field("title", FieldType("str")),
                    Field("synopsis", FieldType("text")),
                    Field("director", FieldType("ref", target="Person")),
                    Field("genres", FieldType("list", item=FieldType("str"))),
                    Field("rating", FieldType("float", True)),
                    Field("info", FieldType("record", True, target="Info")),
                ),
                key=("id",),
            ),
        ]
    )


def build_state() -> nearstate.WriteState:
    rng = random.Random(1234)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qua", "ber", "don", "gri"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    ws = nearstate.WriteState(schema())
    for p in range(10):
        ws.add("Person", {"id": p, "name": f"person {p}"})
    genres = ["drama", "comedy", "noir", "western"]
    for m in range(150):
        ws.add(
            "Movie",
            {
                "id": 1000 + m,
                "title": _text(rng, 3, vocab),
                "synopsis": _text(rng, rng.randint(60, 140), vocab),
                "director": m % 10,
                "genres": rng.sample(genres, rng.randint(0, 3)),
                "rating": None if m % 7 == 0 else m / 10,
                "info": None
                if m % 5 == 0
                else {"studio": f"studio {m % 4}", "budget": m % 3 or None},
            },
        )
    return ws


@dataclass(frozen=True)
class Snapshot:
    data: bytes
    data_start: int
    sections: list[dict]  # name, offset (from data_start), length


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    path = tmp_path_factory.mktemp("corruption") / "good.blob"
    build_state().write_snapshot(path)
    data = path.read_bytes()
    blob = parse_blob(data)
    # the premise: every kind of section is present, the text field has a trained dictionary
    assert "Movie/synopsis.zdict" in blob.arrays
    assert "Movie/rating.nulls" in blob.arrays
    assert "Movie/#pk" in blob.arrays
    assert len(nearstate.from_bytes(data)["Info"]) > 1
    hlen = struct.unpack_from("<Q", data, 16)[0]
    data_start = PREAMBLE + hlen + (-(PREAMBLE + hlen) % ALIGN)
    sections = blob.header["sections"]
    assert data_start + blob.header["data_length"] == len(data)
    return Snapshot(data, data_start, sections)


def section_of(snap: Snapshot, offset: int) -> str:
    """The checksummed region holding a byte: "header" (preamble and header) or a section."""
    if offset < snap.data_start:
        return "header"
    rel = offset - snap.data_start
    for s in snap.sections:
        end = s["offset"] + s["length"] + (-s["length"] % ALIGN)
        if s["offset"] <= rel < end:
            return s["name"]
    raise AssertionError(f"offset {offset} is in no section")


def flip_offsets(snap: Snapshot) -> list[int]:
    n = len(snap.data)
    if n <= FULL_SCAN_LIMIT:
        return list(range(n))
    offsets = set(range(snap.data_start))  # preamble, header and its padding: every byte
    for s in snap.sections:
        start = snap.data_start + s["offset"]
        length, pad = s["length"], -s["length"] % ALIGN
        if length:
            offsets |= {start, start + length // 2, start + length - 1}
        if pad:
            offsets |= {start + length, start + length + pad - 1}
    offsets |= set(range(snap.data_start, n, 41))  # and a stride through the data
    return sorted(offsets)


def write(path: Path, data: bytes) -> Path:
    # a fresh inode each time: a mapping of an earlier file must never see new bytes
    path.unlink(missing_ok=True)
    path.write_bytes(data)
    return path


def load_error(path: Path, mmap: bool) -> nearstate.BlobError:
    try:
        state = nearstate.load(path, mmap=mmap)
    except nearstate.BlobError as e:
        assert isinstance(e, (nearstate.FormatError, nearstate.ChecksumError)), repr(e)
        return e
    raise AssertionError(f"damaged blob loaded: {state!r}")


def test_the_good_blob_loads(snap: Snapshot, tmp_path: Path) -> None:
    path = write(tmp_path / "b.blob", snap.data)
    for mmap in (True, False):
        state = nearstate.load(path, mmap=mmap)
        m = state["Movie"].get(1001)
        assert m.director.name == "person 1"
        assert m.synopsis.endswith(".")
        assert len(state["Movie"]) == 150


def test_the_region_map_covers_every_byte(snap: Snapshot) -> None:
    regions = {section_of(snap, o) for o in range(len(snap.data))}
    assert regions == {"header"} | {s["name"] for s in snap.sections}


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_every_flipped_bit_is_refused(snap: Snapshot, tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "flipped.blob"
    offsets = flip_offsets(snap)
    assert len(offsets) > 100
    checksum_sections = set()
    for off in offsets:
        data = bytearray(snap.data)
        data[off] ^= 1 << (off % 8)
        e = load_error(write(path, bytes(data)), mmap)
        if isinstance(e, nearstate.ChecksumError):
            want = section_of(snap, off)
            assert e.section == want, (off, e.section, want, str(e))
            assert repr(want) in str(e) or want in str(e)
            checksum_sections.add(e.section)
        else:
            # only the preamble's fixed fields fail as a format error: a flip anywhere
            # else is caught by a checksum
            assert off < PREAMBLE, (off, repr(e))
    assert checksum_sections == {"header"} | {s["name"] for s in snap.sections}


def test_every_bit_of_the_preamble(snap: Snapshot, tmp_path: Path) -> None:
    path = tmp_path / "pre.blob"
    for off in range(PREAMBLE):
        for bit in range(8):
            data = bytearray(snap.data)
            data[off] ^= 1 << bit
            e = load_error(write(path, bytes(data)), mmap=False)
            if off < 8:
                assert isinstance(e, nearstate.FormatError)
                assert "not a nearstate blob" in str(e)
            elif off < 16:  # version and flags
                assert isinstance(e, nearstate.FormatError), (off, bit, repr(e))
            elif isinstance(e, nearstate.ChecksumError):  # header length or checksum
                assert e.section == "header"


def truncation_lengths(snap: Snapshot) -> list[int]:
    n = len(snap.data)
    if n <= FULL_SCAN_LIMIT:
        return list(range(n))
    lengths = set(range(snap.data_start + 65))
    for s in snap.sections:
        start = snap.data_start + s["offset"]
        for edge in (start, start + s["length"], start + s["length"] + (-s["length"] % ALIGN)):
            lengths |= {edge - 1, edge, edge + 1}
    lengths |= set(range(0, n, 211))
    lengths |= set(range(n - 130, n))
    return sorted(x for x in lengths if 0 <= x < n)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_every_truncation_is_refused(snap: Snapshot, tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "short.blob"
    lengths = truncation_lengths(snap)
    assert 0 in lengths and len(snap.data) - 1 in lengths
    for n in lengths:
        load_error(write(path, snap.data[:n]), mmap)


@pytest.mark.parametrize("extra", [b"\0", b"\0" * 64, b"garbage", b"\xff" * 1000])
@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_appended_bytes_are_refused(
    snap: Snapshot, tmp_path: Path, extra: bytes, mmap: bool
) -> None:
    e = load_error(write(tmp_path / "long.blob", snap.data + extra), mmap)
    assert isinstance(e, nearstate.FormatError)


def test_a_blob_twice_is_refused(snap: Snapshot, tmp_path: Path) -> None:
    e = load_error(write(tmp_path / "twice.blob", snap.data * 2), mmap=True)
    assert isinstance(e, nearstate.FormatError)


def test_from_bytes_refuses_damage_too(snap: Snapshot) -> None:
    last = snap.sections[-1]
    data = bytearray(snap.data)
    data[snap.data_start + last["offset"]] ^= 0x10
    with pytest.raises(nearstate.ChecksumError) as info:
        nearstate.from_bytes(bytes(data))
    assert info.value.section == last["name"]
    with pytest.raises(nearstate.FormatError):
        nearstate.from_bytes(snap.data[:-1])


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize(
    "content",
    [
        "id,title\n1,Heat\n2,Ran\n" * 10,
        json.dumps({"version": 1, "snapshot": "snapshots/1.blob"}) + "\n" * 40,
        "NSBLOB but not really, just some text that is long enough to read a preamble\n",
    ],
    ids=["csv", "json", "magic-like"],
)
def test_a_text_file_is_not_a_blob(tmp_path: Path, content: str, mmap: bool) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(content)
    with pytest.raises(nearstate.FormatError, match="not a nearstate blob"):
        nearstate.load(path, mmap=mmap)


@pytest.mark.parametrize(
    ("content", "mmap"),
    [
        pytest.param(b"hello\n", True, id="short-mmap"),
        pytest.param(b"hello\n", False, id="short-read"),
        pytest.param(b"", True, id="empty-mmap"),
        pytest.param(b"", False, id="empty-read"),
        pytest.param(b"x", False, id="one-byte"),
    ],
)
def test_a_short_file_is_not_a_blob(tmp_path: Path, content: bytes, mmap: bool) -> None:
    # (a regression: files shorter than the preamble were called truncated blobs)
    path = tmp_path / "short.txt"
    path.write_bytes(content)
    with pytest.raises(nearstate.FormatError, match="not a nearstate blob"):
        nearstate.load(path, mmap=mmap)


@pytest.mark.parametrize("n", [1, 8, 20, 31])
def test_a_short_prefix_of_a_blob_is_truncated(snap: Snapshot, tmp_path: Path, n: int) -> None:
    path = write(tmp_path / "prefix.blob", snap.data[:n])
    for mmap in (True, False):
        with pytest.raises(nearstate.FormatError, match="truncated"):
            nearstate.load(path, mmap=mmap)


def test_missing_file_and_directory_are_format_errors(tmp_path: Path) -> None:
    with pytest.raises(nearstate.FormatError):
        nearstate.load(tmp_path / "nope.blob")
    with pytest.raises(nearstate.FormatError):
        nearstate.load(tmp_path, mmap=False)
    with pytest.raises(nearstate.FormatError):
        nearstate.load(tmp_path, mmap=True)


def _publish_two(path: Path) -> LocalDataset:
    ds = LocalDataset(path)
    assert ds.publish(build_state()) == 1
    ws = build_state()
    ws.add("Person", {"id": 99, "name": "a change, so there is a version 2"})
    assert ds.publish(ws) == 2
    return ds


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_dataset_with_corrupted_latest_snapshot(tmp_path: Path, mmap: bool) -> None:
    ds = _publish_two(tmp_path / "ds")
    latest = ds.snapshot_path(2)
    data = bytearray(latest.read_bytes())
    blob = parse_blob(bytes(data))
    hlen = struct.unpack_from("<Q", data, 16)[0]
    data_start = PREAMBLE + hlen + (-(PREAMBLE + hlen) % ALIGN)
    target = next(s for s in blob.header["sections"] if s["name"] == "Movie/synopsis.z")
    data[data_start + target["offset"] + target["length"] // 2] ^= 0x04
    write(latest, bytes(data))
    with pytest.raises(nearstate.ChecksumError) as info:
        ds.load(mmap=mmap)
    assert info.value.section == "Movie/synopsis.z"
    assert "Movie/synopsis.z" in str(info.value)
    # the previous version is untouched and still loads
    assert len(ds.load(1, mmap=mmap)["Movie"]) == 150


def test_dataset_with_corrupted_header(tmp_path: Path) -> None:
    ds = _publish_two(tmp_path / "ds")
    latest = ds.snapshot_path(2)
    data = bytearray(latest.read_bytes())
    data[PREAMBLE + 5] ^= 0x01
    write(latest, bytes(data))
    with pytest.raises(nearstate.ChecksumError) as info:
        ds.load()
    assert info.value.section == "header"


def test_dataset_with_truncated_latest_snapshot(tmp_path: Path) -> None:
    ds = _publish_two(tmp_path / "ds")
    latest = ds.snapshot_path(2)
    write(latest, latest.read_bytes()[:-100])
    with pytest.raises(nearstate.FormatError):
        ds.load()


def test_verify_false_skips_section_checksums_but_not_structure(snap: Snapshot) -> None:
    # verify=False trusts the sections (fast path) but still checks the layout
    data = bytearray(snap.data)
    z = next(s for s in snap.sections if s["name"] == "Person/name.pool")
    data[snap.data_start + z["offset"]] ^= 0x01
    state = nearstate.from_bytes(bytes(data), verify=False)
    assert len(state["Person"]) == 10
    with pytest.raises(nearstate.ChecksumError):
        nearstate.from_bytes(bytes(data))
    with pytest.raises(nearstate.FormatError):
        nearstate.from_bytes(snap.data[:-64], verify=False)
