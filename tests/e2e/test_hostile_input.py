"""Careless or hostile input (issue 12): spec bombs, non-finite numbers, secrets in values,
paths that climb out of the store, objects the API server would reject. Each is one `error:`
line, exit code 2, no traceback, and the store tree byte for byte unchanged. Almost all of
these are refused by the launcher before any process that imports torch starts."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from helpers import run_cli
from helpers_bad_input import ROWS, base_job, mutate, tree_digest

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def store(tmp_path_factory, minilm_dir) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "store"
    shutil.copytree(minilm_dir, root / "models" / "all-MiniLM-L6-v2")
    data = root / "datasets" / "toy"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("text\tlabel\n" + ROWS)
    (data / "test.tsv").write_text("text\tlabel\n" + "".join(ROWS.splitlines(keepends=True)[:10]))
    done = root / "runs" / "finished"
    done.mkdir(parents=True)
    (done / "spec.yaml").write_text("name: finished\n")
    return root


def refused(store: Path, spec_file: Path, *args: str, expected: str = "", verb: str = "run",
            max_seconds: float | None = None) -> str:
    """Run a verb on the spec; assert exit 2, one `error:` line, no traceback, store unchanged,
    and (`max_seconds`) how long the command took, Python's start included. Returns the line."""
    before = tree_digest(store)
    extra = ("--local",) if verb == "run" else ()
    start = time.monotonic()
    out = run_cli(verb, str(spec_file), *extra, *args)
    elapsed = time.monotonic() - start
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert expected in errors[0], errors[0]
    assert tree_digest(store) == before
    if max_seconds is not None:
        assert elapsed < max_seconds, f"{elapsed:.1f}s"
    return errors[0]


def write_job(tmp_path: Path, job: dict) -> Path:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    return spec_file


# -- 1: alias bombs and huge files, refused fast --------------------------------------------------

def alias_bomb(levels: int, under: str = "") -> str:
    lines = ['a0: &a0 {x: ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]}']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}")
    body = "\n".join(lines)
    if under:  # the bomb inside a field, e.g. kubernetes.affinity
        body = "\n".join("    " + line for line in lines)
        return f"{under}\n{body}\n"
    return body + "\n"


@pytest.mark.parametrize("verb", ["validate", "render", "run"])
@pytest.mark.parametrize("where", ["top-level", "affinity"])
def test_alias_bomb_refused_fast(store, tmp_path, verb, where):
    job = base_job(store, "bomb")
    head = yaml.safe_dump(job)
    if where == "affinity":
        text = head + alias_bomb(9, "kubernetes:\n  affinity:")
    else:
        text = head + alias_bomb(9)
    assert len(text) < 4096
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(text)
    refused(store, spec_file, expected="aliases expanded", verb=verb, max_seconds=5)


def test_fifty_megabyte_spec_refused_fast(store, tmp_path):
    spec_file = tmp_path / "job.yaml"
    # Dumped with a short placeholder, then widened: PyYAML's pure-Python emitter spends tens of
    # seconds on a scalar this long (43 s for 5 MB measured here, on 2 busy cores).
    job = mutate(base_job(store, "huge"), "kubernetes.annotations", {"note": "NOTE-PLACEHOLDER"})
    text = yaml.safe_dump(job, width=1 << 30).replace("NOTE-PLACEHOLDER", "x" * (50 * 1024 * 1024))
    spec_file.write_text(text)
    assert spec_file.stat().st_size > 50 * 1024 * 1024
    for verb in ("validate", "render", "run"):
        refused(store, spec_file, expected="larger than 1024 KiB", verb=verb, max_seconds=5)


