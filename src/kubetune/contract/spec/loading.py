"""Reading a job spec file: YAML parsing, `--set` overrides, secret screening, and pydantic's
errors turned into the one-line messages a user sees (`error: FILE: FIELD: problem`).

Everything here works on plain mappings, before and after validation; `kubetune.contract.spec.job`
owns the models and calls these (and re-exports `apply_override`). yaml and pydantic only.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

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


# Sections whose keys are environment variable names or Secret references, not credentials:
# `kubernetes.secret_env` holds `{secret: NAME, key: KEY}` references by design, and
# `kubernetes.env` has its own check of secret-looking names (spec_kubernetes).
SECRET_SCREEN_SKIP = {"kubernetes.env", "kubernetes.secret_env"}


# A spec file is read by the launcher, stored and embedded in a ConfigMap (at most 1 MiB), so
# a bigger file is a mistake or an attack; refused before it is parsed.
MAX_SPEC_BYTES = 1024 * 1024
# Nodes of the parsed document with every alias expanded. A real spec has a few hundred; a
# "billion laughs" alias bomb of 2 KB has billions (each level of aliases multiplies them),
# and everything that walks the document (secret screening, validation, JSON) pays for each.
MAX_SPEC_NODES = 100_000

_CREDENTIAL_HINT = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment (or a Kubernetes Secret)"
# Values shaped like credentials, wherever they appear: AWS access key ids, URLs carrying user
# info (`scheme://user:password@host`), and 40-character AWS secret access keys.
_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])")
_URL_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^/?#\s@]{1,256}@")
# Azure Data Lake's `abfs[s]://container@account.dfs.core.windows.net/...`: the part before `@`
# names a container (no password), so it is no user info.
_ADLS_CONTAINER = re.compile(r"abfss?://[^:/?#\s@]+@$", re.IGNORECASE)
_SECRET_KEY = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# Fields that hold paths, where a 40-character run of letters, digits and '/' is a file name
# more often than a key (a path with user info or a key id is still refused).
_PATH_FIELDS = {"model.source", "model.tokenizer", "model.revision", "data.train", "data.validation", "data.test",
                "storage.root"}


def _secret_shape(value: str, path: str) -> str | None:
    """What credential a string looks like, or None. The value itself is never returned, so no
    message can echo it."""
    if _ACCESS_KEY_ID.search(value):
        return "an AWS access key id"
    if any(not _ADLS_CONTAINER.match(m.group(0)) for m in _URL_USERINFO.finditer(value)):
        return "a URL with user info (user:password@)"
    if path not in _PATH_FIELDS:
        for match in _SECRET_KEY.finditer(value):
            token = match.group(0)
            # A secret key mixes cases and digits; a commit hash (hex) or a word does not.
            if re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"[0-9/+]", token):
                return "an AWS secret access key"
    return None


def _reject_secrets(data: Any, where: str = "", names_checked: bool = True) -> None:
    """Refuse credentials anywhere in the spec, naming the field: keys that name a secret
    (except under SECRET_SCREEN_SKIP), and values or keys shaped like one (everywhere). The
    message never repeats the value."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            check_names = names_checked and path not in SECRET_SCREEN_SKIP
            if check_names and str(key).lower() in SECRET_KEYS:
                raise SpecError(f"{path}: credentials must not be written in a job spec; {_CREDENTIAL_HINT}")
            shape = _secret_shape(key, path) if isinstance(key, str) else None
            if shape:
                raise SpecError(f"{where or '<top level>'}: a key looks like {shape}; "
                                f"credentials must not be written in a job spec; {_CREDENTIAL_HINT}")
            _reject_secrets(value, path, check_names)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            # Items of lists (tolerations, affinity terms) are Kubernetes objects, whose `key`
            # fields are label keys: their values are screened, their names are not.
            _reject_secrets(item, f"{where}[{i}]", False)
    elif isinstance(data, str):
        shape = _secret_shape(data, where)
        if shape:
            raise SpecError(f"{where}: looks like {shape}; credentials must not be written in a job spec "
                            f"(the value is not shown); {_CREDENTIAL_HINT}")


def secret_free(flat: dict[str, Any]) -> dict[str, Any]:
    """The entries of a flattened spec (dotted keys: `train.learning_rate`) that may be sent to
    an experiment tracker: the screening `_reject_secrets` applies to a spec file, applied to
    what leaves for a tracker, so a tracker never receives what a spec may not hold. Dropped:
    everything under SECRET_SCREEN_SKIP (environment values and Secret references), keys that
    name a secret, and values shaped like a credential."""
    kept = {}
    for path, value in flat.items():
        if any(path == skip or path.startswith(f"{skip}.") for skip in SECRET_SCREEN_SKIP):
            continue
        if any(part.lower() in SECRET_KEYS for part in path.split(".")):
            continue
        if _secret_shape(str(value), path):
            continue
        kept[path] = value
    return kept


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
        value = safe_load_bounded(raw) if raw != "" else ""
    except (yaml.YAMLError, SpecError):
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


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The spec section a field's annotation holds (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_section_model, typing.get_args(annotation)) if m is not None), None)


