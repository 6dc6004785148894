"""``make run``: Streamlit's own command line, with the default model coming up while the server starts.

``streamlit run`` executes a page only when a browser connects, so the triage page used to start importing
torch and loading the default model (about 3 s here) only once somebody was already looking at it. This
launcher starts that same warm-up (:func:`dashboard.model_loads.warm_up`, one shared load per process and model
version) in a background thread at process start, then hands over to ``streamlit run dashboard/app.py`` with
the arguments it was given. The page itself is unchanged and still warms up on its own when started with
plain ``streamlit run``; the server never waits for the warm-up.

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
    """Bring the default model up, then the page's own heavier imports, so the first upload finds them."""
    try:
        from dashboard.model_loads import warm_up
        from dashboard.state import registered_models

        models, _ = registered_models()
        if models:
            warm_up(models[0]).wait()  # the default is listed first; its load runs in its own thread
        import dashboard.components.triage_view  # noqa: F401 - pandas and plotly, for the first worklist
    except Exception:  # noqa: BLE001 - only a head start: the page reports any real problem itself
        logging.getLogger(__name__).warning("preloading the default model failed", exc_info=True)


def main(argv: list[str]) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    threading.Thread(target=preload, name="preload", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *argv]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
