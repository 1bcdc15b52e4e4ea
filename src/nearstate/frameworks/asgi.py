"""The ASGI middleware (Starlette, FastAPI, any ASGI app).

``app.add_middleware(NearstateMiddleware, model=read_model)`` (or
``NearstateMiddleware(app, model=...)``): each HTTP request gets a
:class:`~nearstate.frameworks.Reading` as ``request.state.nearstate`` (Starlette) and
``scope["nearstate"]``; a response to a request that wrote carries the new token (cookie
and header). Waiting for a write or the Log's head happens on a worker thread, never on
the event loop; a request that needs no wait is answered without one. A refused token
answers 400, a write not shown in time 503, both as JSON with an ``error`` that says why.
On the app's lifespan startup the consumer is made; on shutdown it is stopped.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from ..errors import InputError, ReadTimeout
from .core import Plan, Reading, ReadModel, cookie_value, query_value


def plan_from(model: ReadModel, headers: dict[str, str], query: bytes | str) -> Plan:
    """What a request asks for, from its (lower-cased) headers and query string."""
    token = model.chosen_token(headers.get(model.header),
                               cookie_value(headers.get("cookie"), model.cookie))  # fmt: skip
    asked = headers.get(model.consistency_header) or query_value(query, model.query)
    return model.plan(token=token, asked=asked)


async def open_reading(model: ReadModel, plan: Plan) -> Reading:
    """:meth:`ReadModel.open`, on a worker thread when it may wait."""
    if model.ready(plan):
        return model.open(plan)
    return await anyio.to_thread.run_sync(model.open, plan)


class NearstateMiddleware:
    def __init__(self, app: Any, *, model: ReadModel):
        self.app = app
        self.model = model

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}  # fmt: skip
        try:
            reading = await open_reading(
                self.model, plan_from(self.model, headers, scope.get("query_string", b""))
            )
        except (InputError, ReadTimeout) as e:
            status, body, extra = self.model.refusal(e)
            await send({
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in extra],
            })  # fmt: skip
            await send({"type": "http.response.body", "body": body.encode()})
            return
        scope["nearstate"] = reading
        scope.setdefault("state", {})["nearstate"] = reading

        async def send_with_token(message: dict) -> None:
            if message["type"] == "http.response.start":
                added = [(k.lower().encode(), v.encode("latin-1"))
                         for k, v in self.model.response_headers(reading)]  # fmt: skip
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_token)

    def _lifespan(self, receive: Any) -> Any:
        async def wrapped() -> dict:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await anyio.to_thread.run_sync(self.model.start)
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.model.stop)
            return message

        return wrapped
