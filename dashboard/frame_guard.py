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

from starlette.middleware.base import BaseHTTPMiddleware

FRAME_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


class DenyFraming(BaseHTTPMiddleware):
    """Adds :data:`FRAME_HEADERS` to every HTTP response (a header already set is replaced); websockets pass."""

    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers.update(FRAME_HEADERS)
        return response


def install() -> None:
    """Put :class:`DenyFraming` first in the middleware of the Streamlit server about to start in this process."""
    from starlette.middleware import Middleware
    from streamlit.web.server.starlette import starlette_app

    streamlit_middleware = starlette_app.create_streamlit_middleware
    starlette_app.create_streamlit_middleware = lambda: [Middleware(DenyFraming), *streamlit_middleware()]
