"""Every name the launcher and the pod must agree on is spelled once, in kubetune.contract.

Outside `src/kubetune/contract/`, no string (docstrings and f-string parts included) and no
comment may spell a `KUBETUNE_*` variable, one of our label or annotation keys, an in-pod path
or an entrypoint module: code uses the constant from `kubetune.contract.names`, and prose names
the constant (`ENV_RUN`), which cannot drift from its value the way a copied literal can.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from kubetune.contract import names

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "kubetune"
CONTRACT = PACKAGE / "contract"

FORBIDDEN = re.compile(
    "|".join(
        [
            r"KUBETUNE_",
            r"\bJOB_COMPLETION_INDEX\b",
            r"kubetune\.io/",
            r"batch\.kubernetes\.io/",
            r"kueue\.x-k8s\.io/",
            r"/etc/kubetune",
            r"/var/run/secrets/kubetune",
            r"kubetune\.workload\.entrypoints",
            r"kubetune\.distrun\b",
            # the entrypoints' old homes, still a module name that must not be spelled
            r"kubetune\.workload\.(train|evaluate|predict|retrain)\b",
        ]
    )
)


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if CONTRACT not in p.parents)


def _literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant and every comment in a module."""
    text = path.read_text()
    found = [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(text, filename=str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    return found


def test_no_contract_name_is_spelled_outside_the_contract():
    problems = [
        f"{path.relative_to(REPO)}:{line}: {match.group(0)!r} in {value.strip()[:80]!r}"
        for path in _sources()
        for line, value in _literals(path)
        for match in [FORBIDDEN.search(value)]
        if match
    ]
    assert not problems, (
        "use the constants of kubetune.contract.names (and name them, not their values, in prose):\n"
        + "\n".join(problems)
    )


def _constants() -> dict[str, str]:
    return {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}


def test_every_name_is_unique():
    seen: dict[str, str] = {}
    duplicates = []
    for key, value in _constants().items():
        if value in seen:
            duplicates.append(f"{seen[value]} and {key} are both {value!r}")
        seen.setdefault(value, key)
    assert not duplicates, "\n".join(duplicates)


@pytest.mark.parametrize(
    "key",
    [k for k, v in _constants().items() if v.startswith(("KUBETUNE_", "kubetune.", "batch.", "kueue.", "/etc/", "/var/"))]
    + ["ENV_COMPLETION_INDEX"],
)
def test_the_scan_covers_the_contract_names(key):
    """The scan above guards every distinctive name in names.py, so a new one cannot slip by."""
    assert FORBIDDEN.search(_constants()[key]), f"{key} = {_constants()[key]!r} is not caught by FORBIDDEN"


def test_the_scan_sees_strings_docstrings_f_strings_and_comments(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        '"""Reads KUBETUNE_RUN."""\n'
        "x = f\"{1}kubetune.io/job\"  # sets /etc/kubetune\n"
        "def f():\n    return 'python -m kubetune.workload.train'\n"
    )
    hits = [value for _, value in _literals(path) if FORBIDDEN.search(value)]
    assert len(hits) == 4, hits
    path.write_text("import kubetune.workload.trainer.kubetune_trainer\nx = 'kubetune.workload.tasks'\n")
    assert not [value for _, value in _literals(path) if FORBIDDEN.search(value)]
