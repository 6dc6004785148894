"""The bootstrap's resamples within memory for a large folder (core.evaluation.metrics), found by a resource review:
the 1000 resamples of a 100,000-film folder took 2.4 GB at their peak (the draws, their counts and the weights,
8 bytes a film and resample each), after the progress bar had shown every film read."""
from __future__ import annotations

import tracemalloc

import numpy as np

from core.evaluation.metrics import _bootstrap_indices, _bootstrap_weights


def test_resample_weights_are_counted_a_block_at_a_time_as_four_byte_floats():
    tracemalloc.start()
    try:
        weights, peak = _bootstrap_weights(10_000, seed=0), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert weights.nbytes == 40e6 and peak < 70e6  # 240 MB before
    drawn = _bootstrap_indices(10_000, seed=0)  # the same draws as ever: every figure stays as it was
    for row in (0, 7, 999):
        assert np.array_equal(weights[row], np.bincount(drawn[row], minlength=10_000))
