"""Media assets: uploads checked by Pillow and stored atomically in sized variants,
placeholder posters, and the /media route (on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from nearstate.content import media
from nearstate.content.db import StoreError
from nearstate.content.media import (
    MAX_UPLOAD_BYTES,
    SIZES,
    AssetNotFound,
    MediaConfig,
    asset_url,
    ensure_placeholders,
    open_asset,
    placeholder_id,
    placeholder_svg,
    store_upload,
    update_asset,
)
from nearstate.errors import InputError, NearstateError
from nearstate.web.media import media_routes

SVG = "{http://www.w3.org/2000/svg}"


def image_bytes(w: int, h: int, fmt: str = "PNG", mode: str = "RGB", **save) -> bytes:
    """A real ``w`` x ``h`` image with some structure (a gradient and a block)."""
    im = Image.new(mode, (w, h), 0 if mode in ("1", "L", "P") else (10, 120, 200))
    if mode == "RGB":
        for x in range(0, w, max(1, w // 16)):
            im.paste((x * 255 // w, 80, 160), (x, 0, min(w, x + max(1, w // 16)), h))
        im.paste((250, 250, 20), (w // 4, h // 4, w // 2, h // 2))
    out = io.BytesIO()
    im.save(out, fmt, **save)
    return out.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> MediaConfig:
    return MediaConfig(root=tmp_path / "media")


def rows(store) -> list[dict]:
    return store.read("SELECT * FROM assets ORDER BY id")


def on_disk(config: MediaConfig) -> list[str]:
    root = Path(config.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def add_title(store, title_id: int, name: str, year: int | None, poster: str | None) -> None:
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO titles (id, name, slug, year, poster_asset, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            (title_id, name, f"t-{title_id}", year, poster),
        )


# --- uploads --------------------------------------------------------------------------------


def test_png_upload_writes_original_and_variants_and_the_row(write_store, config):
    data = image_bytes(2000, 1000, "PNG")
    row = store_upload(
        write_store,
        config,
        data,
        filename="dir/Poster.PNG",
        alt="A poster",
        focal=(0.25, 0.75),
        user="ed",
    )
    digest = hashlib.sha256(data).hexdigest()
    assert row["id"] == "a-" + digest[:16]
    assert row["kind"] == "image" and row["content_type"] == "image/png"
    assert (row["width"], row["height"], row["bytes"], row["sha256"]) == (
        2000,
        1000,
        len(data),
        digest,
    )
    assert (row["alt"], row["focal_x"], row["focal_y"]) == ("A poster", 0.25, 0.75)
    assert row["filename"] == "Poster.PNG" and row["created_by"] == "ed"
    assert rows(write_store) == [row]
    folder = Path(config.root) / row["id"]
    assert (folder / "original.png").read_bytes() == data
    for size, width in SIZES.items():
        with Image.open(folder / f"{size}.png") as im:
            assert im.format == "PNG"
            assert im.size == (width, width // 2)
    assert on_disk(config) == sorted(
        [row["id"], *(f"{row['id']}/{n}.png" for n in [*SIZES, "original"])]
    )
    assert asset_url(config, row, "small") == f"/media/{row['id']}/small.png"


def test_jpeg_smaller_than_the_sizes_is_never_upscaled(write_store, config):
    data = image_bytes(500, 300, "JPEG", quality=90)
    row = store_upload(write_store, config, data, filename="small.jpg")
    assert row["content_type"] == "image/jpeg" and (row["width"], row["height"]) == (500, 300)
    folder = Path(config.root) / row["id"]
    sizes = {}
    for size in SIZES:
        with Image.open(folder / f"{size}.jpg") as im:
            assert im.format == "JPEG"
            sizes[size] = im.size
    assert sizes == {"small": (320, 192), "medium": (500, 300), "large": (500, 300)}
    assert asset_url(config, row, "large").endswith(".jpg")


def test_webp_gif_and_palette_png_keep_their_format(write_store, config):
    for fmt, ext, mode in (("WEBP", "webp", "RGB"), ("GIF", "gif", "P"), ("PNG", "png", "P")):
        row = store_upload(write_store, config, image_bytes(900, 600, fmt, mode), filename="x")
        with Image.open(Path(config.root) / row["id"] / f"small.{ext}") as im:
            assert (im.format, im.size) == (fmt, (320, 213))
        with Image.open(Path(config.root) / row["id"] / f"medium.{ext}") as im:
            assert im.size == (800, 533)


def test_exif_orientation_is_applied_to_variants_and_dimensions(write_store, config):
    im = Image.new("RGB", (1000, 400), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif)
    row = store_upload(write_store, config, out.getvalue(), filename="phone.jpg")
    assert (row["width"], row["height"]) == (400, 1000)
    with Image.open(Path(config.root) / row["id"] / "small.jpg") as v:
        assert v.size == (320, 800)
        assert not v.getexif()  # no metadata (and no GPS) leaks into served variants


def test_same_bytes_again_return_the_existing_row(write_store, config):
    data = image_bytes(640, 480)
    first = store_upload(write_store, config, data, filename="a.png", alt="first")
    again = store_upload(write_store, config, data, filename="b.png", alt="second", user="x")
    assert again == first
    assert len(rows(write_store)) == 1
    assert len([p for p in on_disk(config) if "/" not in p]) == 1


def test_files_that_went_missing_are_rewritten_on_reupload(write_store, config):
    data = image_bytes(640, 480)
    row = store_upload(write_store, config, data, filename="a.png")
    for p in (Path(config.root) / row["id"]).iterdir():
        p.unlink()
    (Path(config.root) / row["id"]).rmdir()
    assert store_upload(write_store, config, data, filename="a.png") == row
    assert (Path(config.root) / row["id"] / "small.png").is_file()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"just some text, not an image\n", "is not an image Pillow can read"),
        (lambda: b"", "is empty"),
        (lambda: image_bytes(400, 300, "PNG")[:300], "is not an image Pillow can read"),
        (lambda: image_bytes(400, 300, "JPEG")[:-400], "is not an image Pillow can read"),
        (lambda: image_bytes(40, 30, "BMP"), "only JPEG, PNG, WebP and GIF"),
        (lambda: image_bytes(40, 30, "TIFF"), "only JPEG, PNG, WebP and GIF"),
        (lambda: b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image Pillow can read"),
        (lambda: image_bytes(8000, 5001, "PNG", mode="1"), "8000x5001 .* 40 megapixels"),
        (lambda: image_bytes(14000, 13000, "PNG", mode="1"), "too many pixels"),
        (lambda: b"\0" * (MAX_UPLOAD_BYTES + 1), f"at most {MAX_UPLOAD_BYTES:,} are accepted"),
    ],
    ids=[
        "text", "empty", "truncated-png", "truncated-jpeg", "bmp", "tiff", "svg",
        "41-megapixels", "182-megapixels-a-pillow-bomb", "21-mb",
    ],
)  # fmt: skip
def test_bad_uploads_are_refused_and_write_nothing(write_store, config, make, message):
    with pytest.raises(InputError, match=message) as e:
        store_upload(write_store, config, make(), filename="upload.png")
    assert isinstance(e.value, NearstateError)
    assert rows(write_store) == [] and on_disk(config) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"focal": (1.5, 0.5)}, "outside"),
        ({"focal": (0.5, -0.01)}, "outside"),
        ({"focal": (float("nan"), 0.5)}, "outside"),
        ({"focal": (0.5,)}, "two numbers"),
        ({"focal": "middle"}, "two numbers"),
        ({"alt": "x" * 301}, "301 characters; at most 300"),
    ],
)
def test_bad_focal_or_alt_is_refused(write_store, config, kwargs, message):
    with pytest.raises(InputError, match=message):
        store_upload(write_store, config, image_bytes(50, 50), filename="a.png", **kwargs)
    assert rows(write_store) == [] and on_disk(config) == []


def test_alt_of_exactly_300_and_focal_on_the_edges_are_accepted(write_store, config):
    row = store_upload(
        write_store, config, image_bytes(50, 50), filename="a.png", alt="y" * 300, focal=(0, 1)
    )
    assert (len(row["alt"]), row["focal_x"], row["focal_y"]) == (300, 0.0, 1.0)


@pytest.mark.parametrize("fail_at", [1, 3, 4])
def test_a_failing_os_replace_mid_write_leaves_no_row_and_no_directory(
    write_store, config, monkeypatch, fail_at
):
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(media.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        store_upload(write_store, config, image_bytes(1000, 700), filename="a.png")
    assert rows(write_store) == []
    assert on_disk(config) == []  # neither the asset's directory nor a temporary one
    monkeypatch.setattr(media.os, "replace", real)
    row = store_upload(write_store, config, image_bytes(1000, 700), filename="a.png")
    assert len(on_disk(config)) == 5 and rows(write_store) == [row]


def test_a_failing_final_rename_leaves_nothing(write_store, config, monkeypatch):
    def rename(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(media.os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        store_upload(write_store, config, image_bytes(300, 300), filename="a.png")
    assert rows(write_store) == [] and on_disk(config) == []


def test_a_failing_insert_removes_the_directory_it_created(write_store, config, monkeypatch):
    real = write_store.transaction

    def broken(*args, **kwargs):
        raise StoreError("the database went away", transient=True)

    monkeypatch.setattr(write_store, "transaction", broken)
    with pytest.raises(StoreError, match="went away"):
        store_upload(write_store, config, image_bytes(300, 300), filename="a.png")
    monkeypatch.setattr(write_store, "transaction", real)
    assert rows(write_store) == [] and on_disk(config) == []


def test_update_asset_changes_alt_and_focal_with_the_same_checks(write_store, config):
    row = store_upload(write_store, config, image_bytes(100, 100), filename="a.png", alt="old")
    out = update_asset(write_store, row["id"], alt="new alt")
    assert (out["alt"], out["focal_x"]) == ("new alt", 0.5)
    out = update_asset(write_store, row["id"], focal=(0.1, 0.9))
    assert (out["alt"], out["focal_x"], out["focal_y"]) == ("new alt", 0.1, 0.9)
    assert rows(write_store) == [out]
    with pytest.raises(InputError, match="outside"):
        update_asset(write_store, row["id"], focal=(2, 0))
    with pytest.raises(InputError, match="at most 300"):
        update_asset(write_store, row["id"], alt="z" * 400)
    assert rows(write_store) == [out]
    with pytest.raises(AssetNotFound, match="a-0000000000000000"):
        update_asset(write_store, "a-0000000000000000", alt="x")
    with pytest.raises(AssetNotFound, match="nope"):
        update_asset(write_store, "../nope", alt="x")


# --- URLs -----------------------------------------------------------------------------------


def test_asset_url_uses_the_configured_base_and_the_stored_type(tmp_path):
    cdn = MediaConfig(root=tmp_path, base_url="https://cdn.example.com/media/")
    image = {"id": "a-0123456789abcdef", "kind": "image", "content_type": "image/webp"}
    ph = {"id": "ph-593", "kind": "placeholder", "content_type": "image/svg+xml"}
    assert asset_url(cdn, image, "medium") == (
        "https://cdn.example.com/media/a-0123456789abcdef/medium.webp"
    )
    assert asset_url(MediaConfig(tmp_path), ph, "large") == "/media/ph-593/large.svg"
    with pytest.raises(InputError, match="'huge'"):
        asset_url(cdn, image, "huge")


# --- placeholders ---------------------------------------------------------------------------


def test_placeholder_svg_escapes_text_and_is_valid_xml():
    svg = placeholder_svg('<script>alert("x")</script> & Friends', 1999, 7)
    text = svg.decode()
    assert "<script>" not in text and "&lt;script&gt;" in text and "&amp; Friends" in text
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == (
        "600",
        "900",
        "0 0 600 900",
    )
    assert root.get("aria-label") == '<script>alert("x")</script> & Friends (1999)'
    assert list(root.iter(f"{SVG}script")) == []
    spans = "".join(t.text or "" for t in root.iter(f"{SVG}tspan"))
    assert spans.replace(" ", "") == '<script>alert("x")</script>&Friends'
    assert "1999" in [t.text for t in root.iter(f"{SVG}text")]


def test_placeholder_svg_is_deterministic_and_varies_with_the_seed():
    a = placeholder_svg("Cleopatra", 1963, 1)
    assert a == placeholder_svg("Cleopatra", 1963, 1)
    colours = {
        tuple(
            s.get("stop-color")
            for s in ET.fromstring(placeholder_svg("X", None, n)).iter(f"{SVG}stop")
        )[:2]
        for n in range(40)
    }
    assert len(colours) >= 8


def test_placeholder_svg_survives_hostile_and_long_titles():
    svg = placeholder_svg("Bad\x00\x07 chars\x1b and \ufffe", None, 3)
    ET.fromstring(svg)  # characters XML forbids are dropped
    long = placeholder_svg(" ".join(["Supercalifragilistic"] * 20), 2020, 4)
    spans = [t.text for t in ET.fromstring(long).iter(f"{SVG}tspan")]
    assert 1 <= len(spans) <= 4 and spans[-1].endswith("…")
    assert all(len(s) <= 28 for s in spans)
    assert [t.text for t in ET.fromstring(placeholder_svg("", None, 1)).iter(f"{SVG}tspan")] == [
        "Untitled"
    ]


def test_ensure_placeholders_is_idempotent(write_store):
    titles = [(1, "One", 2001), (2, "Two & <Two>", None)]
    with write_store.transaction() as tx:
        assert ensure_placeholders(tx, titles) == 2
    with write_store.transaction() as tx:
        assert ensure_placeholders(tx, [*titles, (3, "Three", 2003)]) == 1
        assert ensure_placeholders(tx, []) == 0
    got = rows(write_store)
    assert [r["id"] for r in got] == ["ph-1", "ph-2", "ph-3"]
    assert got[1]["alt"] == "Poster placeholder for Two & <Two>"
    assert {(r["kind"], r["width"], r["height"], r["content_type"]) for r in got} == {
        ("placeholder", 600, 900, "image/svg+xml")
    }
    assert placeholder_id(42) == "ph-42"


def test_open_asset_draws_placeholders_from_the_title_or_the_alt(write_store, config):
    with write_store.transaction() as tx:
        ensure_placeholders(tx, [(5, "Old Name", 1950), (6, "Orphan <b>", None)])
    add_title(write_store, 5, "New Name", 1951, "ph-5")
    body, ctype = open_asset(write_store, config, "ph-5", "small")
    assert ctype == "image/svg+xml" and body == placeholder_svg("New Name", 1951, 5)
    body, _ = open_asset(write_store, config, "ph-6", "large")
    assert body == placeholder_svg("Orphan <b>", None, 6)
    for bad_id, size in (("ph-7", "small"), ("ph-5", "xl"), ("../../etc", "small")):
        with pytest.raises(AssetNotFound):
            open_asset(write_store, config, bad_id, size)


# --- the route ------------------------------------------------------------------------------


@pytest.fixture
def client(write_store, config):
    app = Starlette(routes=media_routes(write_store, config))
    with TestClient(app) as c:
        yield c


def test_route_serves_image_variants_with_cache_headers(write_store, config, client):
    row = store_upload(write_store, config, image_bytes(1000, 500, "JPEG"), filename="a.jpg")
    r = client.get(f"/media/{row['id']}/medium.jpg")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == (Path(config.root) / row["id"] / "medium.jpg").read_bytes()
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (800, 400)
    etag = r.headers["etag"]
    again = client.get(f"/media/{row['id']}/medium.jpg", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/media/{row['id']}/small.jpg").headers["etag"] != etag
    head = client.head(f"/media/{row['id']}/large.jpg")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(
        (Path(config.root) / row["id"] / "large.jpg").stat().st_size
    )


def test_route_serves_placeholders_as_svg(write_store, client):
    with write_store.transaction() as tx:
        ensure_placeholders(tx, [(593, "A Gang Story", 2011)])
    add_title(write_store, 593, "A Gang Story", 2011, "ph-593")
    r = client.get("/media/ph-593/small.svg")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["etag"] and "max-age" in r.headers["cache-control"]
    assert r.content == placeholder_svg("A Gang Story", 2011, 593)
    assert (
        client.get(
            "/media/ph-593/large.svg", headers={"If-None-Match": r.headers["etag"]}
        ).status_code
        == 304
    )


def test_route_404s_unknown_ids_sizes_and_extensions(write_store, config, client):
    row = store_upload(write_store, config, image_bytes(100, 100, "PNG"), filename="a.png")
    for path in (
        "/media/a-0000000000000000/small.png",  # no such asset
        f"/media/{row['id']}/huge.png",  # no such size
        f"/media/{row['id']}/original.png",  # the original is never served
        f"/media/{row['id']}/small.jpg",  # not its extension
        f"/media/{row['id']}/small",
        "/media/ph-99/small.svg",
        "/media/nonsense/small.png",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/plain")
        assert "Not found" in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/media/..%2F..%2Fetc/passwd/small.jpg",
        "/media/..%2F..%2F..%2Fetc%2Fpasswd/small.jpg",
        "/media/a-0123456789abcdef/..%2F..%2F..%2Fetc%2Fpasswd",
        "/media/%2E%2E/small.png",
        "/media/a-0123456789abcdef%00/small.png",
        "/media/A-0123456789ABCDEF/small.png",
    ],
)
def test_route_refuses_path_traversal(write_store, config, client, path):
    secret = Path(config.root).parent / "secret.txt"
    secret.write_text("do not serve")
    r = client.get(path)
    assert r.status_code == 404
    assert "do not serve" not in r.text and "root:" not in r.text
