"""Where the platform keeps its things, read once at the edge (CLI, app factory).

One data directory holds the defaults: ``DIR/cms.db`` (the write store), ``DIR/dataset``
(the nearstate dataset), ``DIR/media`` (uploads) and ``DIR/secret`` (the key the
editor's CSRF tokens are derived from and the site's profile cookies are signed with,
made on first use). Each can be pointed elsewhere by option or environment:
``NEARSTATE_CMS`` (``sqlite:///...`` or ``postgresql://...``),
``NEARSTATE_DATASET`` (a directory or ``nats://host:4222/name``), ``NEARSTATE_MEDIA_URL``
(the CDN base URL of asset variants) and ``NEARSTATE_SECRET``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..content.media import MediaConfig


@dataclass(frozen=True)
class Settings:
    data: Path
    cms: str
    dataset: str
    media: MediaConfig
    secret: str

    @classmethod
    def load(
        cls,
        data: str | Path = "data",
        *,
        cms: str | None = None,
        dataset: str | None = None,
        media_url: str | None = None,
    ) -> Settings:
        """Settings from options, then the environment, then defaults under ``data``."""
        d = Path(os.environ.get("NEARSTATE_DATA") or data)
        cms = cms or os.environ.get("NEARSTATE_CMS") or f"sqlite:///{(d / 'cms.db').resolve()}"
        dataset = dataset or os.environ.get("NEARSTATE_DATASET") or str(d / "dataset")
        media_url = media_url or os.environ.get("NEARSTATE_MEDIA_URL") or "/media"
        return cls(d, cms, dataset, MediaConfig(root=d / "media", base_url=media_url), _secret(d))


def _secret(d: Path) -> str:
    env = os.environ.get("NEARSTATE_SECRET")
    if env:
        return env
    path = d / "secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        d.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        tmp = path.with_name(f".secret.{os.getpid()}.tmp")
        tmp.write_text(key)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()
