"""Shared fixtures: where the real films are, an isolated checkpoints folder, one trained model per session.

Real films live in ``../shared/data`` beside the checkout (or ``$CXR_DATA``). When they are missing the
tests that need them fail under ``CI=true`` and skip elsewhere, from one place: :func:`require`.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `pytest` run from anywhere still imports this checkout's core
    sys.path.insert(0, str(REPO))

DATA_DIR = Path(os.environ.get("CXR_DATA") or REPO.parent / "shared" / "data").resolve()

# The session model: small enough to train in well under a minute on 2 CPU cores, good enough to be
# clearly better than chance. Measured with seed 0 (see test_training.py for the margins).
TRAIN_CONFIG = dict(arch="cnn5", epochs=3, image_size=64, max_films=400, seed=0)


def require(path: Path) -> Path:
    """``path`` when it exists; otherwise fail under CI (the data must be there) and skip elsewhere."""
    if path.exists():
        return path
    message = (f"real test data {path} is missing: put ../shared/data beside the checkout "
               "or point CXR_DATA at it")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def differences(got, stored, tolerance: float = 2e-6, where: str = "") -> list[str]:
    """Where two JSON-like values part: counts, names and shapes exactly, real numbers within ``tolerance``.

    A report recomputed from the same weights on the same films agrees with the stored one to float
    rounding, not to the bit: another CPU's kernels sum in another order (AVX-512 vs AMX moved
    probabilities by ~1e-7, and a ROC threshold rounded to 6 decimals then by 1e-6). A film crossing
    the threshold, a changed count or a reordered curve is still a difference.
    """
    if isinstance(got, dict) and isinstance(stored, dict):
        if set(got) != set(stored):
            return [f"{where or '.'}: keys {sorted(set(got) ^ set(stored))}"]
        return [d for key in got for d in differences(got[key], stored[key], tolerance, f"{where}.{key}")]
    if isinstance(got, list) and isinstance(stored, list):
        if len(got) != len(stored):
            return [f"{where}: {len(got)} items != {len(stored)}"]
        return [d for i, (a, b) in enumerate(zip(got, stored)) for d in differences(a, b, tolerance, f"{where}[{i}]")]
    if isinstance(got, float) or isinstance(stored, float):
        if isinstance(got, (int, float)) and isinstance(stored, (int, float)) \
                and not isinstance(got, bool) and abs(got - stored) <= tolerance:
            return []
    elif got == stored and type(got) is type(stored):
        return []
    return [f"{where}: {got!r} != {stored!r}"]


_EXIT: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT["status"] = int(exitstatus)


def _exit_before_native_teardown() -> None:
    """The test process ends with pytest's own status once its report is out, before native libraries' static
    destructors run: now and then (about 1 run in 10 of tests/test_cam_display.py on this 2-core machine under
    load) one aborted the finished process ("terminate called without an active exception", exit 134) after every
    test had passed, a joinable thread pool torn down at exit (the pattern of apache/arrow#34314; Streamlit hands
    dataframes to pyarrow). Registered at import: the last exit handler to run, after the others'."""
    if "status" in _EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])


atexit.register(_exit_before_native_teardown)


def pytest_collection_modifyitems(items):
    """Anything that needs the session model trains it: mark it ``slow`` (pytest.ini's marker)."""
    for item in items:
        if "trained_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA_DIR)


@pytest.fixture(scope="session")
def films_dir(data_dir) -> Path:
    """The 16 full-resolution Kermany validation films, ``NORMAL/`` and ``PNEUMONIA/``."""
    return require(data_dir / "films")


@pytest.fixture(scope="session")
def kermany_train(data_dir) -> Path:
    return require(data_dir / "kermany-224" / "train")


@pytest.fixture(scope="session")
def dicom_dir(data_dir) -> Path:
    return require(data_dir / "dicom")


@pytest.fixture(scope="session")
def normal_film_path(films_dir) -> Path:
    return require(films_dir / "NORMAL" / "NORMAL2-IM-1430-0001.jpeg")


@pytest.fixture(scope="session")
def pneumonia_film_path(films_dir) -> Path:
    return require(films_dir / "PNEUMONIA" / "person1946_bacteria_4874.jpeg")


@pytest.fixture(scope="session")
def plain_film(normal_film_path) -> Image.Image:
    """A real film as 8-bit grey, reduced to 320 x 260 (not square, so rotations show) to keep tests fast."""
    with Image.open(normal_film_path) as image:
        return image.convert("L").resize((320, 260), Image.Resampling.BILINEAR)


@contextmanager
def environment(**variables: str):
    """Set environment variables and re-read core.config (which reads the environment once); undo both after."""
    from core import config

    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update({name: str(value) for name, value in variables.items()})
    config.reload()
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        config.reload()