def closest_field(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str | None:
    """For an unknown field at `loc`, the valid field of its section whose name is closest to
    it, if one is close (`train.epoch` -> `epochs`): difflib's ratio, as Python's own "did you
    mean" does for names."""
    for part in loc[:-1]:
        if model is None:
            return None
        field = model.model_fields.get(str(part))
        if field is not None:  # a list index or a dict key keeps the section it is in
            model = _section_model(field.annotation)
    if model is None or not loc:
        return None
    names = [name for name, f in model.model_fields.items() if not f.exclude]
    match = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.7)
    return match[0] if match else None


def _format_error(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden" and (close := closest_field(model, tuple(err["loc"]))):
        message = f"unknown field (did you mean {close}?)"
    elif kind in _MESSAGES:
        message = _MESSAGES[kind](err)
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind.endswith("_type") or kind.endswith("_parsing"):
            message = f"{message} (got {err.get('input')!r})"
    if message.startswith("data.columns:"):  # model-level validators name the field themselves
        return message
    return f"{loc}: {message}" if loc else message



def _override_for(loc: tuple[Any, ...], overrides: list[str] | tuple[str, ...]) -> str | None:
    """The last `--set` whose key is the error's field or a section holding it, if any."""
    field = [str(p) for p in loc]
    for assignment in reversed(overrides):
        key = assignment.split("=", 1)[0].strip().split(".")
        if field and field[: len(key)] == key:
            return assignment
    return None


def format_errors(source: str, exc: ValidationError, overrides: list[str] | tuple[str, ...] = (),
                  model: type[BaseModel] | None = None) -> SpecError:
    """All of a validation's errors as one SpecError line naming every field, and where each
    came from: the `--set` that wrote it (`--set train.epoch=1: unknown field`) or the file,
    because the user must fix the command line in one case and the file in the other. With the
    validated `model`, an unknown field names the closest valid one (`closest_field`)."""
    from_file, from_flags = [], []
    for err in exc.errors():
        assignment = _override_for(err["loc"], overrides)
        if assignment is None:
            from_file.append(_format_error(err, model))
        else:
            message = _format_error(err, model).removeprefix(".".join(str(p) for p in err["loc"]) + ": ")
            from_flags.append(f"--set {assignment}: {message}")
    parts = from_flags + ([f"{source}: {'; '.join(from_file)}"] if from_file else [])
    return SpecError("; ".join(parts))


def screen_secrets(data: Any, source: str) -> None:
    """Refuse a spec mapping that holds credentials, naming the file and the field."""
    try:
        _reject_secrets(data)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def expanded_nodes(root: yaml.Node, limit: int = MAX_SPEC_NODES) -> int:
    """How many nodes the document has with every alias expanded, stopping past `limit`.

    Why by hand: PyYAML has no bound on alias expansion. An alias is the same node object as
    its anchor, so the expanded size of each node is computed once (memoised by identity):
    linear in the file, however many times the aliases multiply. A node that contains itself
    (a recursive alias) counts as unbounded.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            return limit + 1
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        in_progress.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(root)


# Nesting of a real spec: about 10 levels (affinity terms are the deepest). PyYAML's scanner
# slows down quadratically with nested flow collections (`[[[[...`), so depth is bounded as
# the document is composed, before the scanner gets far.
MAX_SPEC_DEPTH = 64


class _DepthBoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_SPEC_DEPTH while composing."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise SpecError(f"YAML nested more than {MAX_SPEC_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 (PyYAML) reads `1e-4` as a string: a float needs a dot there. Job specs and `--set`
# values are written the YAML 1.2 way (`learning_rate: 1e-4`), and with strict fields a string
# would be refused, so exponent-only numbers resolve as floats too.
_DepthBoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load_bounded(text: str, limit: int = MAX_SPEC_NODES) -> Any:
    """`yaml.safe_load`, refusing a document whose aliases expand past `limit` nodes before any
    Python object is built. Raises SpecError (too big) or yaml.YAMLError (malformed)."""
    loader = _DepthBoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_nodes(node, limit) > limit:
            raise SpecError(f"too many values with its YAML aliases expanded (more than {limit}); "
                            "a job spec has a few hundred")
        return loader.construct_document(node)
    except RecursionError:
        raise SpecError("YAML nested too deeply") from None
    finally:
        loader.dispose()


def read_spec_text(path: Path) -> str:
    """A spec file's text: at most MAX_SPEC_BYTES, UTF-8. The error names the byte offset of
    the first bad byte, never the file's content."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; a job spec is a small YAML file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not a UTF-8 text file (bad byte at offset {exc.start})") from None


def read_spec_file(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """A spec file's parsed YAML with the `--set` overrides applied (not yet validated)."""
    text = read_spec_text(path)
    if "\x00" in text:
        raise SpecError(f"{path}: a binary file, not a YAML job spec")
    try:
        data = safe_load_bounded(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML: {where}{problem}") from None
    if data is None:
        data = {}
    if isinstance(data, dict):
        for assignment in overrides:
            apply_override(data, assignment)  # its error names the override, not the file
    return data


MAX_SPEC_FILE_LABEL = 256


def spec_file_label(path: str) -> str | None:
    """The spec file's name as the user gave it, for the pod's error lines (names.ENV_SPEC_FILE),
    or None when it is not fit to travel in a pod's environment: longer than a path a user
    types, holding control characters (a newline would split the one error line), or shaped
    like a credential (a pod's env is readable by anyone who may read the pod)."""
    if not path or len(path) > MAX_SPEC_FILE_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return None
    return None if _secret_shape(path, "spec file") else path
