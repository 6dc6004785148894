"""Patient data: no DICOM identifying value leaves the program, and uploads are never written to disk.

A real CR (RG1_UNCI.dcm) gets marker strings in its identifying attributes. It then goes through every way in
that writes or prints something: CLI ``predict`` (JSON and text), CLI ``evaluate`` on a class-folder tree,
training (a background job and CLI ``train``), and the triage page (AppTest: every element of the page, and
the worklist CSV it offers for download). The markers must appear in no output, and in no file created or
changed meanwhile under the repo, the temp folder, CXR_MODELS or CXR_JOBS. Uploaded films carry random
pixel noise, so their bytes are unique to this run and a copy of them on disk cannot be someone else's file.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import corpus
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import environment
from e2e_support import quick_checkpoints, wait_for
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core.jobs.jobs import SUCCEEDED, read_job, start_job
from core.store.records import TrainConfig
from dashboard.components.reports import escape_markdown
from dashboard.components.worklist import worklist_csv
from dashboard.state import Upload, triage_uploads

REPO = Path(__file__).resolve().parent.parent
IDENTITY = {
    "PatientName": "ZZMARKER^PATIENT",
    "PatientID": "ZZMARKER-ID-4711",
    "PatientBirthDate": "19010101",
    "PatientAddress": "ZZMARKER STREET 1",
    "InstitutionName": "ZZMARKER HOSPITAL",
    "ReferringPhysicianName": "ZZMARKER^REFERRER",
    "AccessionNumber": "ZZMARKER-ACC",
}
NEEDLES = (b"zzmarker", b"19010101", b"1901-01-01", b"01/01/1901")  # searched in lower-cased bytes
SKIP_DIRS = {".git", ".venv", "__pycache__", ".ruff_cache"}
MAX_READ = 256 * 2**20


def leaks(data: bytes | str) -> list[bytes]:
    data = (data.encode() if isinstance(data, str) else data).lower()
    return [needle for needle in NEEDLES if needle in data]


class DiskWatch:
    """Files created or changed under some folders since the watch began; reads only those files."""

    def __init__(self, *roots: Path):
        self.roots = [Path(r) for r in roots if Path(r).is_dir()]
        self.before = self._scan()

    def _scan(self) -> dict[str, tuple[int, int]]:
        """Every file's (mtime, size), walked with a stack: Python 3.11's os.walk recurses, and a folder 1,000
        levels deep anywhere under /tmp (another program's, or a test's left behind) ended it in RecursionError."""
        seen = {}
        stack = [str(root) for root in self.roots]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name not in SKIP_DIRS:
                            stack.append(entry.path)
                        continue
                    stat = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                seen[entry.path] = (stat.st_mtime_ns, stat.st_size)
        return seen

    def changed(self) -> list[Path]:
        return [Path(p) for p, stamp in self._scan().items() if self.before.get(p) != stamp]

    def files_containing(self, predicate) -> list[str]:
        hits = []
        for path in self.changed():
            try:
                if path.stat().st_size <= MAX_READ and predicate(path.read_bytes()):
                    hits.append(str(path))
            except OSError:
                continue  # removed meanwhile, or not readable
        return hits


def _watch(*extra: Path) -> DiskWatch:
    return DiskWatch(REPO, Path(tempfile.gettempdir()), Path.home() / ".streamlit", *extra)


def _with_noise(pixels: np.ndarray, highest: int) -> np.ndarray:
    """+0/+1 on every pixel: invisible to the model, but makes the file's bytes unique to this run."""
    noise = np.random.default_rng(int.from_bytes(os.urandom(4), "little")).integers(0, 2, pixels.shape)
    return np.minimum(pixels.astype(np.int64) + noise, highest).astype(pixels.dtype)


@pytest.fixture(scope="module")
def marked_dicom(dicom_dir) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(corpus.with_identity((dicom_dir / "RG1_UNCI.dcm").read_bytes(), **IDENTITY)))
    ds.PixelData = _with_noise(ds.pixel_array, (1 << ds.BitsStored) - 1).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    assert b"ZZMARKER^PATIENT" in data and b"19010101" in data  # or the tests below would prove nothing
    return data


