"""The WSGI middleware (Flask, Django served as WSGI, any WSGI app).

``app.wsgi_app = NearstateWSGIMiddleware(app.wsgi_app, model=read_model)`` (Flask): each
request gets a :class:`~nearstate.frameworks.Reading` as ``environ["nearstate"]``
(``flask.request.environ["nearstate"]``); a response to a request that wrote carries the
new token (cookie and header). WSGI serves a request on one thread, so waiting for a
write (at most the model's ``timeout``) happens there. A refused token answers 400, a
write not shown in time 503, both as JSON with an ``error`` that says why.

Headers are added when the app calls ``start_response``: writes made while a streamed
body is being produced, after that call, do not reach the token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InputError, ReadTimeout
from .core import Reading, ReadModel, cookie_value, query_value


def reading_for(model: ReadModel, environ: dict[str, Any]) -> Reading:
    """The Reading of a WSGI request (may wait; raises TokenRefused, InputError,
    ReadTimeout)."""
    token = model.chosen_token(
        environ.get("HTTP_" + model.header.upper().replace("-", "_")),
        cookie_value(environ.get("HTTP_COOKIE"), model.cookie),
    )
    asked = environ.get("HTTP_" + model.consistency_header.upper().replace("-", "_"))
    if not asked and model.query:
        asked = query_value(environ.get("QUERY_STRING", ""), model.query)
    return model.begin(token=token, asked=asked)


class NearstateWSGIMiddleware:
    def __init__(self, app: Callable[..., Iterable[bytes]], *, model: ReadModel):
        self.app = app
        self.model = model

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:  # fmt: skip
        try:
            reading = reading_for(self.model, environ)
        except (InputError, ReadTimeout) as e:
            status, body, headers = self.model.refusal(e)
            phrase = {400: "400 Bad Request", 503: "503 Service Unavailable"}[status]
            start_response(phrase, headers)
            return [body.encode()]
        environ["nearstate"] = reading

        def start_with_token(status: str, headers: list, exc_info: Any = None) -> Any:
            headers = [*headers, *self.model.response_headers(reading)]
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return self.app(environ, start_with_token)
