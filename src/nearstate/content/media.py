"""Media assets: uploaded images (stored on disk in sized variants) and generated posters.

An asset is a row of the ``assets`` table plus, for ``kind = 'image'``, a directory
``<root>/<asset_id>/`` holding ``original.<ext>`` (the uploaded bytes, never served) and one
resized variant per entry of :data:`SIZES` (``small.<ext>``, ...). ``kind = 'placeholder'``
assets have no files: their SVG poster is drawn on request by :func:`placeholder_svg`.

Contracts:

- Image ids are content addresses: ``"a-" + sha256(bytes)[:16]``. Uploading the same bytes
  twice returns the first row; files are written into a temporary directory and renamed
  into place, so a failure never leaves a half-written asset directory, and the row is
  inserted only after the directory is complete (a failed insert removes a directory this
  upload created).
- Only images Pillow reads completely (JPEG, PNG, WebP, GIF) are accepted; anything else,
  a truncated file, more than :data:`MAX_UPLOAD_BYTES` or :data:`MAX_PIXELS`, an alt text
  longer than :data:`MAX_ALT` or a focal point outside ``[0, 1]`` is refused with an
  :class:`~nearstate.errors.InputError` saying why.
- Variants keep the aspect ratio and are never wider than the original (no upscaling); the
  EXIF orientation is applied to them, and ``width``/``height`` in the row are the
  original's as displayed (after that orientation). Variants carry no EXIF metadata.
- URLs (:func:`asset_url`) are built from the row alone (the extension comes from
  ``content_type``), so rendering a page touches no disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ..errors import InputError
from .db import Tx, WriteStore

SIZES: dict[str, int] = {"small": 320, "medium": 800, "large": 1600}
"""Variant name → target width in pixels."""

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_ALT = 300

IMAGE_TYPES: dict[str, tuple[str, str]] = {
    # Pillow format → (content type, extension)
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}
_EXT = {ct: ext for ct, ext in IMAGE_TYPES.values()}
SVG_TYPE = "image/svg+xml"
PLACEHOLDER_SIZE = (600, 900)
ASSET_ID = re.compile(r"^(a-[0-9a-f]{16}|ph-\d+)$")
"""What every asset id looks like; anything else is never looked up (nor used as a path)."""

_COLUMNS = (
    "id, kind, filename, content_type, width, height, alt, focal_x, focal_y, bytes, sha256,"
    " created_at, created_by"
)


class AssetNotFound(InputError):
    """No asset has that id (or it has no such size); the message names it."""


@dataclass(frozen=True)
class MediaConfig:
    """Where uploads live on disk (``root``) and the URL their variants are served under
    (``base_url``: ``/media`` when this app serves them, or a CDN's absolute URL)."""

    root: Path
    base_url: str = "/media"


# --- URLs -----------------------------------------------------------------------------------


def asset_ext(asset: Mapping[str, Any]) -> str:
    """The extension of ``asset``'s served variants: ``svg`` for placeholders, else the one
    of its content type (``jpg``, ``png``, ``webp``, ``gif``)."""
    if asset["kind"] == "placeholder":
        return "svg"
    try:
        return _EXT[asset["content_type"]]
    except KeyError:
        raise InputError(
            f"asset {asset['id']!r} has content type {asset['content_type']!r}, not an image"
        ) from None


def asset_url(config: MediaConfig, asset: Mapping[str, Any], size: str) -> str:
    """The URL of ``asset``'s ``size`` variant: ``{base_url}/{id}/{size}.{ext}``.

    Raises :class:`InputError` for a size not in :data:`SIZES`. Needs only the row's
    ``id``, ``kind`` and ``content_type``."""
    if size not in SIZES:
        raise InputError(f"unknown image size {size!r}: use one of {', '.join(SIZES)}")
    return f"{config.base_url.rstrip('/')}/{asset['id']}/{size}.{asset_ext(asset)}"


# --- checks ---------------------------------------------------------------------------------


def _check_alt(alt: str) -> str:
    if not isinstance(alt, str):
        raise InputError(f"alt text must be a string, not {type(alt).__name__}", field="alt")
    if len(alt) > MAX_ALT:
        raise InputError(
            f"alt text is {len(alt)} characters; at most {MAX_ALT} are allowed", field="alt"
        )
    return alt


def _check_focal(focal: Any) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in focal)
    except (TypeError, ValueError):
        raise InputError(
            f"focal point must be two numbers (x, y), got {focal!r}", field="focal"
        ) from None
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):  # also refuses NaN
        raise InputError(f"focal point {focal!r} is outside [0, 1] x [0, 1]", field="focal")
    return x, y


