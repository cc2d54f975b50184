"""`kubetune runs` and `kubetune show` say which checkpoints are damaged (issue 23, point 1):
those a resume set aside, with the reason it recorded, and committed ones whose files are
missing or cut short. A real store (moto's S3 server over HTTP) with real damage; no training."""

from __future__ import annotations

import json

from helpers_damage import damage
from kubetune.cli.main import main
from kubetune.contract.layout import RunLayout
from kubetune.integrity import set_aside
from kubetune.storage import Store
from kubetune.workload.checkpointing.protocol import publish_checkpoint

RUN = "sst2-damaged"


def test_runs_and_show_name_the_damaged_checkpoints(s3_bucket, tmp_path, capsys):
    endpoint, bucket = s3_bucket
    root = f"s3://{bucket}/team"
    store, layout = Store(root, endpoint), RunLayout(RUN)
    store.write_text(layout.spec, "name: sst2-damaged\ntask: text-classification\nmodel: {source: m}\n")
    for step in (4, 8, 12):
        local = tmp_path / f"checkpoint-{step}"
        local.mkdir()
        (local / "model.safetensors").write_bytes(bytes([step]) * 1000)
        publish_checkpoint(store, layout, local, step, keep=3)
    set_aside(store, layout.checkpoint(12), layout.damaged_checkpoint(12), "model.safetensors: missing")
    damage(store, f"{layout.checkpoint(8)}/model.safetensors", "truncated")

    assert main(["runs", "--store", root, "--endpoint-url", endpoint]) == 0
    table = capsys.readouterr().out
    assert "2 damaged checkpoint(s)" in table, table
    assert main(["show", RUN, "--store", root, "--endpoint-url", endpoint]) == 0
    shown = capsys.readouterr().out
    assert "damaged:     step-000012 (set aside in damaged/): model.safetensors: missing" in shown, shown
    assert "damaged:     step-000008 (still in checkpoints/): model.safetensors: 500 bytes, the marker says 1000" in shown
    assert main(["show", RUN, "--store", root, "--endpoint-url", endpoint, "--json"]) == 0
    damaged = json.loads(capsys.readouterr().out)["damaged_checkpoints"]
    assert [(d["checkpoint"], d["set_aside"]) for d in damaged] == [("step-000012", True), ("step-000008", False)]
