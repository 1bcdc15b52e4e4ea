"""The Django middleware: ``request.nearstate`` for every request (see the package)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from ...errors import InputError, ReadTimeout
from .apps import read_model


class NearstateMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], Any]):
        self.get_response = get_response
        self.model = read_model()

    def __call__(self, request: HttpRequest) -> Any:
        m = self.model
        try:
            reading = m.begin(
                token=m.chosen_token(request.headers.get(m.header), request.COOKIES.get(m.cookie)),
                asked=request.headers.get(m.consistency_header)
                or (request.GET.get(m.query) if m.query else None),
            )
        except (InputError, ReadTimeout) as e:
            status, body, headers = m.refusal(e)
            response = HttpResponse(body, status=status, content_type="application/json")
            for k, v in headers:
                if k == "Set-Cookie":
                    response.delete_cookie(m.cookie, samesite="Lax")
                elif k != "Content-Type":
                    response[k] = v
            return response
        request.nearstate = reading  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Nearstate-Consistency"] = reading.consistency
        issued = reading.issued
        if issued is not None:
            response["X-Nearstate-Token"] = issued
            response.set_cookie(m.cookie, issued, max_age=m.cookie_max_age, path="/",
                                httponly=True, samesite="Lax",
                                secure=m.cookie_secure)  # fmt: skip
        return response
