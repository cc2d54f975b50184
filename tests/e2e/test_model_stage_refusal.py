"""`--model` with a stage that trains is refused the same way by every verb that takes `--model`
(`run --local`, `render`, `submit`): the same one `error:` line, exit 2, nothing rendered, run
or sent. The rule is stated once (`contract.model_ref.check_model_stage`)."""

from __future__ import annotations

import pytest
import yaml

from kubetune.cli.main import main
from kubetune.contract.exitcodes import EXIT_BAD_INPUT

VERBS = (["run", "--local"], ["render"], ["submit", "--kubeconfig", "/nonexistent"])


@pytest.mark.parametrize("stage", [None, "train"], ids=["default-all", "train"])
def test_run_render_and_submit_print_the_same_line(tmp_path, capsys, stage):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "reviews", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                                   "storage": {"root": str(tmp_path / "store")}}))
    lines = {}
    for verb in VERBS:
        code = main([verb[0], str(job), *verb[1:], *(["--stage", stage] if stage else []), "--model", "v0001"])
        out, err = capsys.readouterr()
        assert code == EXIT_BAD_INPUT and out == "", (verb, out, err)
        lines[verb[0]] = err
    shown = stage or "all"
    assert set(lines.values()) == {
        f"error: --model belongs to --stage evaluate or predict, not {shown} (training makes its own model)\n"}, lines
    assert not (tmp_path / "store").exists()
