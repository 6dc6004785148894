"""State shared by the server's threads (found by a review of concurrency).

cuDNN's flags belong to the process: GPU inference in several threads at once must not undo each other's fp32.
``inference_kernels`` entered ``cudnn.flags`` per call, which puts back on leaving what it found on entering;
the first thread to leave switched TF32 back on while a second was still inside its fp32 inference
(probabilities shift, and a film near the threshold can change priority). No GPU is needed: the flags are plain
process state, set and read the same way without one.

A film's reference form is computed once per film, and one film's (a few hundred ms at 50 megapixels) does not
hold up another's: functools.cached_property on Python 3.11 took one lock for every film.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import torch

from core.films import film as film_module
from core.films.film import Film
from core.models.device import FP32, inference_kernels

GPU = torch.device("cuda", 0)


def test_two_threads_inferring_on_a_gpu_at_once_each_keep_exact_fp32(monkeypatch):
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "allow_tf32", True)  # as training leaves it; restored after the test
    inside, leave, seen = threading.Event(), threading.Event(), []

    def first():
        with inference_kernels(GPU, FP32):
            inside.set()
            leave.wait(10)

    def second():
        inside.wait(10)
        with inference_kernels(GPU, FP32):
            seen.append(cudnn.allow_tf32)
            time.sleep(0.2)  # the first leaves meanwhile, when it was let in beside it
            seen.append(cudnn.allow_tf32)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(10)
    time.sleep(0.3)  # a second thread let in beside the first has recorded its first reading by now
    early = list(seen)
    leave.set()
    for thread in threads:
        thread.join(10)
    assert early == []  # it waited for the first to leave
    assert seen == [False, False] and cudnn.allow_tf32  # exact fp32 all through, and the flags back after


def test_one_films_reference_form_does_not_wait_for_anothers(monkeypatch):
    slow, fast = (Film(np.full((64, 64), value, np.float32), "PNG", (64, 64), 8) for value in (0.25, 0.75))
    started, release = threading.Event(), threading.Event()
    real = film_module.reference_form

    def reference_form(pixels, jpeg):
        if pixels[0, 0] == 0.25:  # the slow film's: held until released
            started.set()
            release.wait(10)
        return real(pixels, jpeg=jpeg)

    monkeypatch.setattr(film_module, "reference_form", reference_form)
    holder = threading.Thread(target=lambda: slow.model_pixels)
    holder.start()
    try:
        assert started.wait(10)
        done = []
        other = threading.Thread(target=lambda: done.append(fast.model_pixels))
        other.start()
        other.join(5)
        assert len(done) == 1  # not held up by the slow film
    finally:
        release.set()
        holder.join(10)
    assert slow.model_pixels is slow.model_pixels and fast.model_pixels is done[0]  # once per film