@pytest.fixture
def settings_env():
    """``settings_env(CXR_JOBS=..., ...)``: environment variables for one test, seen by core.config."""
    with ExitStack() as stack:
        yield lambda **variables: stack.enter_context(environment(**variables))


@pytest.fixture(scope="session", autouse=True)
def isolated_checkpoints(tmp_path_factory):
    """Point both tiers of the registry at empty folders for the whole session (the shipped one is this
    fixture's value, the site one :func:`isolated_site_models`): neither the repo's checkpoints/ nor the
    user's ~/.local/share is ever written."""
    empty = tmp_path_factory.mktemp("no-models")
    with environment(CXR_CHECKPOINTS=str(empty), CXR_MODELS=str(tmp_path_factory.mktemp("site-models")),
                     CXR_DECODE_CACHE=str(tmp_path_factory.mktemp("decode-cache"))):
        yield empty


@pytest.fixture(scope="session")
def isolated_site_models(isolated_checkpoints) -> Path:
    """The session's site models folder (``CXR_MODELS``): where training writes when no folder is named."""
    return Path(os.environ["CXR_MODELS"])


# The session's models validate on a few dozen films; the promotion floor's own tests set the real one.
TEST_PROMOTION_MIN_FILMS = 2


@pytest.fixture(scope="session", autouse=True)
def isolated_audit_log(tmp_path_factory) -> Path:
    """The audit log (``CXR_AUDIT_LOG``) in a temporary folder for the whole session, never the user's, and a
    promotion floor the session's small models clear (``CXR_PROMOTION_MIN_FILMS``)."""
    log = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    with environment(CXR_AUDIT_LOG=str(log), CXR_PROMOTION_MIN_FILMS=str(TEST_PROMOTION_MIN_FILMS)):
        yield log


@dataclass(frozen=True)
class TrainedModel:
    directory: Path
    json_path: Path
    record: object  # core.store.records.ModelRecord
    events: tuple  # core.training.events.ProgressEvent, in order

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def weights_path(self) -> Path:
        return self.json_path.with_suffix(".pt")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, kermany_train) -> TrainedModel:
    """ONE cnn5 trained on a small real subset, shared by the training, predict, CLI and checkpoint tests."""
    from core.store.records import TrainConfig
    from core.training.train import train

    directory = tmp_path_factory.mktemp("trained")
    events: list = []
    record = train(kermany_train, TrainConfig(**TRAIN_CONFIG), directory=directory, on_progress=events.append)
    return TrainedModel(directory, directory / f"{record.name}.json", record, tuple(events))


@pytest.fixture(scope="session")
def predictor(trained_model):
    from core.serving.predict import Predictor
    from core.store.checkpoints import load_checkpoint

    return Predictor(load_checkpoint(trained_model.json_path))


@pytest.fixture
def copied_model(trained_model, tmp_path) -> Path:
    """A private copy of the session model's files (JSON, weights, population check; tests that corrupt files
    use this); the JSON path."""
    for source in trained_model.directory.glob(f"{trained_model.json_path.stem}.*"):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    return tmp_path / trained_model.json_path.name


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory):
    """Run ``python -m core ...`` in a fresh process from an unrelated working directory."""
    elsewhere = tmp_path_factory.mktemp("cli-cwd")

    def run(*args, checkpoints: Path) -> CliResult:
        """``checkpoints``: the site models folder (``CXR_MODELS``); the shipped one stays the session's empty one."""
        env = {**os.environ, "CXR_MODELS": str(checkpoints), "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(autouse=True)
def local_browser_session(monkeypatch):
    """AppTest sessions have no connection, which the dashboard does not trust (core.access): pages under test
    act as a browser on this machine unless a test says otherwise (tests/test_access_pages.py)."""
    if "streamlit" in sys.modules:
        from core.access.policy import RequestFacts
        from dashboard.components import access

        monkeypatch.setattr(access, "request_facts", lambda: RequestFacts.of("127.0.0.1", {"Host": "localhost"}))


_MAIN = sys.modules["__main__"]


@pytest.fixture(autouse=True)
def main_module_restored():
    """AppTest leaves ``sys.modules["__main__"]`` as the last page script it ran; a process started later with
    the spawn method (torch.multiprocessing, as tests/test_distributed.py starts its ranks) would run that page
    again as its own main module. Each test ends with pytest's own main module back."""
    yield
    sys.modules["__main__"] = _MAIN


@pytest.fixture
def audit(tmp_path, settings_env) -> Path:
    """A private audit log (the promotion tests read what was written)."""
    log = tmp_path / "audit.jsonl"
    settings_env(CXR_AUDIT_LOG=str(log))
    return log


@pytest.fixture
def registry(trained_model, tmp_path) -> Path:
    """A private copy of the session model's folder: the model and its task's default pointer."""
    import corpus

    return corpus.copy_registry(trained_model.directory, tmp_path / "models")
