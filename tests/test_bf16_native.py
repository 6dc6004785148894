"""bf16 training only where the hardware computes it natively (a review of the device policy): oneDNN's check says
yes for any AVX-512 CPU and torch's CUDA check for any GPU that can hold bf16, where it runs emulated and slower."""
from __future__ import annotations

import pytest
import torch

from core.models import device as device_policy
from core.models.device import BF16, FP32, bf16_supported, resolve_precision


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_a_cpu_trains_in_bf16_by_itself_only_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # a Cascade Lake says yes
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert device_policy.cpu_has_bf16() is native
    precision, note = resolve_precision("auto", torch.device("cpu"))
    assert precision == (BF16 if native else FP32) and (note is None) == native


def test_a_gpu_before_ampere_trains_in_fp32_and_each_process_asks_about_its_own_gpu(monkeypatch):
    asked = []
    capability = {0: (8, 0), 1: (7, 5)}  # an A100 and a T4 in one machine
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: asked.append(device) or
                        capability[device.index])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts for torch
    assert bf16_supported(torch.device("cuda", 0)) and not bf16_supported(torch.device("cuda", 1))
    assert asked == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert resolve_precision("auto", torch.device("cuda", 1)) == (FP32, "training in fp32: cuda has no native bf16")
