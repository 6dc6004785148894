"""The process behind one background training job: ``python -m core.job_runner JOB_DIR``.

It reads ``config.json``, marks the job running, calls :func:`core.train.train` with every progress event
appended to ``events.jsonl``, and always leaves a final state in ``status.json`` before releasing the job
lock. SIGTERM (Cancel) sets a flag that ``should_stop`` reads between training steps, so ``train()`` raises
``TrainingCancelled`` and writes nothing; while films are still being decoded nothing has been written
either, so the process simply records the cancellation and exits at once.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from core.errors import TriageError
from core.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, release_lock, write_status


class JobRunner:
    def __init__(self, folder: Path):
        self.folder = folder
        self.settings = json.loads((folder / "config.json").read_text())
        self.cancel_requested = False
        self.training_started = False
        self.finishing = False

    def should_stop(self) -> bool:
        return self.cancel_requested or (self.folder / "cancel").exists()

    def on_signal(self, signum: int, frame) -> None:
        self.cancel_requested = True
        if self.finishing:
            return
        self.log("Cancel requested.")
        if not self.training_started:
            # Still starting or decoding films: nothing is written yet, so stopping here is clean.
            self.finish(CANCELLED, "Training was cancelled before it started; nothing was saved.")
            os._exit(0)

    def log(self, message: str) -> None:
        with open(self.folder / "log.txt", "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')}  {message}\n")

    def emit(self, event: dict) -> None:
        if event.get("phase") == "train":
            self.training_started = True
        with open(self.folder / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**event, "time": time.time()}) + "\n")
            handle.flush()
        self._log_event(event)

    def _log_event(self, event: dict) -> None:
        phase = event.get("phase")
        if phase in ("note", "loading") and "message" in event:
            self.log(event["message"][:1].upper() + event["message"][1:] + ".")
        elif phase == "epoch":
            self.log(f"Epoch {event['epoch']}/{event['epochs']}: training loss {event['train_loss']:.4f}, "
                     f"validation loss {event['val_loss']:.4f}, validation AUC {event['val_auc']:.4f}.")
        elif phase == "done":
            self.log(f"Validation AUC of the new model: {event['auc'] or float('nan'):.3f}.")

    def finish(self, state: str, message: str, **fields) -> None:
        self.finishing = True
        write_status(self.folder, state, message=message, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     **fields)
        self.log(message)
        release_lock(self.folder.parent, self.folder.name)

    def run(self) -> int:
        settings = self.settings
        config = settings["config"]
        write_status(self.folder, RUNNING, pid=os.getpid(), started_epoch=time.time(), message="Training.")
        self.log(f"Job {settings['job_id']}: {config['arch']}, {config['epochs']} epoch(s), "
                 f"{config['image_size']} px, on {settings['data_dir']}.")
        if self.should_stop():
            self.finish(CANCELLED, "Training was cancelled before it started; nothing was saved.")
            return 0
        from core.train import TrainConfig, TrainingCancelled, train  # torch loads after the status is written

        try:
            json_path = train(settings["data_dir"], TrainConfig(**config), name=settings.get("name"),
                              directory=Path(settings["checkpoints"]), on_progress=self.emit,
                              should_stop=self.should_stop, job_id=self.folder.name)
        except TrainingCancelled as exc:
            self.finish(CANCELLED, str(exc))
            return 0
        except TriageError as exc:
            self.finish(FAILED, f"Training failed: {exc}")
            return 1
        except Exception as exc:  # the process boundary: any failure must reach the page as a status
            traceback.print_exc(file=sys.stderr)
            self.finish(FAILED, f"Training stopped with an unexpected error ({type(exc).__name__}: {exc}). "
                                f"Nothing was registered. Details for an operator: {self.folder / 'runner.stderr'}.")
            return 1
        metadata = json.loads(json_path.read_text())
        late = " (the cancel request came after training had finished)" if self.cancel_requested else ""
        self.finish(SUCCEEDED, f"Registered {metadata['name']} as a new version{late}.", model=metadata["name"],
                    summary=_summary(metadata))
        return 0


def _summary(metadata: dict) -> dict:
    report = metadata.get("report", {})
    keys = ("n", "auc", "auc_ci", "accuracy", "accuracy_ci", "sensitivity", "sensitivity_ci",
            "specificity", "specificity_ci", "threshold")
    return {**{k: report.get(k) for k in keys}, "seconds": metadata.get("training", {}).get("seconds")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.job_runner JOB_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0]).resolve()
    runner = JobRunner(folder)
    signal.signal(signal.SIGTERM, runner.on_signal)
    signal.signal(signal.SIGINT, runner.on_signal)
    try:
        os.nice(5)  # the dashboard stays responsive while the job trains
    except OSError:
        pass
    try:
        return runner.run()
    finally:
        release_lock(folder.parent, folder.name)


if __name__ == "__main__":
    sys.exit(main())