@pytest.fixture(scope="module")
def unique_film(normal_film_path) -> bytes:
    with Image.open(normal_film_path) as image:
        pixels = np.asarray(image.convert("L"))
    buffer = io.BytesIO()
    Image.fromarray(_with_noise(pixels, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, marked_dicom, kermany_train) -> Path:
    """``study.dcm`` alone, and ``tree/`` (NORMAL/ and PNEUMONIA/, 10 real films each, plus study.dcm)."""
    root = tmp_path_factory.mktemp("patient-inputs")
    (root / "study.dcm").write_bytes(marked_dicom)
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / "tree" / cls).mkdir(parents=True)
        for path in sorted((kermany_train / cls).glob("*.jpeg"))[:10]:
            shutil.copy(path, root / "tree" / cls / path.name)
    (root / "tree" / "PNEUMONIA" / "study.dcm").write_bytes(marked_dicom)
    return root


@pytest.fixture
def registry(trained_model, tmp_path) -> Path:
    return corpus.copy_registry(trained_model.directory, tmp_path / "checkpoints")


def _everything_under(*folders: Path) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob("*") if p.is_file() and leaks(p.read_bytes())]


def _ended(folder: Path):
    job = read_job(folder)
    return None if job.is_active else job


def test_the_disk_watch_finds_a_file_written_meanwhile(tmp_path, marked_dicom):
    """The checks below rely on this watch; it must see a copy written anywhere under the temp folder."""
    watch = _watch()
    (tmp_path / "copy.bin").write_bytes(marked_dicom[:4096] + marked_dicom[-4096:])
    hits = watch.files_containing(leaks)
    assert str(tmp_path / "copy.bin") in hits


# --- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["--json"], []], ids=["json", "text"])
def test_cli_predict_prints_and_writes_no_identity(run_cli, registry, inputs, mode):
    watch = _watch(registry)
    result = run_cli("predict", inputs / "study.dcm", *mode, checkpoints=registry)
    assert result.returncode == 0, result.stdout + result.stderr
    if mode:  # the film was really read: its reading's label (a review: "PNEUMONIA or NORMAL" in the output held
        line = json.loads(result.stdout.splitlines()[0])  # for any output, the probabilities name both)
        assert line["file"].endswith("study.dcm") and line["label"] in ("NORMAL", "PNEUMONIA")
    else:
        assert re.search(r"study\.dcm: (NORMAL|PNEUMONIA) \[", result.stdout), result.stdout
    assert leaks(result.stdout + result.stderr) == []
    assert watch.files_containing(leaks) == []
    assert _everything_under(registry) == []


def test_cli_evaluate_prints_and_writes_no_identity(run_cli, registry, inputs):
    watch = _watch(registry)
    result = run_cli("evaluate", inputs / "tree", "--json", checkpoints=registry)
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = result.json_lines()
    assert report["n"] == 21 and report["skipped"] == []  # the marked DICOM was evaluated, not skipped
    assert leaks(result.stdout + result.stderr) == []
    assert watch.files_containing(leaks) == []


def test_training_on_a_marked_film_writes_no_identity(run_cli, registry, inputs, tmp_path):
    """Both ways to train: CLI ``train`` (progress on stderr) and a background job (events, log, status)."""
    jobs = tmp_path / "jobs"
    watch = _watch(registry)
    result = run_cli("train", inputs / "tree", "--arch", "mlp", "--epochs", "1", "--image-size", "32",
                     "--no-augment", "--name", "marked", checkpoints=registry)
    assert result.returncode == 0, result.stdout + result.stderr
    assert leaks(result.stdout + result.stderr) == []
    job = start_job(inputs / "tree", TrainConfig(arch="mlp", epochs=1, image_size=32, augment=False),
                    directory=registry, root=jobs)
    done = wait_for(lambda: _ended(job.folder), timeout=300, what="the job")
    assert done.state == SUCCEEDED, done.message
    assert {p.name for p in registry.glob("*.json")} >= {"marked-v1.json", f"{done.model}.json"}
    assert (job.folder / "events.jsonl").stat().st_size > 0 and (job.folder / "log.txt").stat().st_size > 0
    # its log and status name films, its settings the server's data folder: its owner's alone (a review)
    assert {oct(p.stat().st_mode & 0o777) for p in (jobs, job.folder)} == {"0o700"}
    assert _everything_under(registry, jobs) == []
    assert watch.files_containing(leaks) == []


