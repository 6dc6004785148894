"""bench/reproduce.py's comparison of shipped and retrained weights (the retraining itself is the benchmark)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reproduce import compare  # noqa: E402


def test_weights_are_compared_tensor_by_tensor_in_the_shipped_precision():
    shipped = {"w": torch.tensor([0.5, 0.25], dtype=torch.float16), "n": torch.tensor(3)}
    assert compare(shipped, {"w": torch.tensor([0.5, 0.25]), "n": torch.tensor(3)}) == ("bit-identical", 0.0)
    verdict, largest = compare(shipped, {"w": torch.tensor([0.5, 0.375]), "n": torch.tensor(3)})
    assert verdict == "1 of 2 tensors differ" and largest == 0.125
    verdict, largest = compare(shipped, {"w": torch.tensor([0.5, 0.25])})
    assert verdict == "different tensors" and math.isnan(largest)
    verdict, _ = compare(shipped, {"w": torch.tensor([0.5, 0.25, 0.0]), "n": torch.tensor(3)})
    assert verdict == "w: shape (2,) vs (3,)"


def test_the_recorded_training_folder_is_read_where_cxr_data_puts_the_shared_films(tmp_path, settings_env):
    """A record's ``../shared/data/...`` was passed as it stands: with the films moved (CXR_DATA) the bench
    retrained on a folder that is not there, or on another copy."""
    from bench.reproduce import training_folder

    settings_env(CXR_DATA=str(tmp_path / "films"))
    record = {"training": {"data_dir": "../shared/data/kermany-224/train"}}
    assert training_folder(record) == str(tmp_path / "films" / "kermany-224" / "train")
