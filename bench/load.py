"""Eight browser sessions at once on the triage page: is the server's throughput kept, and is it shared fairly?

    .venv/bin/python bench/load.py [--runs 3] [--sessions 8] [--films 10] [--no-write]

Each run launches a fresh server as ``make run`` does (bench/cold_start.py's launcher: shipped models, used
read-only), opens headless Chromium (Debian's, /usr/bin/chromium) and waits until the default model has
triaged and explained one warm-up film. Then, on that server:

- **alone**: one browser session uploads ``--films`` films of ``kermany-224/train`` to the Triage page; three
  such sessions one after another, the median taken (a single 10-film upload varied from 3.2 to 5.9 s here,
  and it is the baseline every share is computed from);
- **together**: ``--sessions`` sessions (separate browser contexts, so separate Streamlit sessions), each
  with its own ``--films`` films, all upload at once.

Time to a session's worklist runs from handing its films to the uploader to the worklist table being drawn
(it is drawn once every film of the batch has its reading). Overall films/s = films / the time until the
last session's worklist. Targets (issue 12): together >= 80 % of the films/s alone, and no session's
worklist later than 1.5x the median. The browsers share this machine's cores with the server, so the
load average is printed with each run, and each run first waits (at most 90 s) until the CPU is quiet: the
previous run's eight browsers take a while to wind down. Printed figures, not a pass/fail test; the result is stored as the
"load" section of docs/measurements.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cold_start import CHROMIUM, CHROMIUM_ARGS, _free_port, _listening, _start_server, _stop  # noqa: E402
from bench.measurements import write_section  # noqa: E402
from core.config import settings  # noqa: E402

FILMS = settings().data / "kermany-224" / "train"
WARM_UP_FILM = settings().data / "films" / "PNEUMONIA" / "person1946_bacteria_4874.jpeg"
TARGETS = {"share of films/s": 0.80, "max / median": 1.5}
WAIT_MS = 600_000
FILMS_PER_PAGE = 6  # film cards per page of the triage page (dashboard/views/triage.py)


ALONE_REPEATS = 3
QUIET_IDLE = 0.9  # share of CPU time idle over one second that counts as quiet
QUIET_MAX_WAIT_S = 90


@dataclass
class Run:
    load: float  # 1-minute load average when the run started
    alone_s: float  # one session: time to its worklist (the median of ALONE_REPEATS lone sessions)
    together_s: list[float]  # each session's time to its worklist, all uploading at once
    films: int  # films per session

    @property
    def alone_rate(self) -> float:
        return self.films / self.alone_s

    @property
    def together_rate(self) -> float:
        return self.films * len(self.together_s) / max(self.together_s)

    @property
    def share(self) -> float:
        return self.together_rate / self.alone_rate

    @property
    def spread(self) -> float:
        return max(self.together_s) / statistics.median(self.together_s)


def film_batches(sessions: int, films: int) -> list[list[Path]]:
    """Films for the lone session (batch 0) and for each concurrent session: different films for each,
    NORMAL and PNEUMONIA alternating, so no session uploads what another did."""
    normal, pneumonia = (sorted((FILMS / cls).glob("*.jpeg")) for cls in ("NORMAL", "PNEUMONIA"))
    mixed = [film for pair in zip(normal, pneumonia) for film in pair]
    needed = (sessions + 1) * films
    if len(mixed) < needed:
        sys.exit(f"needs {needed} films in {FILMS}, found {len(mixed)}")
    return [mixed[i * films: (i + 1) * films] for i in range(sessions + 1)]


async def _open(browser, url: str):
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(url)
    dropzone = page.get_by_test_id("stFileUploaderDropzone")
    await expect(dropzone.or_(page.get_by_test_id("stException")).first).to_be_visible(timeout=WAIT_MS)
    if await page.get_by_test_id("stException").count():  # fail now, not after WAIT_MS
        raise RuntimeError("the page shows an exception instead of the upload box; see the server log")
    await expect(dropzone.get_by_test_id("stBaseButton-secondary")).to_be_enabled(timeout=WAIT_MS)
    return context, page


async def _time_to_worklist(page, films: list[Path], start: asyncio.Event | None = None) -> float:
    from playwright.async_api import expect

    if start is not None:
        await start.wait()
    began = time.monotonic()
    await page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(f) for f in films])
    await expect(page.get_by_test_id("stDataFrame")).to_be_visible(timeout=WAIT_MS)
    elapsed = time.monotonic() - began
    if await page.get_by_test_id("stException").count():
        raise RuntimeError("a page shows an exception; see the server log")
    return elapsed


async def _warm_up(browser, url: str) -> None:
    """The model loaded, a film triaged and explained: what is measured next is the steady state."""
    from playwright.async_api import expect

    context, page = await _open(browser, url)
    await _time_to_worklist(page, [WARM_UP_FILM])
    await expect(page.get_by_text("Grad-CAM for", exact=False).first).to_be_visible(timeout=WAIT_MS)
    await context.close()


async def _settle(page, films: int) -> None:
    """Let the page finish its Grad-CAM overlays (one per film card on the first page of cards), so the
    next scenario starts on an idle server."""
    from playwright.async_api import expect

    overlays = page.get_by_text("Grad-CAM for", exact=False)
    await expect(overlays).to_have_count(min(films, FILMS_PER_PAGE), timeout=WAIT_MS)
    await asyncio.sleep(2)


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def _wait_for_quiet() -> None:
    """Until one second passes with the CPU at least QUIET_IDLE idle (at most QUIET_MAX_WAIT_S)."""
    if not Path("/proc/stat").exists():
        return
    deadline = time.monotonic() + QUIET_MAX_WAIT_S
    while time.monotonic() < deadline:
        idle0, total0 = _cpu_times()
        time.sleep(1.0)
        idle1, total1 = _cpu_times()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= QUIET_IDLE:
            return


async def one_run(batches: list[list[Path]], log_path: Path) -> Run:
    from playwright.async_api import async_playwright

    _wait_for_quiet()
    port, jobs = _free_port(), Path(tempfile.mkdtemp(prefix="cxr-load-jobs-"))
    load = os.getloadavg()[0]
    with open(log_path, "ab") as log:
        server = _start_server(port, jobs, log)
        try:
            while not _listening(port):
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited early; see {log_path}")
                await asyncio.sleep(0.1)
            url = f"http://127.0.0.1:{port}/"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                           args=CHROMIUM_ARGS)
                await _warm_up(browser, url)
                lone = []
                for _ in range(ALONE_REPEATS):
                    context, page = await _open(browser, url)
                    lone.append(await _time_to_worklist(page, batches[0]))
                    await _settle(page, len(batches[0]))
                    await context.close()
                print(f"  alone, {ALONE_REPEATS} sessions one after another: "
                      f"{', '.join(f'{t:.1f}' for t in lone)} s", flush=True)
                alone = statistics.median(lone)

                opened = [await _open(browser, url) for _ in batches[1:]]  # every upload box ready first
                start = asyncio.Event()
                waits = [asyncio.create_task(_time_to_worklist(p, films, start))
                         for (_, p), films in zip(opened, batches[1:])]
                start.set()
                together = list(await asyncio.gather(*waits))
                for context, _ in opened:
                    await context.close()
                await browser.close()
        finally:
            _stop(server)
            shutil.rmtree(jobs, ignore_errors=True)
    return Run(load, alone, together, len(batches[0]))


COLUMNS = ("run", "load (1 min)", "alone: worklist", "alone: films/s", "together: films/s", "share of alone",
           "together: p50 worklist", "together: max worklist", "max / median")


def _row(label: str, run: Run) -> str:
    values = [label, f"{run.load:.1f}", f"{run.alone_s:.1f} s", f"{run.alone_rate:.2f}", f"{run.together_rate:.2f}",
              f"{run.share * 100:.0f} %", f"{statistics.median(run.together_s):.1f} s",
              f"{max(run.together_s):.1f} s", f"{run.spread:.2f}"]
    return "| " + " | ".join(values) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--films", type=int, default=10, help="films each session uploads")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/measurements.md alone")
    args = parser.parse_args()
    if not CHROMIUM.exists() or not FILMS.is_dir():
        sys.exit(f"needs Chromium at {CHROMIUM} and the films in {FILMS}")
    batches = film_batches(args.sessions, args.films)
    # No file watcher: a measured server must not unload and re-import its modules when a file of the
    # checkout changes mid-run (Streamlit's watcher does), which also races imports between sessions.
    os.environ["STREAMLIT_SERVER_FILE_WATCHER_TYPE"] = "none"
    log_path = Path(tempfile.mkdtemp(prefix="cxr-load-")) / "streamlit.log"
    runs = []
    for i in range(args.runs):
        runs.append(asyncio.run(one_run(batches, log_path)))
        print(_row(str(i + 1), runs[-1]), flush=True)
        print(f"  each session's worklist: {', '.join(f'{s:.1f}' for s in runs[-1].together_s)} s", flush=True)
    print(f"(server log: {log_path})")
    lines = [f"{args.sessions} browser sessions (headless Chromium, one context each) each upload {args.films} "
             f"films of `kermany-224/train` to the Triage page of a freshly launched `make run` server (shipped "
             "models, default model, warmed up on one film first), all at once; against one session alone "
             f"uploading its own films on the same server just before (the median of {ALONE_REPEATS} lone "
             "sessions, one after another). Each run starts once the CPU is quiet (the previous run's browsers "
             "wound down). Time to worklist: from handing the films "
             "to the uploader to the worklist being drawn. Films/s together = all films / the last worklist's "
             f"time. Targets (issue 12): together >= {TARGETS['share of films/s'] * 100:.0f} % of the films/s "
             f"alone, max / median <= {TARGETS['max / median']}. The browsers run on the same "
             f"{len(os.sched_getaffinity(0))} cores as the server; load = 1-minute load average when the run "
             f"started. Reproduce: `.venv/bin/python bench/load.py --runs {args.runs} --sessions {args.sessions} "
             f"--films {args.films}`.", "",
             "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|", *(_row(str(i), r) for i, r in
                                                                           enumerate(runs, 1))]
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section("load", "Eight triage sessions at once", lines)


if __name__ == "__main__":
    main()
