"""Fair sharing of one server: the model's lock goes round in order of asking, batches have limits, and a
session's caches stay within their byte caps and all sessions' caches within one budget.

Orders are made deterministic by waiting until a request is queued (``FairLock.waiting``) before the next
one asks; nothing here asserts a duration. The load benchmark (bench/load.py) measures the timings.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from e2e_support import _template, real_films, wait_for

from core.errors import BatchTooLarge
from core.films.read import read_film
from core.serving.batch_limits import MEGABYTE, check_batch
from core.serving.fair_lock import EXPLANATION, PREDICTION, FairLock
from core.serving.film_cache import BoundedCache, SharedBudget


def _queue(lock: FairLock, order: list[str], requests: list[tuple[str, int]]) -> list[threading.Thread]:
    """Start one thread per (name, kind), each queued before the next asks; each notes when it gets the lock."""
    threads = []
    for name, kind in requests:
        def take(name=name, kind=kind):
            with lock.turn(kind):
                order.append(name)

        before = lock.waiting
        threads.append(threading.Thread(target=take, daemon=True))
        threads[-1].start()
        wait_for(lambda: lock.waiting == before + 1, timeout=10, interval=0.005, what=f"{name} to queue")
    return threads


def test_the_lock_goes_to_requests_in_the_order_they_asked():
    lock, order = FairLock(), []
    lock.acquire()
    threads = _queue(lock, order, [(f"session-{i}", PREDICTION) for i in range(6)])
    assert order == []  # all wait while it is held
    lock.release()
    for thread in threads:
        thread.join(10)
    assert order == [f"session-{i}" for i in range(6)] and lock.waiting == 0


def test_predictions_go_before_explanations_each_in_their_own_order():
    lock, order = FairLock(), []
    lock.acquire()
    threads = _queue(lock, order, [("heat-map-1", EXPLANATION), ("film-a", PREDICTION), ("heat-map-2", EXPLANATION),
                                   ("film-b", PREDICTION)])
    lock.release()
    for thread in threads:
        thread.join(10)
    assert order == ["film-a", "film-b", "heat-map-1", "heat-map-2"]


def test_a_session_asking_again_at_once_waits_behind_one_already_waiting():
    """What a plain lock gets wrong: the thread that just released it usually takes it again at once, so a
    session working through a batch kept the model from everyone else until its batch was done."""
    lock, order = FairLock(), []
    lock.acquire()
    (other,) = _queue(lock, order, [("other session", PREDICTION)])
    lock.release()
    with lock.turn():  # the batch's next film, asked for the moment the last one ended
        order.append("batch")
    other.join(10)
    assert order == ["other session", "batch"]


def test_a_waiter_interrupted_in_its_wait_gives_up_its_place():
    """Otherwise its ticket would stay first in the queue and nobody would ever get the model again."""
    lock = FairLock()
    lock.acquire()
    real_wait = lock._condition.wait

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    lock._condition.wait = interrupted
    with pytest.raises(KeyboardInterrupt):
        lock.acquire(EXPLANATION)  # held: it waits, and the wait is interrupted
    lock._condition.wait = real_wait
    assert lock.waiting == 0
    lock.release()
    got = threading.Event()
    threading.Thread(target=lambda: (lock.acquire(), got.set(), lock.release())).start()
    assert got.wait(10)


def test_releasing_a_lock_nobody_holds_is_an_error():
    with pytest.raises(RuntimeError):
        FairLock().release()


def test_sessions_triaging_at_once_take_turns_film_by_film():
    """Two sessions on one real predictor: the one that starts while the other is in the middle of a
    10-film batch gets its 3 films without waiting for that batch to finish (as it did when a lock was held
    for a whole batch); the turns go round film by film."""
    from core.serving.predict import Predictor
    from core.store.checkpoints import load_checkpoint

    predictor = Predictor(load_checkpoint(_template() / "pneumonia-cnn5-v1.json"))
    films = [read_film(path) for path in real_films()[:10]]
    for film in films:
        predictor.predict(film)  # every film's reference form made once: the runs below only wait for turns
    done: list[str] = []
    second_started = threading.Event()

    def session(name: str, batch: list, after: int = 0):
        for film in batch:
            predictor.predict(film)
            done.append(name)
            if name == "first" and done.count("first") == after:
                second_started.set()

    first = threading.Thread(target=session, args=("first", films, 2), daemon=True)
    first.start()
    second_started.wait(120)
    session("second", films[:3])
    first.join(120)
    assert done.count("first") == 10 and done.count("second") == 3
    finished_second = len(done) - done[::-1].index("second")
    # fair turns: while the second session ran, the first got about one film per film of the second
    assert done[:finished_second].count("first") <= 2 + 3 + 1, done


@pytest.mark.parametrize("limits, sizes, words", [
    ({"CXR_BATCH_MAX_FILMS": "3"}, [1000] * 4, "4 films (at most 3)"),
    ({"CXR_BATCH_MAX_MB": "2"}, [MEGABYTE] * 3, "3 MB (at most 2 MB)"),
    ({"CXR_BATCH_MAX_FILMS": "1", "CXR_BATCH_MAX_MB": "1"}, [MEGABYTE] * 2, "2 films (at most 1) and 2 MB"),
    ({"CXR_BATCH_MAX_MB": "250"}, [250 * MEGABYTE, MEGABYTE // 2], "250.5 MB (at most 250 MB)"),  # never 250 of 250
    ({"CXR_BATCH_MAX_MB": "250"}, [250 * MEGABYTE, 1], "250.1 MB (at most 250 MB)"),  # rounded up
])
def test_a_batch_past_a_limit_is_refused_in_words(settings_env, limits, sizes, words):
    settings_env(**limits)
    with pytest.raises(BatchTooLarge) as refused:
        check_batch(sizes)
    assert words in str(refused.value) and "None of its films was triaged" in str(refused.value)
    check_batch(sizes[:1])  # the same films, fewer: allowed
    with pytest.raises(BatchTooLarge, match=r"too large: 3 films \(at most 2\)"):
        settings_env(CXR_BATCH_MAX_FILMS="2")
        check_batch([1000], not_received=2)  # films the server did not take in belong to the batch chosen
    with pytest.raises(BatchTooLarge, match=r"too large: 3 films \(at most 1\) and at least 2 MB"):
        settings_env(CXR_BATCH_MAX_FILMS="1", CXR_BATCH_MAX_MB="1")
        check_batch([MEGABYTE] * 2, not_received=1)  # their sizes never reached the server: a lower bound


def test_batch_limits_come_from_the_environment_and_are_checked(settings_env):
    from core import config
    from core.errors import SettingOutOfRange

    assert (config.settings().batch_max_films, config.settings().batch_max_mb) == (50, 250)
    settings_env(CXR_BATCH_MAX_FILMS="12", CXR_BATCH_MAX_MB="40")
    assert (config.settings().batch_max_films, config.settings().batch_max_mb) == (12, 40)
    for bad in ("0", "many", "1001"):  # past 1,000 a batch outgrows what a session keeps (a resource review)
        with pytest.raises(SettingOutOfRange, match="CXR_BATCH_MAX_FILMS|number of films"):
            config.reload({"CXR_BATCH_MAX_FILMS": bad})
    config.reload()


def _results_cache_cap():
    import streamlit as st

    from dashboard.state import session_cache

    st.write(str(session_cache("triage-results").max_bytes))


def test_a_session_keeps_the_results_of_a_whole_batch(settings_env):
    """Found by a resource review: 128 MB of results (about 120 display copies) held less than a batch of 300
    films, so every rerun of such a batch read the films past them again."""
    from streamlit.testing.v1 import AppTest

    from core.limits import RESULT_BYTES, SESSION_RESULT_CACHE_BYTES

    for films, least in (("50", SESSION_RESULT_CACHE_BYTES), ("300", 300 * RESULT_BYTES)):
        settings_env(CXR_BATCH_MAX_FILMS=films)
        at = AppTest.from_function(_results_cache_cap).run()
        assert not at.exception and int(at.markdown[0].value) == least


def test_a_session_cache_keeps_within_its_byte_cap_and_forgets_on_request():
    cache = BoundedCache(max_bytes=3000, size_of=lambda value: value.nbytes)
    for i in range(5):
        cache.put(("film", i), np.zeros(1000, np.uint8))
        assert cache.nbytes <= 3000
    assert cache.keys() == [("film", 2), ("film", 3), ("film", 4)]  # least recently used went first
    assert cache.get(("film", 2)) is not None and cache.keys()[-1] == ("film", 2)
    assert cache.get_or_compute(("film", 9), lambda: np.zeros(4000, np.uint8)).nbytes == 4000
    assert ("film", 9) not in cache  # larger than the whole cap: handed back, not kept
    cache.keep_only(lambda key: key[1] % 2 == 0)
    assert cache.keys() == [("film", 4), ("film", 2)] and cache.nbytes == 2000


def _kilobyte() -> np.ndarray:
    return np.zeros(1000, np.uint8)


def test_sessions_caches_keep_within_one_budget_each_evicting_only_its_own():
    import gc

    budget = SharedBudget(max_bytes=3000)
    first, second = (BoundedCache(max_bytes=2000, size_of=lambda value: value.nbytes, budget=budget)
                     for _ in range(2))
    first.put("a", _kilobyte())
    first.put("b", _kilobyte())
    second.put("c", _kilobyte())
    assert budget.held == 3000
    second.put("d", _kilobyte())  # past the budget: the second session gives up its own oldest, not the first's
    assert (first.keys(), second.keys(), budget.held) == (["a", "b"], ["d"], 3000)
    third = BoundedCache(max_bytes=2000, size_of=lambda value: value.nbytes, budget=budget)
    assert third.get_or_compute("e", _kilobyte).nbytes == 1000 and "e" not in third  # used, not kept: no room
    first.keep_only(lambda key: key == "a")  # a film leaving one upload box frees room for the others
    third.put("e", _kilobyte())
    assert (third.keys(), budget.held) == (["e"], 3000)
    del second
    gc.collect()  # a session that ends frees its share
    third.put("f", _kilobyte())
    assert (third.keys(), budget.held) == (["e", "f"], 3000)



def test_a_session_gone_quiet_gives_its_room_up_to_one_that_needs_it(monkeypatch):
    """First come kept the budget for ever: tabs left open made every other session compute its batch again on
    each click. A cache unused for IDLE_S is emptied, longest unused first, and only as far as needed."""
    from core.serving import film_cache

    clock = [1000.0]
    monkeypatch.setattr(film_cache.time, "monotonic", lambda: clock[0])
    budget = SharedBudget(max_bytes=3000)
    idle, older, busy, newcomer = (BoundedCache(max_bytes=2000, size_of=lambda value: value.nbytes, budget=budget)
                                   for _ in range(4))
    older.put("o", _kilobyte())
    clock[0] += 10
    idle.put("i", _kilobyte())
    busy.put("b", _kilobyte())
    clock[0] += film_cache.IDLE_S - 15  # none idle long enough yet: no room
    assert newcomer.get_or_compute("n", _kilobyte).nbytes == 1000 and "n" not in newcomer
    clock[0] += 25  # older and idle are now idle; busy too, but it is used
    busy.get("b")
    newcomer.put("n", _kilobyte())
    assert (older.keys(), idle.keys(), busy.keys(), newcomer.keys()) == ([], ["i"], ["b"], ["n"])
    assert budget.held == 3000

def test_a_batch_past_the_budget_keeps_its_first_results_and_gives_up_its_decoded_films_first():
    """Found by a review: with the budget full, a session whose results fitted 38 of its 50 films evicted the
    oldest for each new one, so every run (each click) read all 50 films again; and its decoded films, only needed
    for Grad-CAM, kept room its results (a decode and a prediction each) could have had."""
    budget = SharedBudget(max_bytes=40_000)
    other = BoundedCache(max_bytes=100_000, size_of=lambda value: value.nbytes, budget=budget)
    other.put("elsewhere", np.zeros(20_000, np.uint8))  # another session's, active
    films = BoundedCache(max_bytes=100_000, size_of=lambda value: value.nbytes, budget=budget)
    results = BoundedCache(max_bytes=100_000, size_of=lambda value: value.nbytes, budget=budget,
                           takes_room_from=(films,))
    films.put("decoded", np.zeros(5_000, np.uint8))
    computed = []
    for model in ("a", "a", "b"):  # two runs of the page with one model, then one after a switch to another
        for n in range(25):
            results.get_or_compute((model, n), lambda n=n: computed.append((model, n)) or _kilobyte(),
                                   wanted=lambda key: key[0] == model)
    assert computed[25:30] == [("a", n) for n in range(20, 25)]  # the second run read only the 5 that did not fit
    assert computed[30:] == [("b", n) for n in range(25)]
    assert results.keys() == [("b", n) for n in range(20)]  # the other model's results made room for this one's
    assert films.keys() == [] and other.keys() == ["elsewhere"] and budget.held == budget.max_bytes


def test_every_session_cache_of_the_app_counts_against_the_servers_one_budget(monkeypatch):
    from dashboard import state

    session_state: dict = {}
    monkeypatch.setattr(state.st, "session_state", session_state)
    caches = [state.session_films(), state.session_cache("triage-results"), state.session_cache("heat-maps")]
    assert [cache.budget for cache in caches] == [state.SESSION_CACHES] * 3
    assert [cache.takes_room_from for cache in caches] == [(), (caches[0],), (caches[0],)]  # decoded films go first
    assert state.SESSION_CACHES.max_bytes == 2 * 2**30
