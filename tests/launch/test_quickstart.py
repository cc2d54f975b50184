"""`prepare-quickstart`'s data (issue 27, point 5): SST-2 from the Hub when it answers (here a
local server that answers as the Hub does), with its source, licence and rows recorded beside
the files; the synthetic sentences when it does not, or when asked not to ask, saying so."""

from __future__ import annotations

import json

from helpers_hub import SST2, add_sst2

from kubetune.launch.quickstart import HUB_TRAIN_ROWS, SYNTHETIC_NOTE, prepare


def _read(root, name: str) -> list[str]:
    return (root / "datasets" / "quickstart" / name).read_text().splitlines()


def test_the_hub_sample_is_sst2_at_one_commit_with_its_licence(hub_endpoint, shared_data, tmp_path, capsys):
    repo = add_sst2(hub_endpoint, shared_data, repo_id=SST2, train=HUB_TRAIN_ROWS + 200, validation=120)
    asked = len(hub_endpoint.requests)  # the server is the session's: earlier tests' reads are not this one's
    provenance = prepare(str(tmp_path / "store"), hub=True)
    root = tmp_path / "store"
    assert provenance == json.loads((root / "datasets" / "quickstart" / "provenance.json").read_text())
    assert provenance["synthetic"] is False and provenance["licence"] == "unknown"
    assert provenance["source"] == f"hf://datasets/{SST2}@{repo.refs['main']}"
    assert provenance["rows"] == {"train": HUB_TRAIN_ROWS, "test": 120}
    train, test = _read(root, "train.tsv"), _read(root, "test.tsv")
    assert len(train) == HUB_TRAIN_ROWS + 1 and len(test) == 121
    sentences = {" ".join(line.split("\t")[0].split())
                 for line in (shared_data / "sst2" / "train.tsv").read_text().splitlines()}
    assert all(line.split("\t")[0] in sentences for line in train[1:50])  # real rows, not templates
    assert "licence: unknown" in capsys.readouterr().out
    # The files were read at the commit, never at the moving branch.
    reads = [path for _, path in hub_endpoint.requests[asked:] if "/resolve/" in path and SST2 + "/" in path]
    assert reads and all(f"/resolve/{repo.refs['main']}/" in path for path in reads)


def test_without_the_hub_the_sentences_are_synthetic_and_say_so(hub_endpoint, tmp_path, capsys):
    asked = len(hub_endpoint.requests)
    assert prepare(str(tmp_path / "store"), hub=False)["note"] == SYNTHETIC_NOTE
    assert len(hub_endpoint.requests) == asked  # --offline: the Hub is not asked
    assert len(_read(tmp_path / "store", "train.tsv")) == 401
    assert SYNTHETIC_NOTE in capsys.readouterr().out