def test_deeply_nested_yaml(store, tmp_path):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: x\nextra: " + "[" * 200_000 + "\n")
    refused(store, spec_file, expected="nested more than", verb="validate", max_seconds=10)


def test_aliases_within_bounds_still_load(store, tmp_path):
    spec_file = tmp_path / "job.yaml"
    job = base_job(store, "aliases")
    text = yaml.safe_dump(job) + "kubernetes:\n  node_selector: &sel {pool: gpu}\n  labels: *sel\n"
    spec_file.write_text(text)
    out = run_cli("validate", str(spec_file))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["kubernetes"]["labels"] == {"pool": "gpu"}


# -- 2: numbers finite and strict -----------------------------------------------------------------

NUMBERS = [
    ("train.learning_rate", float("inf"), "train.learning_rate: Input should be a finite number"),
    ("train.epochs", float("inf"), "train.epochs: Input should be a finite number"),
    ("train.weight_decay", float("nan"), "train.weight_decay: Input should be a finite number"),
    ("data.validation_split", float("nan"), "data.validation_split:"),
    ("train.batch_size", True, "train.batch_size: Input should be a valid integer"),
    ("train.max_steps", 3.0, "train.max_steps: Input should be a valid integer"),
    ("train.seed", False, "train.seed: Input should be a valid integer"),
    ("train.epochs", True, "train.epochs: Input should be a valid number"),
    ("train.lora.r", True, "train.lora.r: Input should be a valid integer"),
    ("kubernetes.backoff_limit", False, "kubernetes.backoff_limit:"),
    ("resources.nodes", "2", "resources.nodes: must be a node count such as 2, or a range such as {min: 1, max: 4} (got '2')"),
]


@pytest.mark.parametrize("case", NUMBERS, ids=[f"{c[0]}={c[1]!r}" for c in NUMBERS])
def test_numbers_finite_and_strict(store, tmp_path, case):
    path, value, expected = case
    spec_file = write_job(tmp_path, mutate(base_job(store, "numbers"), path, value))
    refused(store, spec_file, expected=expected)
    assert not (store / "runs" / "numbers").exists()


def test_ints_still_accepted_as_floats(store, tmp_path):
    job = mutate(base_job(store, "ints"), "train.learning_rate", 1)
    out = run_cli("validate", str(write_job(tmp_path, job)))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["train"]["learning_rate"] == 1.0


# -- 4: files that are not text, schemes nobody reads ---------------------------------------------

@pytest.mark.parametrize("verb", ["validate", "render", "run"])
def test_spec_not_utf8_or_binary(store, tmp_path, verb):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(yaml.safe_dump(base_job(store, "latin")).encode() + b"# caf\xe9\n")
    line = refused(store, latin1, expected="not a UTF-8 text file (bad byte at offset", verb=verb)
    assert str(latin1) in line
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    refused(store, binary, expected=str(binary), verb=verb)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"name: x\x00\x00\x00\n")
    refused(store, nul, expected="a binary file", verb=verb)


SCHEMES = [("storage.root", "ftp://host/prefix", verb) for verb in ("validate", "render", "run")] + [
    ("storage.root", "nosuchscheme://bucket/x", "run"),
    ("data.train", "gopher://host/train.tsv", "run"),
    ("model.source", "hdfs://nn/models/x", "render"),
]


@pytest.mark.parametrize("field,value,verb", SCHEMES)
def test_unsupported_scheme(store, tmp_path, field, value, verb):
    spec_file = write_job(tmp_path, mutate(base_job(store, "scheme"), field, value))
    refused(store, spec_file, expected=f"{field}: unsupported scheme", verb=verb)


# -- 5: secrets in values --------------------------------------------------------------------------

SECRETS = [
    ("kubernetes.annotations", {"backup-key": AWS_SECRET}, "kubernetes.annotations.backup-key", AWS_SECRET),
    ("kubernetes.annotations", {"note": f"creds={AWS_KEY_ID}"}, "kubernetes.annotations.note", AWS_KEY_ID),
    ("kubernetes.labels", {"owner": AWS_KEY_ID}, "kubernetes.labels.owner", AWS_KEY_ID),
    ("storage.endpoint_url", f"http://{AWS_KEY_ID}:{AWS_SECRET}@minio:9000", "storage.endpoint_url", AWS_SECRET),
    ("storage.endpoint_url", "https://admin:hunter2@minio:9000", "storage.endpoint_url", "hunter2"),
    ("data.train", "s3://user:pw12345@bucket/train.tsv", "data.train", "pw12345"),
    ("kubernetes.tolerations", [{"key": "a", "value": AWS_SECRET}], "kubernetes.tolerations[0].value", AWS_SECRET),
]


# Every verb reads the spec through the same load_spec: all three for the first case, one for the rest.
SECRET_RUNS = [(case, verb) for case in SECRETS for verb in (("validate", "render", "run") if case is SECRETS[0] else ("run",))]


@pytest.mark.parametrize("case,verb", SECRET_RUNS, ids=[f"{c[2]}-{v}" for c, v in SECRET_RUNS])
def test_secret_values_refused_and_never_echoed(store, tmp_path, case, verb):
    path, value, field, secret = case
    spec_file = write_job(tmp_path, mutate(base_job(store, "secrets"), path, value))
    line = refused(store, spec_file, expected=f"{field}: looks like", verb=verb)
    assert secret not in line


def test_secret_screen_spares_commit_hashes_and_paths(store, tmp_path):
    job = base_job(store, "not-secrets")
    job["model"]["revision"] = "0123456789abcdef0123456789abcdef01234567"
    job["kubernetes"] = {"annotations": {"team": "ml-platform", "ticket": "https://tracker.example.com/ML-1234"}}
    out = run_cli("validate", str(write_job(tmp_path, job)))
    assert out.returncode == 0, out.stderr


