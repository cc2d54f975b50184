"""The model registry (issue 14) against real stores: a local folder and the moto S3 server over
HTTP, fake-gcs-server and Azurite. No training: runs are folders with a committed model, as the train stage leaves them."""

from __future__ import annotations

import threading

import pytest

from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.retrain import GuardSpec, PromotionSpec
from kubetune.registry import Registry, RegistryError, create_exclusive
from kubetune.registry.gate import GateError, decide
from kubetune.storage import Store


def _run(store: Store, name: str, fingerprint: str = "f") -> str:
    layout = RunLayout(name)
    store.write_text(f"{layout.model}/config.json", "{}")
    store.write_json(layout.lineage, {"data_fingerprint": fingerprint})
    store.commit(layout.model, ["config.json"])
    return name


def _decision(value: float) -> dict:
    return {"promote": True, "reason": f"accuracy {value}", "candidate": {"accuracy": value}}


def _stores(tmp_path, request) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    if request.param in ("gcs", "azure"):  # real servers on loopback: fake-gcs-server, Azurite
        _, bucket = request.getfixturevalue("gcs_bucket" if request.param == "gcs" else "azure_container")
        return Store(f"{'gs' if request.param == 'gcs' else 'az'}://{bucket}/root")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/root", endpoint)


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def store(tmp_path, request) -> Store:
    return _stores(tmp_path, request)


def test_exclusive_create_lets_exactly_one_writer_win(store):
    assert create_exclusive(store, "x/one.json", {"a": 1}) is True
    assert create_exclusive(store, "x/one.json", {"a": 2}) is False
    assert store.read_json("x/one.json") == {"a": 1}


def test_promote_then_rollback_moves_current_and_records_both(store):
    registry = Registry(store, "job")
    assert registry.current() is None
    first = registry.promote(_run(store, "r1"), _decision(0.7), None)
    assert (first.promoted, first.version) == (True, "v0001")
    second = registry.promote(_run(store, "r2"), _decision(0.8), registry.current())
    assert second.version == "v0002" and registry.current()["version"] == "v0002"
    assert registry.version("v0002")["lineage"] == {"data_fingerprint": "f"}
    assert registry.model_run("current") == RunLayout("r2")
    assert registry.model_run("v0001") == RunLayout("r1")
    moved = registry.rollback()
    assert (moved["version"], moved["previous"]) == ("v0001", "v0002")
    assert store.read_json(registry.layout.current)["version"] == "v0001"
    assert [h["action"] for h in registry.history()] == ["promote", "promote", "rollback"]


