"""The Django integration: an app, a middleware and a setting.

In ``settings.py``::

    INSTALLED_APPS = [..., "nearstate.frameworks.django"]
    MIDDLEWARE = [..., "nearstate.frameworks.django.middleware.NearstateMiddleware"]
    NEARSTATE = {"DATASET": "/srv/data/catalogue", "TIMEOUT": 5.0}

``NEARSTATE`` keys: ``DATASET`` (a dataset URL or path; required), ``SECRET`` (signs the
tokens; default ``SECRET_KEY``), and any :class:`~nearstate.frameworks.ReadModel`
option in capitals (``TIMEOUT``, ``FOLLOW``, ``COOKIE``, ``HEADER``, ``QUERY``,
``COOKIE_SECURE``, ``COOKIE_MAX_AGE``, ``AUDIENCE``, ``SCHEMA``: a Schema or the
dotted path of one). An unknown key, a missing dataset or secret, or a SCHEMA path that
does not import is ImproperlyConfigured, naming it.

A view then reads ``request.nearstate`` (a :class:`~nearstate.frameworks.Reading`):
``request.nearstate.state`` to read, ``request.nearstate.upsert(...)`` to write (the
response then carries the token). ``read_model()`` is the process's ReadModel.
"""

from __future__ import annotations

from .apps import read_model

__all__ = ["read_model"]
