"""A job's events.jsonl is parsed as it grows (core.jobs.event_log): a redraw of the Retrain page parses only the
lines added since the last one (a review: every 2 s it re-parsed a long run's whole file, about 0.6 s of CPU for
26,000 steps), and a file replaced, truncated or rewritten is read afresh."""
from __future__ import annotations

import os

import pytest

import core.jobs.event_log as event_log
from core.jobs.event_log import read_events
from core.training.events import StepEvent


def _line(step: int, loss: float = 0.5) -> str:
    return StepEvent(epoch=1, epochs=1, step=step, steps=5000, loss=loss, progress=step / 5000,
                     eta_seconds=1.0).model_dump_json() + "\n"


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """The lines parse_event was given."""
    seen: list[str] = []
    real = event_log.parse_event

    def counted(line: str):
        seen.append(line)
        return real(line)

    monkeypatch.setattr(event_log, "parse_event", counted)
    return seen


def test_a_growing_file_is_parsed_only_where_it_grew(tmp_path, parses):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(_line(k) for k in range(1, 3001)))
    assert [e.step for e in read_events(path)] == list(range(1, 3001)) and len(parses) == 3000
    with path.open("a") as log:
        log.write(_line(3001) + _line(3002)[:30])  # the runner is mid-line
    assert [e.step for e in read_events(path)][-1] == 3001 and len(parses) == 3001  # the torn line waits
    with path.open("a") as log:
        log.write(_line(3002)[30:])
    events = read_events(path)
    assert [e.step for e in events] == list(range(1, 3003)) and len(parses) == 3002
    assert read_events(path) == events and len(parses) == 3002  # unchanged: nothing parsed again


@pytest.mark.parametrize("change", ["rewritten in place", "truncated", "replaced"])
def test_a_file_that_did_not_just_grow_is_read_afresh(tmp_path, change):
    path = tmp_path / "events.jsonl"
    path.write_text(_line(1) + _line(2))
    assert [e.loss for e in read_events(path)] == [0.5, 0.5]
    if change == "rewritten in place":  # the same file, longer, other lines: not an append
        inode = path.stat().st_ino
        path.write_text(_line(1, 0.9) + _line(2, 0.9) + _line(3, 0.9))
        assert path.stat().st_ino == inode
        expected = [0.9, 0.9, 0.9]
    elif change == "truncated":
        path.write_text(_line(1, 0.7))
        expected = [0.7]
    else:
        other = tmp_path / "other.jsonl"
        other.write_text(_line(5, 0.1) + _line(6, 0.2) + _line(7, 0.3))
        os.replace(other, path)
        expected = [0.1, 0.2, 0.3]
    assert [e.loss for e in read_events(path)] == expected


def test_past_the_read_cap_the_latest_lines_are_kept_as_the_file_grows(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    monkeypatch.setattr(event_log, "MAX_PROGRESS_BYTES", len(_line(1000)) * 50 + 7)  # cuts into a line
    path.write_text("".join(_line(k) for k in range(1000, 1100)))
    first = read_events(path)
    assert first[-1].step == 1099 and 48 <= len(first) <= 50
    with path.open("a") as log:
        log.write("".join(_line(k) for k in range(1100, 1200)))
    later = read_events(path)
    assert later[-1].step == 1199 and len(later) <= 100 and all(e.step > 1090 for e in later)


def test_progress_reads_only_the_events_added_since_the_last_redraw(tmp_path, monkeypatch):
    """A security review: every viewer's redraw (every 2 s per open Retrain page) built a point for each of a long
    run's steps again, 0.4 s of CPU for 170,000 of them. Progress now grows with the events, and reads as a fresh
    reading of all of them does."""
    import core.jobs.progress as progress
    from core.jobs.progress import CURVE_POINTS, StepLoss, job_progress, thinned

    path = tmp_path / "events.jsonl"
    path.write_text("".join(_line(k, loss=1.0 / k) for k in range(1, 3001)))
    first = job_progress(read_events(path), now=0.0)
    with path.open("a") as log:
        log.write("".join(_line(k, loss=1.0 / k) for k in range(3001, 4001)))
    events = read_events(path)
    added = []
    add = progress._Read.add
    monkeypatch.setattr(progress._Read, "add", lambda self, new: added.append(len(new) - self.count) or add(self, new))
    grown = job_progress(events, now=0.0)
    assert added == [1000]  # the 3,000 steps read before are not read again
    assert first.text.endswith("step 3000 of 5000") and grown.text.endswith("step 4000 of 5000")
    fresh = job_progress([event.model_copy() for event in events], now=0.0)  # other objects: read whole
    assert added == [1000, 4000] and fresh == grown and len(grown.step_losses) == CURVE_POINTS
    steps = thinned([StepLoss(e.epoch - 1 + e.step / e.steps, e.loss) for e in events])
    assert [v for p in grown.step_losses for v in (p.epoch, p.loss)] == pytest.approx(
        [v for p in steps for v in (p.epoch, p.loss)], rel=1e-12)