def _check_id(asset_id: str) -> str:
    if not isinstance(asset_id, str) or not ASSET_ID.match(asset_id):
        raise AssetNotFound(f"no asset {asset_id!r}: not an asset id")
    return asset_id


def _clean_filename(filename: str, fallback: str) -> str:
    """The last path component of ``filename``, without control characters, at most 200
    characters; ``fallback`` when nothing is left."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[-200:] or fallback


# --- images ---------------------------------------------------------------------------------


def _decode(data: bytes, filename: str) -> tuple[Any, str]:
    """``data`` decoded by Pillow (fully loaded, orientation applied) and its format.

    Raises :class:`InputError` if Pillow cannot read all of it, it is not a JPEG, PNG,
    WebP or GIF, or it has more than :data:`MAX_PIXELS` pixels."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    what = repr(filename) if filename else "the upload"
    formats = list(IMAGE_TYPES)  # no other decoder ever sees untrusted bytes
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels; ours is the stricter limit, checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as probe:
                w, h = probe.size
                if w * h > MAX_PIXELS:
                    raise InputError(
                        f"{what} is {w}x{h} ({w * h / 1e6:.1f} megapixels); at most"
                        f" {MAX_PIXELS / 1e6:.0f} megapixels are accepted"
                    )
                fmt = probe.format or "?"
                probe.verify()
        im = Image.open(io.BytesIO(data), formats=formats)  # verify() spends the image
        im.load()
        oriented = ImageOps.exif_transpose(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            f"{what} is not an image Pillow can read (only JPEG, PNG, WebP and GIF are accepted)"
        ) from None
    except Image.DecompressionBombError:
        raise InputError(
            f"{what} has too many pixels; at most {MAX_PIXELS / 1e6:.0f} megapixels are accepted"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{what} is not an image Pillow can read: {e}") from None
    return oriented, fmt


def _variant(im: Any, fmt: str, width: int) -> bytes:
    """``im`` scaled to ``width`` (never up), aspect kept, encoded as ``fmt``."""
    from PIL import Image

    w, h = im.size
    if width < w:
        height = max(1, round(h * width / w))
        src = im
        if src.mode not in ("RGB", "RGBA", "L", "LA"):
            src = src.convert("RGBA" if "transparency" in src.info or "A" in src.mode else "RGB")
        im = src.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if fmt == "JPEG":
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        im.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    elif fmt == "WEBP":
        im.save(out, "WEBP", quality=82, method=4)
    elif fmt == "PNG":
        im.save(out, "PNG", optimize=True)
    else:  # GIF: the first frame
        im.save(out, "GIF")
    return out.getvalue()


def _write_dir(final: Path, files: Mapping[str, bytes]) -> bool:
    """Write ``files`` into a temporary directory beside ``final`` and rename it to
    ``final``. Returns False (writing nothing) if ``final`` already exists; on any error the
    temporary directory is removed and ``final`` does not exist."""
    if final.exists():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        tmp.mkdir()
        for name, data in files.items():
            part = tmp / f".{name}.part"
            with open(part, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, tmp / name)
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():  # another upload of the same bytes won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable (best effort)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def _image_files(im: Any, fmt: str, data: bytes) -> dict[str, bytes]:
    ext = IMAGE_TYPES[fmt][1]
    files = {f"original.{ext}": data}
    for size, width in SIZES.items():
        files[f"{size}.{ext}"] = _variant(im, fmt, width)
    return files


def get_asset(store: WriteStore, asset_id: str) -> dict[str, Any]:
    """The ``assets`` row ``asset_id``; :class:`AssetNotFound` if there is none."""
    row = store.read_one(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (_check_id(asset_id),))
    if row is None:
        raise AssetNotFound(f"no asset {asset_id!r}")
    return row


def store_upload(
    store: WriteStore,
    config: MediaConfig,
    data: bytes,
    *,
    filename: str,
    alt: str = "",
    focal: tuple[float, float] = (0.5, 0.5),
    user: str = "",
) -> dict[str, Any]:
    """Store an uploaded image and return its ``assets`` row (as a dict).

    The bytes must be a complete JPEG, PNG, WebP or GIF of at most
    :data:`MAX_UPLOAD_BYTES` and :data:`MAX_PIXELS`; ``alt`` at most :data:`MAX_ALT`
    characters; ``focal`` within ``[0, 1]`` on both axes. Otherwise :class:`InputError`,
    and nothing is written. The same bytes uploaded again return the existing row unchanged
    (its files are rewritten if they went missing). ``filename`` is kept for display only
    (its last path component); the format is what Pillow finds, whatever the name says.
    """
    alt = _check_alt(alt)
    fx, fy = _check_focal(focal)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError(f"an upload must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(
            f"{filename!r} is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,} are accepted"
        )
    if not data:
        raise InputError(f"{filename!r} is empty, not an image Pillow can read")
    digest = hashlib.sha256(data).hexdigest()
    asset_id = "a-" + digest[:16]
    final = Path(config.root) / asset_id
    existing = store.read_one(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset_id,))
    if existing is not None and final.is_dir():
        return existing
    im, fmt = _decode(data, filename)
    content_type, ext = IMAGE_TYPES[fmt]
    created = _write_dir(final, _image_files(im, fmt, data))
    if existing is not None:
        return existing
    row = {
        "id": asset_id,
        "kind": "image",
        "filename": _clean_filename(filename, f"{asset_id}.{ext}"),
        "content_type": content_type,
        "width": im.width,
        "height": im.height,
        "alt": alt,
        "focal_x": fx,
        "focal_y": fy,
        "bytes": len(data),
        "sha256": digest,
        "created_at": time.time(),
        "created_by": user,
    }
    try:
        with store.transaction() as tx:
            tx.execute(
                f"INSERT INTO assets ({_COLUMNS}) VALUES ({', '.join('?' * len(row))})"
                " ON CONFLICT (id) DO NOTHING",
                tuple(row.values()),
            )
            stored = tx.one(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset_id,))
    except BaseException:
        if created:
            shutil.rmtree(final, ignore_errors=True)
        raise
    return stored or row


