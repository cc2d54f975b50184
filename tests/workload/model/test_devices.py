"""`train.precision: auto` on a CPU: bf16 autocast where the CPU has bf16 matrix units, fp32
where it would only emulate them (issue 30); both answers of the detection, the choice and its
reason recorded where the run says what it used."""

from __future__ import annotations

import pytest
import torch

from kubetune.workload.model import devices
from kubetune.workload.model.devices import Precision, cpu_bf16_unit, inference_autocast, resolve_precision

# What torch's cpuinfo reports (torch._C._cpu._get_cpu_capability()), cut to the flags that matter.
SAPPHIRE_RAPIDS = {"avx512_f": True, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True}
ZEN4 = {"avx512_f": True, "avx512_bf16": True, "amx_tile": False, "amx_bf16": False}
ICE_LAKE = {"avx512_f": True, "avx512_bf16": False, "amx_tile": False, "amx_bf16": False}
ARM_OR_OLD = {"avx2": True}


@pytest.mark.parametrize("capabilities, unit", [
    (SAPPHIRE_RAPIDS, "amx_bf16"), (ZEN4, "avx512_bf16"), (ICE_LAKE, None), (ARM_OR_OLD, None), ({}, None),
])
def test_the_bf16_units_are_read_from_the_cpu_capabilities(capabilities, unit):
    assert cpu_bf16_unit(capabilities) == unit


def test_this_machines_answer_is_torchs_own():
    flags = torch._C._cpu._get_cpu_capability()
    expected = "amx_bf16" if flags.get("amx_bf16") else "avx512_bf16" if flags.get("avx512_bf16") else None
    assert cpu_bf16_unit() == expected


@pytest.mark.parametrize("unit, name", [("amx_bf16", "bf16"), ("avx512_bf16", "bf16"), (None, "fp32")])
def test_auto_on_a_cpu_follows_its_bf16_units(unit, name):
    chosen = resolve_precision("auto", cuda=False, cuda_bf16=False, cpu_unit=unit)
    assert chosen.name == name
    assert chosen.reason.startswith("auto:") and (unit or "no bf16 units") in chosen.reason


@pytest.mark.parametrize("cuda_bf16, name", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_is_unchanged_whatever_the_cpu(cuda_bf16, name):
    assert resolve_precision("auto", cuda=True, cuda_bf16=cuda_bf16, cpu_unit="amx_bf16").name == name


@pytest.mark.parametrize("requested", ["fp32", "bf16", "fp16"])
def test_a_precision_set_in_the_spec_wins(requested):
    for unit in ("avx512_bf16", None):
        chosen = resolve_precision(requested, cuda=False, cuda_bf16=False, cpu_unit=unit)
        assert chosen == Precision(requested, "set in the spec (train.precision)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_training_arguments_and_prediction_follow_the_choice(monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_unit", lambda capabilities=None: "avx512_bf16")
    assert devices.precision_flags("auto") == {"bf16": True, "fp16": False}
    with inference_autocast("auto"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_bf16_unit", lambda capabilities=None: None)
    assert devices.precision_flags("auto") == {"bf16": False, "fp16": False}
    with inference_autocast("auto"):
        assert not torch.is_autocast_enabled("cpu")
    with inference_autocast("bf16"):  # forced: autocast even where the units are emulated
        assert torch.is_autocast_enabled("cpu")
