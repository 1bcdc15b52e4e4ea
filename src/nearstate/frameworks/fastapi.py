"""The FastAPI dependency.

``reading = nearstate_dependency(model)`` then, in a route,
``def show(r: Annotated[Reading, Depends(reading)])``: the request's
:class:`~nearstate.frameworks.Reading`. With :class:`~nearstate.frameworks.asgi.
NearstateMiddleware` installed it is the middleware's; without it the dependency reads
the token and the consistency asked for itself, and a write through the Reading sets the
token on the response (cookie and header) — when the route returns data rather than a
Response of its own. A refused token is an HTTPException 400 (the cookie dropped), a
write not shown in time 503; waiting happens on a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, Response

from ..errors import InputError, ReadTimeout
from .asgi import open_reading
from .core import Reading, ReadModel, cookie_value, query_value


def nearstate_dependency(model: ReadModel) -> Callable[[Request, Response], Awaitable[Reading]]:
    """A dependency giving each request its Reading of ``model``."""

    async def reading(request: Request, response: Response) -> Reading:
        given = request.scope.get("nearstate")
        if isinstance(given, Reading):
            return given
        try:
            plan = model.plan(
                token=model.chosen_token(request.headers.get(model.header),
                                         cookie_value(request.headers.get("cookie"),
                                                      model.cookie)),
                asked=request.headers.get(model.consistency_header)
                or query_value(request.url.query, model.query),
            )  # fmt: skip
            got = await open_reading(model, plan)
        except (InputError, ReadTimeout) as e:
            status, body, headers = model.refusal(e)
            import json

            raise HTTPException(
                status, json.loads(body)["error"],
                headers={k: v for k, v in headers if k.lower() != "content-type"},
            ) from e  # fmt: skip

        def on_write(r: Reading) -> None:
            issued = r.issued
            if issued is not None:
                response.headers["X-Nearstate-Token"] = issued
                response.headers.append("set-cookie", model.cookie_header(issued))

        got.on_write = on_write
        response.headers["X-Nearstate-Consistency"] = got.consistency
        return got

    return reading
