"""A data error found in the pod names the user's spec file, as the launcher's spec errors do
(issue 12, point 10): the launcher passes the file's name as given on the command line
(names.ENV_SPEC_FILE); the pod's copy of the spec sits at names.SPEC_PATH, a name the user
never wrote. Every case here is refused before the model loads, so no training runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune.contract.names import ENV_SPEC_FILE, SPEC_PATH

ROWS = "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(20))


def kubetune(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubetune.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def write_job(folder: Path, minilm_dir: Path, train: str = "data/good.tsv", validation: str = "data/good.tsv",
              name: str = "named") -> Path:
    (folder / "jobs").mkdir(exist_ok=True)
    spec_file = folder / "jobs" / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": name, "model": {"source": str(minilm_dir)},
        "data": {"train": train, "validation": validation},
        "train": {"max_steps": 2, "batch_size": 4, "max_seq_length": 16},
        "storage": {"root": str(folder / "store")},
    }))
    return spec_file


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "store" / "data"
    data.mkdir(parents=True)
    (data / "good.tsv").write_text("text\tlabel\n" + ROWS)
    (data / "no-label.tsv").write_text("text\tstars\n" + ROWS)
    lines = ROWS.splitlines(keepends=True)
    lines[6] = "a ragged\trow\twith\tfour\n"  # line 8 of the file
    (data / "ragged.tsv").write_text("text\tlabel\n" + "".join(lines))
    return tmp_path


# One error class read while checking columns, one while parsing: the prefix is added where
# every pod error line is printed (workload.errors), so the unseen-label check (validation
# labels that training never saw) ends the same way; each case is a process importing torch.
@pytest.mark.parametrize(("field", "data", "detail"), [
    ("train", "data/no-label.tsv", "column 'label' not in data.train"),
    ("train", "data/ragged.tsv", "Expected 2 fields in line 8, saw 4"),
], ids=["missing-column", "ragged-line"])
def test_a_data_error_in_the_pod_starts_with_the_users_spec_file(folder, minilm_dir, field, data, detail):
    write_job(folder, minilm_dir, **{field: data})
    out = kubetune(folder, "run", "jobs/named.yaml", "--local", "--stage", "train")
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    line = errors[0]
    assert line.startswith("error: jobs/named.yaml: data."), line
    assert f"data.{field}" in line and detail in line, line
    assert SPEC_PATH not in line and "spec.yaml" not in line
    assert not (folder / "store" / "runs").exists()  # refused before anything was written


def test_a_spec_given_by_absolute_path_is_named_as_given(folder, minilm_dir):
    """An absolute path under /tmp (pytest's tmp_path) lies under the pod's /tmp scratch mount;
    the local run must not turn the file's name into its scratch-folder twin (issue 28)."""
    spec_file = write_job(folder, minilm_dir, train="data/no-label.tsv")
    assert str(spec_file).startswith("/tmp/"), spec_file  # the case the issue saw
    out = kubetune(folder, "run", str(spec_file), "--local", "--stage", "train")
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith(f"error: {spec_file}: data."), errors
    assert "scratch" not in errors[0], errors[0]


def pod_env(objs: list[dict]) -> list[dict[str, str]]:
    """The env of every container of every Job in a rendered stream."""
    found = []
    for obj in objs:
        if obj and obj.get("kind") == "Job":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                found.append({e["name"]: e.get("value") for e in container["env"]})
    return found


def test_the_rendered_pods_carry_the_spec_file_as_named(folder, minilm_dir):
    write_job(folder, minilm_dir)
    out = kubetune(folder, "render", "jobs/named.yaml")
    assert out.returncode == 0, out.stderr
    envs = pod_env(list(yaml.safe_load_all(out.stdout)))
    assert len(envs) == 2 and all(env[ENV_SPEC_FILE] == "jobs/named.yaml" for env in envs)
    # The name as given: an absolute path stays absolute.
    absolute = kubetune(folder, "render", str(folder / "jobs" / "named.yaml"))
    assert all(env[ENV_SPEC_FILE] == str(folder / "jobs" / "named.yaml")
               for env in pod_env(list(yaml.safe_load_all(absolute.stdout))))


def test_a_credential_shaped_spec_file_name_is_not_passed_to_the_pod(folder, minilm_dir):
    """A file name is not a secret's place, but when it looks like one it stays off the pod's
    environment (readable by anyone who may read the pod); the errors then name the field."""
    spec_file = write_job(folder, minilm_dir)
    shaped = spec_file.with_name("AKIAIOSFODNN7EXAMPLE.yaml")
    spec_file.rename(shaped)
    out = kubetune(folder, "render", "jobs/AKIAIOSFODNN7EXAMPLE.yaml")
    assert out.returncode == 0, out.stderr
    envs = pod_env(list(yaml.safe_load_all(out.stdout)))
    assert envs and all(ENV_SPEC_FILE not in env for env in envs)
    assert "AKIAIOSFODNN7EXAMPLE" not in out.stdout


def test_a_spec_error_in_the_pod_names_the_users_file_not_the_mounted_copy():
    """The pod reads its spec from the mounted copy (names.ENV_SPEC); a SpecError that starts
    with that path is shown with the user's file instead, never with both, and with no
    variable set (a pod rendered before this variable existed) the line is as it was."""
    from kubetune.contract.names import ENV_SPEC
    from kubetune.workload.entrypoints.arguments import pod_env
    from kubetune.workload.entrypoints.exits import user_line

    assert user_line("data.train: missing", pod_env({ENV_SPEC: SPEC_PATH})) == "data.train: missing"
    env = pod_env({ENV_SPEC: SPEC_PATH, ENV_SPEC_FILE: "jobs/x.yaml"})
    assert user_line(f"{SPEC_PATH}: train.epochs: must be > 0", env) == "jobs/x.yaml: train.epochs: must be > 0"
    assert user_line("data.train: missing", env) == "jobs/x.yaml: data.train: missing"
    assert user_line("jobs/x.yaml: data.train: missing", env) == "jobs/x.yaml: data.train: missing"