# -- 6: paths stay under storage.root --------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("data.train", "datasets/../../../../etc/passwd"),
    ("data.test", "datasets/toy/../../../outside.tsv"),
    ("model.source", "models/../../elsewhere"),
    ("data.validation", "datasets/../.."),  # normalises to ".." (a bare ".." is an explicit local path, like "../x")
])
def test_store_paths_do_not_escape_the_root(store, tmp_path, field, value):
    # A file just outside the store, which an escaping path would reach.
    (store.parent / "outside.tsv").write_text("text\tlabel\nTOP-SECRET-LINE\tpos\n")
    spec_file = write_job(tmp_path, mutate(base_job(store, "escape"), field, value))
    line = refused(store, spec_file, expected=f"{field}: a path relative to storage.root must stay under it")
    assert "root:" not in line and "TOP-SECRET-LINE" not in line


# -- 9: objects the API server would reject -------------------------------------------------------

API_CASES = [
    ("kubernetes.annotations", {"note": "x" * (300 * 1024)}, "kubernetes.annotations:", "256 KiB"),
    ("kubernetes.annotations", {"bad key!": "x"}, "kubernetes.annotations: key 'bad key!'", ""),
    ("kubernetes.annotations", {"Example.COM/x": "y"}, "prefix must be a DNS subdomain", ""),
    ("kubernetes.annotations", {"a/" + "b" * 64: "y"}, "kubernetes.annotations: key", ""),
    ("image", "Registry.example.com/Kubetune:latest ", "image: not a valid image reference", ""),
    ("image", "ghcr.io/kubetune/kubetune:bad tag", "image: not a valid image reference", ""),
    ("image", "ghcr.io/kubetune/kubetune@sha256:xyz", "image: not a valid image reference", ""),
    ("kubernetes.tolerations", [{"key": "gpu", "operator": "Maybe"}], "kubernetes.tolerations: [0].operator", ""),
    ("kubernetes.tolerations", [{"key": "gpu", "effect": "NoWay"}], "kubernetes.tolerations: [0].effect", ""),
    ("kubernetes.image_pull_policy", "Sometimes", "kubernetes.image_pull_policy: must be one of", ""),
]


@pytest.mark.parametrize("case", API_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(API_CASES)])
def test_render_refuses_what_the_api_server_rejects(store, tmp_path, case):
    path, value, expected, also = case
    spec_file = write_job(tmp_path, mutate(base_job(store, "api"), path, value))
    line = refused(store, spec_file, expected=expected, verb="render", max_seconds=10)
    assert also in line


def test_valid_images_and_annotations_render(store, tmp_path):
    for image in ("ghcr.io/kubetune/kubetune:0.1.0", "localhost:5000/kt", "python:3.11-slim",
                  "registry.example.com/team/kt@sha256:" + "a" * 64):
        job = base_job(store, "fine")
        job["image"] = image
        job["kubernetes"] = {"annotations": {"example.com/owner": "ml", "note": "x" * 1000}}
        out = run_cli("render", str(write_job(tmp_path, job)))
        assert out.returncode == 0, (image, out.stderr)


# -- 11: a refused run creates nothing ------------------------------------------------------------

def test_refused_run_creates_no_storage_root(store, tmp_path):
    """Refused in the pod (the data file is missing), after the launcher's checks passed."""
    root = tmp_path / "new-root" / "store"
    job = base_job(store, "no-root")
    job["storage"] = {"root": str(root)}
    job["model"]["source"] = str(store / "models" / "all-MiniLM-L6-v2")
    job["data"] = {"train": "datasets/none.tsv"}
    spec_file = write_job(tmp_path, job)
    refused(store, spec_file, expected="data.train:")
    assert not (tmp_path / "new-root").exists()


# -- 3: a mistyped store model path is not a Hub id ------------------------------------------------

@pytest.mark.parametrize("source,expected", [
    ("models/does-not-exist", "model.source: "),
    ("models/sub/does-not-exist", "model.source: "),
    ("not a hub id!", "is not a Hugging Face Hub id"),
])
def test_missing_store_model_is_one_line_before_anything_is_written(store, tmp_path, source, expected):
    spec_file = write_job(tmp_path, mutate(base_job(store, "mistyped-model"), "model.source", source))
    line = refused(store, spec_file, expected=expected, max_seconds=60)
    assert "folder not found" in line or "Hub id" in line
    assert not (store / "runs" / "mistyped-model").exists()


# -- 10: data parse errors carry their detail -----------------------------------------------------

