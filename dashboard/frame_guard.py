"""Keep the dashboard out of other sites' frames: every HTTP response of the server ``make run`` starts says
``X-Frame-Options: DENY`` and ``Content-Security-Policy: frame-ancestors 'none'``.

A local browser session administers (core.access): a page on any website could frame ``http://localhost:8501``
under invisible layers and have the operator click Start training, Cancel or "Make ... the default" in it; the
framed session still comes from 127.0.0.1 with the dashboard's own Host and Origin, so nothing tells it apart
(found by a review). Streamlit sends neither header; the README's nginx block adds them for the proxied route
only. Installed by dashboard.serve into the Starlette app Streamlit is about to build, as
:mod:`dashboard.upload_store` installs its upload store.
"""
from __future__ import annotations

FRAME_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"))


class DenyFraming:
    """ASGI middleware adding :data:`FRAME_HEADERS` to every HTTP response (a header already set is replaced)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in FRAME_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + list(FRAME_HEADERS)}
            await send(message)

        await self.app(scope, receive, with_headers)


def install() -> None:
    """Put :class:`DenyFraming` first in the middleware of the Streamlit server about to start in this process."""
    from starlette.middleware import Middleware
    from streamlit.web.server.starlette import starlette_app

    streamlit_middleware = starlette_app.create_streamlit_middleware
    starlette_app.create_streamlit_middleware = lambda: [Middleware(DenyFraming), *streamlit_middleware()]
