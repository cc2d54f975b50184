"""Reading a job spec file: YAML parsing, `--set` overrides, secret screening, and pydantic's
errors turned into the one-line messages a user sees (`error: FILE: FIELD: problem`).

Everything here works on plain mappings, before and after validation; `kubetune.contract.spec`
owns the models and calls these (and re-exports `apply_override`). yaml and pydantic only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubetune.contract.errors import SpecError

# Keys that would put a secret into a spec. Credentials come from the environment (AWS_*
# variables, or a Kubernetes Secret mounted into the pod), never from a file that is stored,
# rendered into a ConfigMap and logged.
SECRET_KEYS = {
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "access_key",
    "secret_key",
    "secret_access_key",
    "key",
    "secret",
    "token",
    "password",
}


def _reject_secrets(data: Any, where: str = "") -> None:
    """Refuse credentials anywhere in the spec, naming the field."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if str(key).lower() in SECRET_KEYS:
                raise SpecError(
                    f"{path}: credentials must not be written in a job spec; "
                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment (or a Kubernetes Secret)"
                )
            _reject_secrets(value, path)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value` override in place. Splits on the first `=`; the value is
    parsed as YAML so numbers and booleans get their types (`train.epochs=1`)."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise SpecError(f"--set {assignment}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {assignment}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


_MESSAGES = {
    "extra_forbidden": lambda e: "unknown field",
    "missing": lambda e: "required field is missing",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
    "string_too_short": lambda e: "must not be empty",
}


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind in _MESSAGES:
        message = _MESSAGES[kind](err)
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind.endswith("_type") or kind.endswith("_parsing"):
            message = f"{message} (got {err.get('input')!r})"
    if message.startswith("data.columns:"):  # model-level validators name the field themselves
        return message
    return f"{loc}: {message}" if loc else message



def format_errors(source: str, exc: ValidationError) -> SpecError:
    """All of a validation's errors as one SpecError line naming the file and every field."""
    return SpecError(f"{source}: {'; '.join(_format_error(e) for e in exc.errors())}")


def screen_secrets(data: Any, source: str) -> None:
    """Refuse a spec mapping that holds credentials, naming the file and the field."""
    try:
        _reject_secrets(data)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def read_spec_file(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """A spec file's parsed YAML with the `--set` overrides applied (not yet validated)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML: {where}{problem}") from None
    if data is None:
        data = {}
    if isinstance(data, dict):
        for assignment in overrides:
            try:
                apply_override(data, assignment)
            except SpecError as exc:
                raise SpecError(f"{path}: {exc}") from None
    return data
