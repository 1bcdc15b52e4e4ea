"""Per-request consistency for the Python web frameworks: a handler reads the state its
request should see — eventual by default, read-your-writes when the client carries the
signed token of its own last write, strong on request — whichever worker or host
answers.

- :mod:`.core`: :class:`ReadModel` (one per process: the dataset's consumer and writer,
  the token signer), :class:`Reading` (one per request), :class:`TokenSigner`;
- :mod:`.asgi`: ``NearstateMiddleware`` (Starlette, FastAPI);
- :mod:`.wsgi`: ``NearstateWSGIMiddleware`` (Flask, any WSGI app);
- :mod:`.fastapi`: ``nearstate_dependency(model)``;
- :mod:`.django`: an app (``nearstate.frameworks.django``), its middleware and the
  ``NEARSTATE`` setting, giving ``request.nearstate``.

Only :mod:`.core` is imported here: each adapter imports its framework, which is
installed by the app using it. The platform layer: it uses the store, never ``web``.

Errors::

    NearstateError
    ├── InputError
    │   └── TokenRefused   a consistency token is malformed, of another format, for
    │                      another dataset, forged, or names a write the Log lacks (400)
    └── ReadTimeout        the client's write or the Log's head was not shown in time (503)

See docs/frameworks.md.
"""

from __future__ import annotations

from .core import Reading, ReadModel, TokenRefused, TokenSigner

__all__ = ["ReadModel", "Reading", "TokenRefused", "TokenSigner"]