def test_data_parse_errors_carry_the_detail(store, tmp_path):
    """Refused in the pod, before the model loads: the line says where the file is broken,
    without quoting it."""
    lines = (ROWS * 2).splitlines(keepends=True)
    lines[49] = "a ragged\trow\twith\tfour\n"  # line 51 of the file, after the header
    (tmp_path / "ragged.tsv").write_text("text\tlabel\n" + "".join(lines))
    latin1 = ("text\tlabel\n" + ROWS[:300]).encode() + "caf\xe9 cr\xe8me\tpos\n".encode("latin-1")
    (tmp_path / "latin1.tsv").write_bytes(latin1)
    job = base_job(store, "parse-detail")
    job["data"]["train"] = str(tmp_path / "ragged.tsv")
    line = refused(store, write_job(tmp_path, job), expected="Expected 2 fields in line 51, saw 4")
    assert str(tmp_path / "ragged.tsv") in line and "data.train" in line
    job["data"]["train"] = str(tmp_path / "latin1.tsv")
    offset = latin1.index("\xe9".encode("latin-1"))
    line = refused(store, write_job(tmp_path, job), expected=f"invalid byte at offset {offset}")
    assert "latin1.tsv is not UTF-8 text" in line and "caf" not in line


# -- 7: predictions never replace their input -----------------------------------------------------

def test_predict_output_equal_to_input_is_refused(store, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a fine movie"}\n')
    before = rows.read_bytes()
    spec_file = write_job(tmp_path, base_job(store, "finished"))
    refused(store, spec_file, "--stage", "predict", "--input", str(rows), "--output", str(rows),
            expected="is the input")
    assert rows.read_bytes() == before


# -- 8: one writer per run folder -----------------------------------------------------------------

HOLD_LEASE = """
import sys, time
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.lease import RunLease
RunLease(Store(sys.argv[1]), RunLayout(sys.argv[2]), 3, holder="holder-process").acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_concurrent_run_of_one_job_is_refused_naming_the_holder(store, tmp_path):
    """A live writer (another process renewing the run's lease) holds `runs/busy-run/`: the
    second run waits one lease period, then stops with one line and writes nothing."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(store), "busy-run"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        spec_file = write_job(tmp_path, mutate(base_job(store, "busy-run"), "storage.lease_seconds", 3))
        out = run_cli("run", str(spec_file), "--local")
        assert out.returncode == 2, out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
        assert "run 'busy-run'" in errors[0] and "holder-process" in errors[0]
        assert sorted(p.name for p in (store / "runs" / "busy-run").iterdir()) == ["LEASE.json"]
    finally:
        holder.kill()
        holder.wait()
        (store / "runs" / "busy-run" / "LEASE.json").unlink(missing_ok=True)
        (store / "runs" / "busy-run").rmdir()


def test_evaluate_refuses_a_spec_the_run_was_not_trained_with(store, tmp_path):
    """`runs/finished/` was trained with another spec: evaluating it with this one would put
    scores of different settings into its eval/metrics.json."""
    from kubetune.contract.spec.job import validate_spec

    trained_with = validate_spec(mutate(base_job(store, "finished"), "train.learning_rate", 1e-3))
    (store / "runs" / "finished" / "spec.yaml").write_text(trained_with.to_yaml())
    try:
        spec_file = write_job(tmp_path, base_job(store, "finished"))
        refused(store, spec_file, "--stage", "evaluate", expected="was trained with a different train;")
    finally:
        (store / "runs" / "finished" / "spec.yaml").write_text("name: finished\n")


def test_predict_never_replaces_the_users_own_parts(store, tmp_path):
    """An output folder holding files kubetune did not write (named like its parts) is refused,
    and every file in it survives byte for byte."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a fine movie"}\n')
    out_dir = tmp_path / "mine"
    out_dir.mkdir()
    (out_dir / "part-00003.jsonl").write_text('{"mine": 3}\n')
    (out_dir / "part-00009.parquet").write_bytes(b"PAR1 not really\x00\x01")
    (out_dir / "part-00000.jsonl").write_text('{"mine": 0}\n')
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    spec_file = write_job(tmp_path, base_job(store, "finished"))
    refused(store, spec_file, "--stage", "predict", "--input", str(rows), "--output", str(out_dir),
            expected="--output")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_spec_too_big_for_a_configmap_is_refused_by_render(store, tmp_path):
    """A small file whose aliases expand into a resolved spec over 1 MiB (what a ConfigMap
    holds): render refuses it with one line instead of printing an object the API server
    rejects."""
    head = yaml.safe_dump(base_job(store, "configmap"))
    lines = ["kubernetes:", "  node_selector:", f"    k0: &long {'v' * 1000}"]
    lines += [f"    k{i}: *long" for i in range(1, 1200)]
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(head + "\n".join(lines) + "\n")
    assert spec_file.stat().st_size < 64 * 1024
    refused(store, spec_file, expected="a ConfigMap holds at most 1048576", verb="render", max_seconds=30)