def update_asset(
    store: WriteStore,
    asset_id: str,
    *,
    alt: str | None = None,
    focal: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Change an asset's alt text and/or focal point (None: leave as is); return the row.

    Same checks as :func:`store_upload`; :class:`AssetNotFound` for an unknown id."""
    sets: list[str] = []
    params: list[Any] = []
    if alt is not None:
        sets.append("alt = ?")
        params.append(_check_alt(alt))
    if focal is not None:
        sets.extend(("focal_x = ?", "focal_y = ?"))
        params.extend(_check_focal(focal))
    _check_id(asset_id)
    with store.transaction() as tx:
        if sets:
            tx.execute(f"UPDATE assets SET {', '.join(sets)} WHERE id = ?", (*params, asset_id))
        row = tx.one(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset_id,))
    if row is None:
        raise AssetNotFound(f"no asset {asset_id!r}")
    return row


# --- placeholders ---------------------------------------------------------------------------


def placeholder_id(title_id: int) -> str:
    """The id of title ``title_id``'s generated poster: ``ph-<title_id>``."""
    return f"ph-{int(title_id)}"


def ensure_placeholders(tx: Tx, titles: Iterable[tuple[int, str, int | None]]) -> int:
    """Insert a placeholder asset for each ``(title_id, name, year)`` that has none yet;
    return how many were new. Existing rows (and their alt text) are left alone, so this is
    idempotent; concurrent callers never fail on a duplicate (``ON CONFLICT DO NOTHING``)."""
    wanted = {placeholder_id(tid): name for tid, name, _year in titles}
    if not wanted:
        return 0
    ids = list(wanted)
    have: set[str] = set()
    for lo in range(0, len(ids), 500):
        chunk = ids[lo : lo + 500]
        rows = tx.all(f"SELECT id FROM assets WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        have.update(r["id"] for r in rows)
    now = time.time()
    w, h = PLACEHOLDER_SIZE
    new = [
        (pid, "placeholder", f"{pid}.svg", SVG_TYPE, w, h, f"Poster placeholder for {name}", now)
        for pid, name in wanted.items()
        if pid not in have
    ]
    tx.executemany(
        "INSERT INTO assets (id, kind, filename, content_type, width, height, alt, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        new,
    )
    return len(new)


# Pairs of gradient stops (top, bottom): deep, saturated, good behind white text.
_PALETTES = (
    ("#1d2b64", "#8e4f7d"),
    ("#0f2027", "#2c5364"),
    ("#41295a", "#2f0743"),
    ("#cb356b", "#bd3f32"),
    ("#134e5e", "#71b280"),
    ("#232526", "#414345"),
    ("#603813", "#8c6a56"),
    ("#c31432", "#240b36"),
    ("#1f4037", "#3d8c6c"),
    ("#3a1c71", "#d76d77"),
    ("#000046", "#1a7fa8"),
    ("#4b134f", "#c94b4b"),
    ("#0b486b", "#f56217"),
    ("#355c7d", "#c06c84"),
    ("#2b5876", "#4e4376"),
    ("#16222a", "#3a6073"),
)
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _svg_text(s: str) -> str:
    """``s`` safe as SVG character data: no characters XML forbids, markup escaped."""
    return escape(_XML_BAD.sub("", s))


def _wrap_title(title: str) -> tuple[list[str], int]:
    """The title broken into at most 5 lines, and a font size that fits them in 520px."""
    title = " ".join(title.split()) or "Untitled"
    for width, size in ((12, 60), (16, 46), (22, 34), (28, 26)):
        lines = textwrap.wrap(title, width, break_long_words=True)
        if len(lines) <= 4:
            return lines, size
    lines = textwrap.wrap(title, 28, break_long_words=True)
    first = lines[:4]
    first[-1] = first[-1][:27].rstrip() + "…"
    return first, 26


def placeholder_svg(title: str, year: int | None, seed: int) -> bytes:
    """A 600x900 (2:3) poster for a title without one, as UTF-8 SVG bytes.

    Deterministic: the same arguments give the same bytes. ``seed`` (the title id) picks the
    gradient and the angle of its decorative bands; the title is wrapped onto up to four
    lines (ellipsised beyond) and sized to fit; the year, if given, sits under a rule. All
    text is XML-escaped and stripped of characters XML forbids, so any title is safe."""
    seed = int(seed)
    mix = (seed * 2654435761) & 0xFFFFFFFF  # Knuth's multiplicative hash: neighbours differ
    top, bottom = _PALETTES[mix % len(_PALETTES)]
    tilt = (mix >> 8) % 31 - 15  # -15..15 degrees
    w, h = PLACEHOLDER_SIZE
    lines, size = _wrap_title(title)
    gap = round(size * 1.15)
    block = gap * (len(lines) - 1)
    y0 = round(h * 0.42 - block / 2)
    text = "\n".join(
        f'    <tspan x="{w // 2}" y="{y0 + i * gap}">{_svg_text(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    label = title if year is None else f"{title} ({int(year)})"
    rule_y = y0 + block + round(size * 0.9)
    year_svg = ""
    if year is not None:
        year_svg = (
            f'  <line x1="{w // 2 - 40}" y1="{rule_y}" x2="{w // 2 + 40}" y2="{rule_y}"'
            ' stroke="#fff" stroke-opacity="0.6" stroke-width="2"/>\n'
            f'  <text x="{w // 2}" y="{rule_y + 56}" text-anchor="middle" font-size="34"'
            ' font-family="Georgia, serif" letter-spacing="6" fill="#fff" fill-opacity="0.85">'
            f"{int(year)}</text>\n"
        )
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" \
viewBox="0 0 {w} {h}" role="img" aria-label={quoteattr(_XML_BAD.sub("", label))}>
  <title>{_svg_text(label)}</title>
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="0.35" y2="1">
      <stop offset="0" stop-color="{top}"/>
      <stop offset="1" stop-color="{bottom}"/>
    </linearGradient>
    <linearGradient id="shade" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0.5" stop-color="#000" stop-opacity="0"/>
      <stop offset="1" stop-color="#000" stop-opacity="0.35"/>
    </linearGradient>
    <radialGradient id="glow" cx="0.5" cy="0.38" r="0.7">
      <stop offset="0" stop-color="#fff" stop-opacity="0.18"/>
      <stop offset="1" stop-color="#fff" stop-opacity="0"/>
    </radialGradient>
  </defs>
  <rect width="{w}" height="{h}" fill="url(#bg)"/>
  <g transform="rotate({tilt} {w // 2} {h // 2})" fill="#fff" fill-opacity="0.06">
    <rect x="-300" y="{h // 2 - 260}" width="{w + 600}" height="90"/>
    <rect x="-300" y="{h // 2 + 170}" width="{w + 600}" height="40"/>
  </g>
  <rect width="{w}" height="{h}" fill="url(#glow)"/>
  <rect width="{w}" height="{h}" fill="url(#shade)"/>
  <rect x="24" y="24" width="{w - 48}" height="{h - 48}" fill="none" stroke="#fff"
        stroke-opacity="0.35" stroke-width="2"/>
  <text text-anchor="middle" font-family="Georgia, 'Times New Roman', serif"
        font-weight="bold" font-size="{size}" fill="#fff">
{text}
  </text>
{year_svg}</svg>
"""
    return svg.encode()


def _placeholder_title(store: WriteStore, asset: Mapping[str, Any]) -> tuple[str, int | None, int]:
    """(title, year, seed) for a placeholder: from its title's row, else from its alt."""
    tid = int(asset["id"][3:])
    row = store.read_one("SELECT name, year FROM titles WHERE id = ?", (tid,))
    if row is not None:
        return row["name"], row["year"], tid
    alt = asset["alt"] or ""
    prefix = "Poster placeholder for "
    return (alt[len(prefix) :] if alt.startswith(prefix) else alt), None, tid


def open_asset(
    store: WriteStore, config: MediaConfig, asset_id: str, size: str
) -> tuple[bytes | Path, str]:
    """What to serve for ``asset_id``'s ``size`` variant, and its content type: the
    variant's file path for an image, the generated SVG bytes for a placeholder (every
    size is the same vector drawing). :class:`AssetNotFound` for an id that is not an asset
    id or not in the store, a size not in :data:`SIZES`, or an image whose file is gone."""
    if size not in SIZES:
        raise AssetNotFound(f"asset {asset_id!r} has no size {size!r}")
    asset = get_asset(store, asset_id)
    if asset["kind"] == "placeholder":
        title, year, seed = _placeholder_title(store, asset)
        return placeholder_svg(title, year, seed), SVG_TYPE
    path = Path(config.root) / asset["id"] / f"{size}.{asset_ext(asset)}"
    if not path.is_file():
        raise AssetNotFound(f"asset {asset_id!r} has no file for size {size!r}")
    return path, asset["content_type"]


__all__ = [
    "IMAGE_TYPES",
    "MAX_ALT",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "SIZES",
    "AssetNotFound",
    "MediaConfig",
    "asset_ext",
    "asset_url",
    "ensure_placeholders",
    "get_asset",
    "open_asset",
    "placeholder_id",
    "placeholder_svg",
    "store_upload",
    "update_asset",
]
