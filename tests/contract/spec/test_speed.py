"""The speed settings of `train:` (issue 16) in the spec: defaults keep the resolved spec (and so
the rendered manifests) as they were, set values round-trip through the ConfigMap, bad values
and impossible combinations are one line naming the field. No torch: the launcher's side."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetune.contract.spec.job import SpecError, load_spec, validate_spec
from kubetune.launch.render import render_objects

BASE = {"name": "demo", "model": {"source": "models/m"}, "data": {"train": "datasets/d/train.tsv"},
        "storage": {"root": "s3://bucket/prefix"}}
TWO_GPUS = {"nodes": 1, "gpus_per_node": 2}
NEW_FIELDS = ("attention", "gradient_checkpointing", "compile", "tf32", "fsdp", "quantization")


def spec_with(task: str = "text-classification", resources: dict | None = None, **train):
    return validate_spec({**BASE, "task": task, "train": train, "resources": resources or {}})


def error_of(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_defaults_are_todays_behaviour_and_leave_the_resolved_spec_unchanged():
    default = validate_spec(BASE)
    t = default.train
    assert (t.attention, t.gradient_checkpointing, t.compile, t.tf32, t.fsdp, t.quantization) == (
        "sdpa", False, False, None, None, None)
    assert t.dataloader_workers == 0
    dumped = yaml.safe_load(default.to_yaml())["train"]
    assert not set(NEW_FIELDS) & set(dumped)  # the ConfigMap's spec.yaml is as before
    explicit = validate_spec({**BASE, "train": {"attention": "sdpa", "gradient_checkpointing": False,
                                                "compile": False, "tf32": None, "fsdp": None, "quantization": None}})
    assert explicit.to_yaml() == default.to_yaml()
    assert render_objects(explicit) == render_objects(default)  # so the golden manifests hold


def test_set_values_reach_the_pod_through_the_configmap():
    spec = spec_with("causal-lm", {"nodes": 2, "gpus_per_node": 4}, attention="eager", gradient_checkpointing=True,
                     compile=True, tf32=False, dataloader_workers=None,
                     fsdp={"strategy": "hybrid_shard", "cpu_offload": True})
    cm = next(o for o in render_objects(spec) if o["kind"] == "ConfigMap")
    embedded = yaml.safe_load(cm["data"]["spec.yaml"])
    assert validate_spec(embedded) == spec  # the pod reads the same meaning
    train = embedded["train"]
    assert (train["attention"], train["gradient_checkpointing"], train["compile"], train["tf32"]) == (
        "eager", True, True, False)
    assert train["dataloader_workers"] is None  # auto
    assert train["fsdp"] == {"strategy": "hybrid_shard", "auto_wrap": True, "cpu_offload": True}
    qlora = spec_with("causal-lm", quantization="4bit", lora={"r": 4})
    assert yaml.safe_load(qlora.to_yaml())["train"]["quantization"] == "4bit"


@pytest.mark.parametrize("train,field", [
    ({"attention": "flash"}, "train.attention"),
    ({"gradient_checkpointing": "yes"}, "train.gradient_checkpointing"),
    ({"compile": 1}, "train.compile"),
    ({"tf32": "auto"}, "train.tf32"),
    ({"dataloader_workers": -1}, "train.dataloader_workers"),
    ({"fsdp": {"strategy": "zero3"}}, "train.fsdp.strategy"),
    ({"fsdp": {"offload": True}}, "train.fsdp.offload"),
    ({"quantization": "8bit"}, "train.quantization"),
])
def test_bad_values_name_the_field(tmp_path, train, field):
    message = error_of(tmp_path, {**BASE, "train": train, "resources": TWO_GPUS})
    assert field in message, message


@pytest.mark.parametrize("task,resources,train,expected", [
    ("text-classification", None, {"quantization": "4bit", "lora": {}}, "train.quantization: 4bit is for task causal-lm"),
    ("causal-lm", None, {"quantization": "4bit"}, "train.quantization: 4bit needs train.lora"),
    ("text-classification", None, {"fsdp": {}}, "train.fsdp: needs at least 2 GPUs"),
    ("text-classification", {"profile": "gpu-1"}, {"fsdp": {}}, "train.fsdp: needs at least 2 GPUs"),
    ("text-classification", {"nodes": 1, "gpus_per_node": 4}, {"fsdp": {"strategy": "hybrid_shard"}},
     "train.fsdp.strategy: hybrid_shard"),
    ("causal-lm", TWO_GPUS, {"fsdp": {}, "quantization": "4bit", "lora": {}}, "train.quantization: not combinable"),
    ("causal-lm", TWO_GPUS, {"fsdp": {}, "lora": {"merge": True}}, "train.lora.merge: not combinable with train.fsdp"),
])
def test_impossible_combinations_are_refused_at_validate(tmp_path, task, resources, train, expected):
    message = error_of(tmp_path, {**BASE, "task": task, "train": train, "resources": resources or {}})
    assert expected in message, message


def test_possible_combinations_validate():
    assert spec_with("causal-lm", quantization="4bit", lora={}).train.quantization == "4bit"
    assert spec_with(resources=TWO_GPUS, fsdp={}).train.fsdp.strategy == "full_shard"
    assert spec_with("causal-lm", resources=TWO_GPUS, fsdp={}, lora={}).train.lora.merge is False
    assert spec_with(resources={"nodes": 2, "gpus_per_node": 1}, fsdp={"strategy": "hybrid_shard"}).train.fsdp


def test_show_prints_the_speed_settings_a_run_used_on_their_own_line():
    from collections import defaultdict

    from kubetune.cli.runs import show_lines

    summary = {"global_step": 4, "best_metric": 0.5, "speed_settings": {"device": "cpu", "attention": "sdpa",
                                                                          "pad_to_multiple_of": None}}
    lines = show_lines(defaultdict(lambda: None, {"spec": {}, "summary": summary, "checkpoints": []}))
    assert "summary:     global_step 4, best_metric 0.5000" in lines  # no dict squeezed into the summary line
    assert "speed:       device cpu, attention sdpa, pad_to_multiple_of -" in lines
