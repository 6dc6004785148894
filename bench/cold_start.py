"""Cold start of the triage page in a real browser, timed from launching the server as ``make run`` does
(``python -m dashboard.serve``: ``streamlit run dashboard/app.py`` with the default model loading from the start).

    .venv/bin/python bench/cold_start.py [--runs 3] [--film PATH] [--no-write]

Each run starts a fresh server as ``make run`` does (the shipped models in checkpoints/, used read-only;
training jobs in a temporary folder), with Debian's Chromium already open (its launch is not counted), and
measures from the moment the server process is launched:

- **upload box**: the Triage page's file uploader is on screen and accepts a file;
- **probabilities**: after the film is handed to the uploader, its class-probability bars are drawn;
- **overlay**: after that, its Grad-CAM overlay is drawn (the film and the overlay: two images).

Printed figures, not a pass/fail test; the result is stored as the "cold-start" section of
docs/measurements.md. The targets (issue 11): upload box <= 5 s, probabilities <= 3 s after the upload,
overlay <= 3 s after the probabilities. Other work on this small CPU makes single runs noisy: the load
average is printed with each run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.config import settings  # noqa: E402
from bench.measurements import write_section  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
FILM = settings().data / "films" / "PNEUMONIA" / "person1946_bacteria_4874.jpeg"
TARGETS = {"upload box": 5.0, "probabilities": 3.0, "overlay": 3.0}
WAIT_MS = 180_000


@dataclass
class Run:
    listening: float  # the server accepts connections
    upload_box: float  # the uploader is drawn and accepts a file
    uploaded: float  # when the film was handed to the uploader
    worklist: float  # after the upload: the worklist (priority, top-class probability, abnormal score)
    probabilities: float  # after the upload: the card's class-probability bars
    overlay: float  # after the probabilities
    load: float  # 1-minute load average when the run started


# Installed just before the upload: polls the page every 20 ms and notes when each part is first on screen,
# so one part's time does not wait for another's (the worklist's table and the card are drawn independently).
WATCH = """() => {
  const seen = window.cxrSeen = {}, start = performance.now();
  const shown = (el) => el && el.getBoundingClientRect().height > 0;
  const timer = setInterval(() => {
    const now = performance.now() - start;
    if (!('worklist' in seen) && shown(document.querySelector('[data-testid="stDataFrame"]'))) seen.worklist = now;
    if (!('probabilities' in seen) && [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
        .some(el => el.textContent.trim() === 'Class probabilities' && shown(el))
        && document.querySelector('[data-testid="stProgress"]')) seen.probabilities = now;
    const images = [...document.querySelectorAll('[data-testid="stImage"] img')];
    if (!('overlay' in seen) && images.length === 2 && images.every(img => img.complete && img.naturalWidth > 0)
        && document.body.innerText.includes('Grad-CAM for')) seen.overlay = now;
    if ('worklist' in seen && 'probabilities' in seen && 'overlay' in seen) clearInterval(timer);
  }, 20);
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


LAUNCHERS = {  # `make run`'s launcher, and plain `streamlit run` for comparison (--launcher streamlit)
    "serve": ["-m", "dashboard.serve"],
    "streamlit": ["-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py")],
}
LAUNCHER = "serve"


def _start_server(port: int, jobs: Path, log) -> subprocess.Popen:
    env = {**os.environ, "CXR_CHECKPOINTS": str(ROOT / "checkpoints"), "CXR_JOBS": str(jobs),
           "CXR_MODELS": str(jobs / "site-models"),  # the shipped models only
           "OMP_WAIT_POLICY": "PASSIVE"}  # as `make run`
    return subprocess.Popen(
        [sys.executable, *LAUNCHERS[LAUNCHER], "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def one_run(browser, film: Path, log_path: Path, upload_at: float = 0.0) -> Run:
    from playwright.sync_api import expect

    port, jobs = _free_port(), Path(tempfile.mkdtemp(prefix="cxr-cold-start-jobs-"))
    context = browser.new_context(viewport={"width": 1440, "height": 1000})  # a fresh cache each run
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    load = os.getloadavg()[0]
    with open(log_path, "ab") as log:
        started = time.monotonic()
        server = _start_server(port, jobs, log)
        try:
            while not _listening(port):
                if server.poll() is not None:
                    raise RuntimeError(f"streamlit exited early; see {log_path}")
                time.sleep(0.05)
            listening = time.monotonic() - started
            page.goto(f"http://127.0.0.1:{port}/")
            dropzone = page.get_by_test_id("stFileUploaderDropzone")
            expect(dropzone).to_be_visible(timeout=WAIT_MS)
            expect(dropzone.get_by_test_id("stBaseButton-secondary")).to_be_enabled(timeout=WAIT_MS)
            upload_box = time.monotonic() - started

            time.sleep(max(0.0, started + upload_at - time.monotonic()))  # a user who takes a moment
            page.evaluate(WATCH)  # the browser notes when each part first shows, independently of the others
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(film))
            uploaded = time.monotonic()
            expect(page.get_by_test_id("stDataFrame")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Class probabilities").first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Grad-CAM for", exact=False).first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_test_id("stImage").locator("img")).to_have_count(2, timeout=WAIT_MS)
            page.wait_for_function("() => ['worklist', 'probabilities', 'overlay'].every(k => k in window.cxrSeen)")
            seen = page.evaluate("() => window.cxrSeen")  # milliseconds after the watch began, at the upload
            if page.get_by_test_id("stException").count():
                raise RuntimeError(f"the page shows an exception; see {log_path}")
        finally:
            context.close()
            _stop(server)
            shutil.rmtree(jobs, ignore_errors=True)
    return Run(listening, upload_box, uploaded - started, seen["worklist"] / 1000, seen["probabilities"] / 1000,
               (seen["overlay"] - seen["probabilities"]) / 1000, load)


COLUMNS = (("load (1 min)", "load", ""), ("server listening", "listening", " s"),
           ("upload box usable", "upload_box", " s"), ("film uploaded at", "uploaded", " s"),
           ("worklist after upload", "worklist", " s"), ("probabilities after upload", "probabilities", " s"),
           ("overlay after probabilities", "overlay", " s"))


def _row(label: str, values: dict) -> str:
    return f"| {label} | " + " | ".join(f"{values[key]:.1f}{unit}" for _, key, unit in COLUMNS) + " |"


def _table(runs: list[Run]) -> list[str]:
    lines = ["| run | " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [_row(str(i), vars(run)) for i, run in enumerate(runs, 1)]
    if len(runs) > 1:
        lines.append(_row("median", {key: statistics.median(getattr(r, key) for r in runs) for _, key, _ in COLUMNS}))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--film", type=Path, default=FILM)
    parser.add_argument("--upload-at", type=float, nargs="+", default=[0.0], metavar="S",
                        help="scenarios: upload no earlier than S seconds after launch; 0 (the default) uploads "
                             "as soon as the box is usable, the worst case")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/measurements.md alone")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="serve",
                        help="serve: `make run` (python -m dashboard.serve); streamlit: plain `streamlit run`")
    args = parser.parse_args()
    global LAUNCHER
    LAUNCHER = args.launcher
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists() or not args.film.exists():
        sys.exit(f"needs Chromium at {CHROMIUM} and the film {args.film}")
    log_path = Path(tempfile.mkdtemp(prefix="cxr-cold-start-")) / "streamlit.log"
    scenarios: dict[float, list[Run]] = {at: [] for at in args.upload_at}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        for i in range(args.runs):  # scenarios interleaved, so a burst of other work hits them alike
            for upload_at, runs in scenarios.items():
                runs.append(one_run(browser, args.film, log_path, upload_at))
                print(_row(f"{i + 1}, upload at {upload_at:.0f} s", vars(runs[-1])), flush=True)
                time.sleep(2)  # let the stopped server's memory go before the next launch
        browser.close()
    print(f"(server log: {log_path})")
    lines = [f"Triage page in headless Chromium against a freshly launched `make run` server "
             "(`python -m dashboard.serve`) "
             f"(shipped models, default `{_default_model()}`), film `{args.film.name}`, {args.runs} run(s) per "
             "scenario. Times from launching the server process; targets: upload box <= "
             f"{TARGETS['upload box']:.0f} s, probabilities <= {TARGETS['probabilities']:.0f} s after the upload, "
             f"overlay <= {TARGETS['overlay']:.0f} s after the probabilities. Probabilities = the card's "
             "class-probability bars; worklist = its table (priority and top-class probability); each timed on its "
             "own by the browser, from the upload. Load = the 1-minute load average "
             f"of this {len(os.sched_getaffinity(0))}-core machine when the run started. Reproduce: "
             f"`.venv/bin/python bench/cold_start.py --runs {args.runs} --upload-at "
             f"{' '.join(f'{at:g}' for at in args.upload_at)}`."]
    for upload_at, runs in scenarios.items():
        lines += ["", "Film uploaded " + (f"{upload_at:g} s after launch (a user who takes a moment):" if upload_at
                                          else "as soon as the upload box is usable (the worst case):"), "",
                  *_table(runs)]
    if args.no_write or args.launcher != "serve":  # the stored section describes `make run`
        print("\n".join(lines))
    else:
        write_section("cold-start", "Cold start of the triage page", lines)


def _default_model() -> str:
    """The model a fresh triage session serves: the pneumonia task's default (not any task's)."""
    from core.errors import ModelNotFound
    from core.store.registry import find_model

    try:
        return find_model(None, ROOT / "checkpoints").name
    except ModelNotFound:
        return "none"


if __name__ == "__main__":
    main()
