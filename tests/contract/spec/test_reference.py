"""docs/spec-reference.md is what `python -m kubetune.contract.spec.reference` prints, and it
names every field of every spec model with a description, so the reference cannot drift from
the models (a new field without a description, or a changed default, fails here)."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from kubetune.contract.spec.job import JobSpec
from kubetune.contract.spec.reference import COMMAND

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO / "docs" / "spec-reference.md"


def spec_models(model: type[BaseModel] = JobSpec) -> set[type[BaseModel]]:
    """Every model reachable from `model` through its fields' annotations, however nested
    (optional, list items, map values)."""
    found = {model}
    pending = [field.annotation for field in model.model_fields.values()]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found |= spec_models(annotation)
        else:
            pending.extend(typing.get_args(annotation))
    return found


def reference_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """The committed reference's field tables as {heading: {field: the row's other cells}}."""
    tables: dict[str, dict[str, list[str]]] = {}
    heading, in_fields = "", False
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        in_fields = (in_fields and line.startswith("|")) or line == "| field | type | default | description |"
        match = re.match(r"^\| `(\w+)` \|(.*)\|$", line)
        if in_fields and match:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", match.group(2))]
            tables.setdefault(heading, {})[match.group(1)] = cells
    return tables


def test_the_committed_reference_is_what_the_command_prints():
    printed = subprocess.run(
        [sys.executable, "-m", "kubetune.contract.spec.reference"],
        capture_output=True, text=True, cwd=REPO, check=True,
    ).stdout
    assert printed == REFERENCE.read_text(), f"docs/spec-reference.md is stale: regenerate it with `{COMMAND}`"


def test_every_field_of_every_model_appears_with_a_description():
    tables = reference_tables(REFERENCE.read_text())
    models = spec_models()
    assert len(models) >= 20  # JobSpec, its sections and theirs: the walk found them
    for model in models:
        fields = set(model.model_fields)
        matching = [heading for heading, rows in tables.items() if set(rows) == fields]
        assert matching, f"{model.__name__}: no section of docs/spec-reference.md lists exactly {sorted(fields)}"
        undescribed = [name for name, field in model.model_fields.items() if not (field.description or "").strip()]
        assert not undescribed, f"{model.__name__}: fields without a description: {undescribed}"


def test_rows_show_type_bounds_default_and_description():
    tables = reference_tables(REFERENCE.read_text())
    assert tables["Top level"]["name"][:2] == ["string", "required"]
    assert tables["Top level"]["train"][0] == "[section `train`](#train)"
    assert tables["`train`"]["learning_rate"][:2] == ["number, > 0", "`5e-05`"]
    assert tables["`storage`"]["lease_seconds"][:2] == ["integer, > 0, ≤ 3600", "`60`"]
    assert tables["`kubernetes`"]["storage_secret"][:2] == ["string or null", '`"kubetune-storage"`']
    assert tables["`train.lora`"]["target_modules"][0] == "list of string or null"
    # A `|` in a description is escaped, so it stays in its cell (four cells per row).
    assert all(len(cells) == 3 for rows in tables.values() for cells in rows.values())
    # `<run>` outside backticks is escaped, or a Markdown viewer would take it for an HTML tag.
    assert "runs/&lt;run&gt;/tensorboard/" in tables["`tracking`"]["tensorboard"][2]
