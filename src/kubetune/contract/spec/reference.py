"""The job spec reference, `docs/spec-reference.md`, generated from the spec models so that it
cannot drift from them: every section and field with its type, its default and its
`description`, walked from `JobSpec` down.

    python -m kubetune.contract.spec.reference > docs/spec-reference.md

`tests/contract/spec/test_reference.py` fails when the committed file differs from what this
prints, so a changed field is documented in the same commit. pydantic and the standard library
only, like the rest of the contract.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kubetune.contract.profiles import PROFILES
from kubetune.contract.spec.job import OPTIONAL_SECTIONS, TASK_COLUMNS, JobSpec

COMMAND = "python -m kubetune.contract.spec.reference > docs/spec-reference.md"

HEADER = f"""# Job spec reference

<!-- Generated from the spec models (src/kubetune/contract/spec/) by
     {COMMAND}
     Do not edit by hand: tests/contract/spec/test_reference.py fails when this file differs. -->

Every section and field of a job spec (`jobs/*.yaml`), with its type, its default and what it
does. How to write a spec, override fields with `--set` and check it: [job-spec.md](job-spec.md).
`kubetune validate JOB.yaml` prints a spec with every default filled in.

Every section refuses an unknown field (a typo is an error naming it, never an ignored
setting). Numbers are strict: `true` is not a batch size, `"3"` is not 3, `3.0` is not a step
count (an integer is still accepted where a float is expected), and `.inf`/`.nan` are refused.
"""

# How each bound pydantic keeps in `FieldInfo.metadata` (`Gt(gt=0)`, `MinLen(min_length=1)`)
# reads in the type column.
CONSTRAINTS = (
    ("gt", "> {}"),
    ("ge", "≥ {}"),
    ("lt", "< {}"),
    ("le", "≤ {}"),
    ("min_length", "at least {} long"),
    ("max_length", "at most {} long"),
)


# Python's scalar types by the names a YAML reader knows them by.
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Section:
    """One model of the spec at its place in a spec file: `train.lora`, `kubernetes.egress[]`."""

    path: str
    model: type[BaseModel]
    intro: str

    @property
    def heading(self) -> str:
        return "Top level" if not self.path else f"`{self.path}`"

    @property
    def anchor(self) -> str:
        return github_anchor(self.heading)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def models_in(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The spec models an annotation holds, each with the suffix its place adds to a path:
    `''` for the model itself or an optional one, `[]` for list items, `.<NAME>` for map values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from models_in(arg)
    elif origin is list:
        yield from ((f"[]{suffix}", model) for suffix, model in models_in(args[0]))
    elif origin is dict:
        yield from ((f".<NAME>{suffix}", model) for suffix, model in models_in(args[1]))


def sections(model: type[BaseModel] = JobSpec, path: str = "", intro: str = "") -> Iterator[Section]:
    """Every section under `model`, depth first in field order (the order a spec file uses).
    A section opens with its model's docstring, else with the description of its field."""
    yield Section(path, model, _docstring(model) or intro)
    for name, field in model.model_fields.items():
        for suffix, inner in models_in(field.annotation):
            child = f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
            yield from sections(inner, child, field.description or "")


def _docstring(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    return " ".join(inspect.cleandoc(doc).split()) if doc.strip() else ""


def type_text(annotation: Any, links: dict[type[BaseModel], Section]) -> str:
    """A type as a reader of YAML thinks of it: `integer`, `string or null`, `list of string`,
    a link to a nested section, `one of "a", "b"`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        section = links[annotation]
        return f"[section `{section.path}`](#{section.anchor})"
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(arg, links) for arg in args)
    if origin is list:
        return f"list of {type_text(args[0], links)}"
    if origin is dict:
        return f"map of {type_text(args[0], links)} to {type_text(args[1], links)}"
    if annotation is Any:
        return "any"
    return SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def constraint_text(field: FieldInfo) -> str:
    """The field's bounds (`> 0`, `≤ 3600`, `at least 1 long`), comma-separated."""
    parts = []
    for item in field.metadata:
        for attr, template in CONSTRAINTS:
            if getattr(item, attr, None) is not None:
                parts.append(template.format(getattr(item, attr)))
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    """The default as it reads in a resolved spec: JSON scalars (`null`, `true`, `"sdpa"`), a
    nested section's own defaults, or `required`."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    return f"`{json.dumps(value)}`"


def prose(text: str) -> str:
    """A description as Markdown on one line: outside `code`, `<run>` is no HTML tag, `*SECRET*`
    no emphasis, and a `|` does not end a table cell."""
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):  # the even parts lie outside backticks
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|")


def field_rows(section: Section, links: dict[type[BaseModel], Section]) -> list[str]:
    """The section's table: one row per field."""
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in section.model.model_fields.items():
        kind = type_text(field.annotation, links)
        bounds = constraint_text(field)
        notes = [prose(field.description or "")]
        if field.exclude_if is not None:
            notes.append("left out of the resolved spec at its default")
        if not section.path and name in OPTIONAL_SECTIONS:
            notes.append("left out of the resolved spec when unset")
        cells = (f"`{name}`", f"{kind}, {bounds}" if bounds else kind, default_text(field),
                 "; ".join(note for note in notes if note))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def columns_table() -> list[str]:
    """`data.columns`: the roles each task reads, with the column assumed when none is named."""
    rows = ["`data.columns` maps a task's roles to your files' column names; a role left out reads "
            "the column this table names (*none*: the task reads that role only when you map it).",
            "", "| task | role: default column |", "|---|---|"]
    for task, roles in TASK_COLUMNS.items():
        pairs = ", ".join(f"`{role}`: {f'`{column}`' if column else '*none*'}" for role, column in roles.items())
        rows.append(f"| `{task}` | {pairs} |")
    return rows


def profiles_table() -> list[str]:
    """`resources.profile`: what each named preset fills in."""
    rows = ["A profile fills every `resources` field the spec leaves out; a field the spec sets wins.",
            "", "| profile | nodes | GPUs per node | CPU per node | memory per node |", "|---|---|---|---|---|"]
    for name, preset in PROFILES.items():
        rows.append(f"| `{name}` | {preset['nodes']} | {preset['gpus_per_node']} | {preset['cpu']} | {preset['memory']} |")
    return rows


# Tables of the contract's own constants, printed after the section they explain.
EXTRAS = {"data": columns_table, "resources": profiles_table}


def render() -> str:
    """The whole reference, as committed in docs/spec-reference.md."""
    found = list(sections())
    links = {section.model: section for section in found}
    lines = [HEADER, "Sections: " + " · ".join(f"[{s.heading}](#{s.anchor})" for s in found), ""]
    for section in found:
        level = "##" if "." not in section.path else "###"
        lines += [f"{level} {section.heading}", ""]
        if section.intro:
            lines += [prose(section.intro), ""]
        lines += field_rows(section, links) + [""]
        if section.path in EXTRAS:
            lines += EXTRAS[section.path]() + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
