"""The Django app: reads ``settings.NEARSTATE`` once and holds the process's ReadModel."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..core import ReadModel

_OPTIONS = {
    "TIMEOUT": "timeout",
    "FOLLOW": "follow",
    "COOKIE": "cookie",
    "HEADER": "header",
    "CONSISTENCY_HEADER": "consistency_header",
    "QUERY": "query",
    "COOKIE_SECURE": "cookie_secure",
    "COOKIE_MAX_AGE": "cookie_max_age",
    "AUDIENCE": "audience",
    "SCHEMA": "schema",
    "CONSUMER_OPTIONS": "consumer_options",
}


def model_from_settings(conf: Any, secret_key: str | None) -> ReadModel:
    if not isinstance(conf, dict):
        raise ImproperlyConfigured("settings.NEARSTATE is a dict with at least 'DATASET'")
    unknown = sorted(set(conf) - {"DATASET", "SECRET", *_OPTIONS})
    if unknown:
        raise ImproperlyConfigured(
            f"settings.NEARSTATE has unknown keys {unknown}: use DATASET, SECRET or "
            f"{', '.join(sorted(_OPTIONS))}"
        )
    if not conf.get("DATASET"):
        raise ImproperlyConfigured("settings.NEARSTATE['DATASET'] (a dataset URL or path) is "
                                   "missing")  # fmt: skip
    secret = conf.get("SECRET") or secret_key
    if not secret:
        raise ImproperlyConfigured("settings.NEARSTATE['SECRET'] or SECRET_KEY must be set")
    options = {_OPTIONS[k]: v for k, v in conf.items() if k in _OPTIONS}
    if isinstance(options.get("schema"), str):
        try:
            options["schema"] = import_string(options["schema"])
        except ImportError as e:
            raise ImproperlyConfigured(f"settings.NEARSTATE['SCHEMA']: {e}") from e
    return ReadModel(conf["DATASET"], secret=secret, **options)


class NearstateConfig(AppConfig):
    name = "nearstate.frameworks.django"
    label = "nearstate"
    verbose_name = "nearstate read model"

    def ready(self) -> None:
        self.model = model_from_settings(getattr(settings, "NEARSTATE", None),
                                         getattr(settings, "SECRET_KEY", None))  # fmt: skip


def read_model() -> ReadModel:
    """The process's ReadModel (the app must be in INSTALLED_APPS)."""
    try:
        config = apps.get_app_config("nearstate")
    except LookupError as e:
        raise ImproperlyConfigured(
            "add 'nearstate.frameworks.django' to INSTALLED_APPS to use nearstate"
        ) from e
    return config.model  # type: ignore[attr-defined]