# --- the triage page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(trained_model, marked_dicom, unique_film, tmp_path_factory):
    """One AppTest run of the triage page with both films uploaded; what it drew, served and wrote."""
    root = tmp_path_factory.mktemp("patient-page")
    checkpoints, jobs = corpus.copy_registry(trained_model.directory, root / "checkpoints"), root / "jobs"
    served = []  # every file the page hands the browser: images and the CSV download
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        served.append((filename, mimetype, path_or_data))
        return original(self, path_or_data, mimetype, kind, filename)

    uploads = {"study.dcm": marked_dicom, "chest.png": unique_film}
    with pytest.MonkeyPatch.context() as patch, environment(CXR_MODELS=str(checkpoints), CXR_JOBS=str(jobs)):
        patch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=240)
        at.run()
        watch = _watch(checkpoints)
        at.file_uploader(key="films").set_value([(n, d, "application/octet-stream") for n, d in uploads.items()])
        at.run()
    assert not at.exception, at.exception
    middles = {name: data[len(data) // 2: len(data) // 2 + 64] for name, data in uploads.items()}
    written = {"identity": watch.files_containing(leaks),
               **{name: watch.files_containing(lambda data, chunk=chunk: chunk in data)
                  for name, chunk in middles.items()}}
    return at, served, written, uploads


def _elements(node):
    yield node
    for child in (getattr(node, "children", None) or {}).values():
        yield from _elements(child)


def test_the_page_shows_the_film_but_no_identity(page):
    at, _, _, _ = page
    table = at.dataframe[0].value.set_index("File")
    assert table.loc["study.dcm", "Priority"] in ("Urgent", "Routine", "Not triaged")  # read and predicted
    # the film details (whitelisted tags) are drawn, one line each, names in words
    assert any("- Modality: CR" in m.value for m in at.markdown)
    shown = [node for node in _elements(at._tree) if getattr(node, "proto", None) is not None]
    # the walk sees what the page shows, tables included: the upload's name is in there
    assert any(b"study.dcm" in node.proto.SerializeToString() for node in shown)
    leaking = {type(node).__name__: leaks(node.proto.SerializeToString()) for node in shown
               if leaks(node.proto.SerializeToString())}
    assert leaking == {}
    assert leaks(table.to_csv()) == [] and all(leaks(t.value.to_csv()) == [] for t in at.table)


def test_the_worklist_csv_has_no_identity(page, predictor):
    _, served, _, uploads = page
    (csv,) = [data for filename, _, data in served if filename == "worklist.csv"]
    assert b"study.dcm" in csv
    assert leaks(csv) == []
    # the same function the page calls, on the same uploads
    results = triage_uploads(predictor, [Upload.of(corpus.Upload(n, d)) for n, d in uploads.items()])
    assert leaks(worklist_csv(results, predictor.name)) == []


def test_nothing_the_page_wrote_holds_identity_or_uploaded_bytes(page):
    """``written``: files created or changed during the upload run that hold a marker or an upload's bytes."""
    _, _, written, uploads = page
    assert set(written) == {"identity", *uploads}
    assert written == {key: [] for key in written}


# --- upload names: plain text, neutralised in the CSV ----------------------------------------------------

HOSTILE = '**Doe**, _Jane_ :red[x] $x$ =HYPERLINK("http://e.invalid","open").png'


def test_upload_names_are_plain_text_and_never_a_formula(tmp_path, normal_film_path):
    """A readable film and an unreadable file, both with a name full of Markdown, directives and a formula."""
    served = []
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        served.append((filename, path_or_data))
        return original(self, path_or_data, mimetype, kind, filename)

    broken = "=" + HOSTILE.lstrip("*")  # starts with '=' itself: its error message does too
    checkpoints = quick_checkpoints(tmp_path / "checkpoints")
    with pytest.MonkeyPatch.context() as patch, environment(CXR_MODELS=str(checkpoints),
                                                            CXR_JOBS=str(tmp_path / "jobs")):
        patch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=240)
        at.run()
        at.file_uploader(key="films").set_value([(HOSTILE, normal_film_path.read_bytes(), "image/png"),
                                                 (broken, b"not an image", "image/png")])
        at.run()
    assert not at.exception, at.exception
    assert HOSTILE in [t.value for t in at.text]  # the card's title, as plain text
    assert sorted(at.dataframe[0].value["File"]) == sorted([HOSTILE, broken])  # the grid shows text as is
    markdown = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "subheader", "title")
                for e in at.get(kind)]
    assert not any(HOSTILE in text or broken in text or "open" in text and "[x]" in text for text in markdown)
    assert any(escape_markdown(broken) in e.value for e in at.error)  # named, escaped, in the card's error
    (csv,) = [data for filename, data in served if filename == "worklist.csv"]
    table = pd.read_csv(io.BytesIO(csv), keep_default_na=False)
    assert sorted(table["File"]) == sorted([HOSTILE, "'" + broken])
    assert table.set_index("File").loc["'" + broken, "Warnings"].startswith("'=")
