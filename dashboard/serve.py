"""``make run``: Streamlit's own command line, with the default model coming up while the server starts.

``streamlit run`` executes a page only when a browser connects, so the triage page used to start importing
torch and loading the default model (about 3 s here) only once somebody was already looking at it. This
launcher starts that same warm-up (:func:`dashboard.model_loads.warm_up`, one shared load per process and model
version) in a background thread at process start, then hands over to ``streamlit run dashboard/app.py`` with
the arguments it was given. Once the model is up (not alongside it: both want the CPU), it also starts a DICOM
decoding worker, whose imports the first DICOM upload would otherwise wait for. It also bounds the uploads
the server holds in memory, per browser session and in all (:mod:`dashboard.upload_store`). The page itself is
unchanged and still warms up on its own when started with plain ``streamlit run`` (whose upload store is
Streamlit's own, unbounded); the server never waits for the warm-up.

    .venv/bin/python -m dashboard.serve --server.port 8501
"""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"


def preload() -> None:
    """Bring the default model up, then the page's own heavier imports, then a DICOM decoding worker, so the
    first upload finds them."""
    try:
        from dashboard.model_loads import warm_up
        from dashboard.state import registered_models

        from core.tasks import DEFAULT_TASK

        models, _ = registered_models()
        if models:  # a fresh session's task (pneumonia) and its default; its load runs in its own thread
            warm_up(next((m for m in models if m.task == DEFAULT_TASK and m.is_default), models[0])).wait()
        import dashboard.components.triage_view  # noqa: F401 - pandas and pydantic, for the first worklist
    except Exception:  # noqa: BLE001 - only a head start: the page reports any real problem itself
        logging.getLogger(__name__).warning("preloading the default model failed", exc_info=True)
    try:
        from core.films.decode_pool import start_worker_early

        start_worker_early()  # in its own thread; the same worker, limits and all, that a DICOM would start
    except Exception:  # noqa: BLE001 - as above: the first DICOM starts its own worker and reports problems
        logging.getLogger(__name__).warning("starting a DICOM decoding worker early failed", exc_info=True)


def main(argv: list[str]) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from core.access.errors import SignInUnavailable
    from core.access.passphrase import parse_hash
    from core.access.signin import passphrase_configured
    from core.config import settings, trust_no_forwarding_headers
    from core.errors import SettingOutOfRange

    try:
        settings()  # a setting out of its range stops the start here, in words, not as a traceback further on
        if passphrase_configured():  # a hash that does not parse: a sign-in offered that never works, and local
            parse_hash(settings().admin_passphrase_hash)  # administration left on (a review)
    except (SettingOutOfRange, SignInUnavailable) as error:
        print(f"The dashboard was not started: {error} Change or unset it and start again.", file=sys.stderr)
        return 1
    trust_no_forwarding_headers()  # the sign-in throttle keys on the peer uvicorn would otherwise replace
    threading.Thread(target=preload, name="preload", daemon=True).start()
    from streamlit.web import cli

    from dashboard import cache_guard, frame_guard, session_store
    from dashboard.upload_store import install

    install()  # uploads held in memory are bounded per session and in all
    session_store.install()  # and given back when a session can no longer reconnect
    frame_guard.install()  # no other site may frame it: a local session administers
    cache_guard.install()  # no browser clears the caches every session shares

    sys.argv = ["streamlit", "run", str(APP), *argv]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