def test_two_promotions_racing_end_with_one_current_and_both_in_history(store):
    registry = Registry(store, "job")
    registry.promote(_run(store, "r0"), _decision(0.6), None)
    base = registry.current()
    runs = [_run(store, f"r{i}") for i in (1, 2)]
    barrier = threading.Barrier(2)
    outcomes = {}

    def promote(run: str) -> None:
        barrier.wait()
        outcomes[run] = Registry(store, "job").promote(run, _decision(0.9), base)

    threads = [threading.Thread(target=promote, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r, o in outcomes.items() if o.promoted]
    assert len(winners) == 1
    current = registry.current()
    assert current["run"] == winners[0] and current["generation"] == 2
    assert store.read_json(registry.layout.current) == current
    entries = [h for h in registry.history() if h["run"] in runs]
    assert sorted((h["run"], h["promoted"]) for h in entries) == sorted((r, r in winners) for r in runs)
    loser = next(h for h in entries if not h["promoted"])
    assert "CURRENT moved" in loser["reason"]
    # Both versions were registered with distinct numbers; only one became current.
    assert sorted(o.version for o in outcomes.values()) == ["v0002", "v0003"]


def test_a_crash_after_the_pointer_leaves_a_valid_current(tmp_path):
    store = Store(str(tmp_path / "store"))
    registry = Registry(store, "job")
    registry.promote(_run(store, "r1"), _decision(0.7), None)
    registry.promote(_run(store, "r2"), _decision(0.8), registry.current())
    # A writer that died between its pointer and the CURRENT mirror: CURRENT still says v0002.
    create_exclusive(store, registry.layout.pointer(3), {"generation": 3, "version": "v0001", "run": "r1",
                                                         "previous": "v0002"})
    assert store.read_json(registry.layout.current)["version"] == "v0002"
    assert registry.current()["version"] == "v0001"


def test_rollback_without_an_earlier_version_is_a_user_error(tmp_path):
    store = Store(str(tmp_path / "store"))
    registry = Registry(store, "job")
    with pytest.raises(RegistryError, match="no current version"):
        registry.rollback()
    registry.promote(_run(store, "r1"), _decision(0.7), None)
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        registry.rollback("v0009")
    assert registry.current()["version"] == "v0001"


def test_promoting_a_run_without_a_committed_model_is_refused(tmp_path):
    store = Store(str(tmp_path / "store"))
    with pytest.raises(RegistryError, match="no committed model"):
        Registry(store, "job").promote("missing", _decision(0.7), None)
    assert Registry(store, "job").current() is None


def test_gate_promotes_only_a_strictly_better_candidate_that_passes_every_guard():
    rule = PromotionSpec(metric="accuracy", min_delta=0.01, min={"accuracy": 0.6},
                         guards=[GuardSpec(metric="f1_class_neg", min=0.5), GuardSpec(metric="f1_macro", max_drop=0.02)])
    cur = {"accuracy": 0.80, "f1_class_neg": 0.7, "f1_macro": 0.80}
    better = {"accuracy": 0.82, "f1_class_neg": 0.7, "f1_macro": 0.79}
    assert decide(rule, better, cur, "v0001")["promote"] is True
    assert decide(rule, {**better, "accuracy": 0.805}, cur, "v0001")["promote"] is False  # < min_delta
    worse_class = decide(rule, {**better, "f1_class_neg": 0.4}, cur, "v0001")
    assert worse_class["promote"] is False  # the refusal gives both numbers (issue 28)
    assert worse_class["reason"] == "failed guard f1_class_neg min (0.4000 < 0.5000)"
    dropped = decide(rule, {**better, "f1_macro": 0.70}, cur, "v0001")
    assert dropped["promote"] is False and dropped["reason"] == "failed guard f1_macro max_drop (dropped 0.1000 > 0.0200)"
    floor = decide(rule, {**better, "accuracy": 0.5, "f1_class_neg": 0.4}, None)
    assert floor["reason"] == "failed min accuracy (0.5000 < 0.6000), guard f1_class_neg min (0.4000 < 0.5000)"
    assert decide(rule, better, None)["promote"] is True  # first version: floors only
    assert decide(rule, {**better, "accuracy": 0.5}, None)["promote"] is False
    equal = PromotionSpec(metric="accuracy")
    assert decide(equal, cur, cur, "v0001")["promote"] is False  # a tie never churns the version
    with pytest.raises(GateError, match="promotion.metric"):
        decide(PromotionSpec(metric="bleu"), better, cur, "v0001")


@pytest.mark.parametrize("how", ("flipped", "truncated", "missing"))
def test_a_model_whose_files_do_not_match_its_marker_is_never_promoted(store, tmp_path, how):
    """Issue 23, point 1: the registry reads the model back and refuses it, naming the file;
    CURRENT does not move and no version is registered."""
    from helpers_damage import damage
    from kubetune.integrity import commit_verified

    registry = Registry(store, "job")
    first = _run(store, "good")
    assert registry.promote(first, _decision(0.8), None).promoted
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 512)
    (folder / "config.json").write_text("{}")
    commit_verified(store, RunLayout("damaged").model, folder)
    damage(store, f"{RunLayout('damaged').model}/model.safetensors", how)
    with pytest.raises(RegistryError, match=r"runs/damaged/model: not promoted: its files do not match its "
                                            r"COMMITTED marker \(model\.safetensors: "):
        registry.promote("damaged", _decision(0.9), registry.current())
    assert registry.current()["version"] == "v0001" and registry.version_names() == ["v0001"]
