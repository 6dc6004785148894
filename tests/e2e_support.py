"""Helpers for the dashboard and browser tests: real data, quick models, waiting, a live Streamlit server.

Quick models are trained once per test session into a template folder and copied into each test's own
checkpoints folder, so tests never share (or touch the repository's) registry.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CXR_DATA") or ROOT.parent / "shared" / "data")  # as tests/conftest.py
TRAIN_DIR = SHARED_DATA / "kermany-224" / "train"
FILMS_DIR = SHARED_DATA / "films"
DICOM_DIR = SHARED_DATA / "dicom"
IN_CI = os.environ.get("CI", "").lower() == "true"


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; .ci/run installs it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium() -> Path:
    """Debian's Chromium, or a failure under CI and a skip elsewhere."""
    return require(CHROMIUM, "Chromium (apt-get install -y chromium)")


def require(path: Path, what: str) -> Path:
    """The path, or a failure under CI (data and Chromium must be there) and a skip elsewhere."""
    if path.exists():
        return path
    message = f"{what} not found at {path}" + ("" if path == CHROMIUM else "; these tests use the real films in ../shared/data")
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def real_films() -> list[Path]:
    """The 16 full-resolution validation films, NORMAL then PNEUMONIA."""
    return sorted(require(FILMS_DIR, "films").glob("*/*.jpeg"))


@functools.cache
def _template() -> Path:
    """A checkpoints folder with a small CNN (the default) and an MLP, trained on real films once per session."""
    from core.store.records import TrainConfig
    from core.training.train import train

    require(TRAIN_DIR, "the Kermany train split")
    folder = Path(tempfile.mkdtemp(prefix="cxr-test-models-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    train(TRAIN_DIR, TrainConfig(arch="cnn5", epochs=1, image_size=64, max_films=160), directory=folder)
    train(TRAIN_DIR, TrainConfig(arch="mlp", epochs=1, image_size=64, max_films=160), directory=folder)
    return folder


def quick_checkpoints(destination: Path) -> Path:
    """A private copy of the template registry: ``pneumonia-cnn5-v1`` (default) and ``pneumonia-mlp-v1``."""
    shutil.copytree(_template(), destination, ignore=shutil.ignore_patterns(".*"))
    return destination


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# Every film image on the page decoded by the browser (complete, a real width). An <img> is in the page before its
# bytes arrive (later still through a proxy), so this waits, up to the page's default timeout, instead of
# asserting at once.
_LOADED_IMAGES = """count => {
    const images = [...document.querySelectorAll('[data-testid="stImage"] img')];
    return images.length === count && images.every(img => img.complete && img.naturalWidth > 100);
}"""


def wait_for_loaded_images(page, count: int) -> None:
    page.wait_for_function(_LOADED_IMAGES, arg=count)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """``streamlit run dashboard/app.py`` (``serve``: ``python -m dashboard.serve``, as ``make run`` starts it) on
    a free localhost port, stopped (with its group) on exit."""

    def __init__(self, env: dict, log_path: Path, serve: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env, self.log_path = env, log_path
        self.launcher = (["-m", "dashboard.serve"] if serve
                         else ["-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py")])
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "StreamlitServer":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, *self.launcher,
             "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._healthy, timeout=60, what="the Streamlit health endpoint")
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"streamlit exited early; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def app_page(page: str | None = None):
    """The app (``page``: e.g. ``views/compare.py``; default the Triage page), run once in AppTest with no
    exception (streamlit's testing module imported here, late: processes spawned by some tests import the test
    modules too)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception
    return at


def retrain_page():
    """The Retrain page, run once in AppTest with no exception."""
    return app_page("views/retrain.py")


def run_ranks(target, nprocs: int, folder: Path, timeout: float = 240) -> None:
    """``target(rank, nprocs, rendezvous, folder)`` in ``nprocs`` spawned processes; fails the test when a rank
    is still waiting after ``timeout`` seconds (its processes are killed)."""
    import pytest
    import torch.multiprocessing as mp

    context = mp.start_processes(_rank_then_leave, args=(target, nprocs, str(folder / "rendezvous"), str(folder)),
                                 nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"a rank is still waiting after {timeout:.0f} s")


def _rank_then_leave(rank: int, target, nprocs: int, rendezvous: str, folder: str) -> None:
    """One spawned rank: ``target``, then exit at once once it has returned (its results written, its process
    group destroyed). The interpreter's own teardown is skipped: there gloo's threads can still abort a
    finished rank (SIGABRT, "terminate called without an active exception", seen once in CI after both ranks
    had written their results). An exception in ``target`` still fails the rank as usual."""
    target(rank, nprocs, rendezvous, folder)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

