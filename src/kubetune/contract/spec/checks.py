"""Checks of spec values that pydantic's types do not express and the Kubernetes API server
(or the store) would otherwise reject late or, worse, accept: URI schemes, store-relative paths
that climb out of `storage.root`, image references, annotation keys and sizes, toleration
enums. Plain functions raising ValueError, so pydantic reports them as one line naming the
field. Standard library only: the launcher imports this on a laptop.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

# Schemes a store or data URI may use: the object stores kubetune installs a file system for
# (s3fs; huggingface_hub's HfFileSystem for hf://), fsspec's built-in local and in-memory ones.
# Anything else (ftp://, a typo) would fail deep inside fsspec with a traceback.
SUPPORTED_SCHEMES = ("s3", "s3a", "file", "memory", "hf")
# Schemes kubetune only reads (data, model.source): never a place anything is written.
READ_ONLY_SCHEMES = ("hf",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# Kubernetes: metadata.annotations, keys and values together, at most 256 KiB
# (apimachinery's TotalAnnotationSizeLimitB).
MAX_ANNOTATIONS_BYTES = 256 * 1024
# A qualified name: an optional DNS-subdomain prefix (<= 253) and '/', then a name (<= 63).
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# The image reference grammar of distribution/reference (what the kubelet and registries
# parse): [domain[:port]/]path[:tag][@digest]. Written out because no small, maintained
# Python package implements it; the regex is the grammar's, component by component.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
MAX_IMAGE_NAME = 255

TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


def check_uri(value: str | None) -> str | None:
    """A URI with a scheme kubetune can read, or a path; a store-relative path (no scheme, not
    `/`, `./`, `../` or `~`) must stay under `storage.root` once `..` segments are resolved."""
    if value is None:
        return value
    match = _SCHEME.match(value)
    if match:
        if match.group(1).lower() not in SUPPORTED_SCHEMES:
            raise ValueError(
                f"unsupported scheme {match.group(1)}:// (supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)})"
            )
        return value
    explicit_local = value.startswith(("/", "./", "../", "~")) or value in (".", "..")
    if not explicit_local:
        normal = posixpath.normpath(value)
        if normal == ".." or normal.startswith("../"):
            raise ValueError("a path relative to storage.root must stay under it ('..' climbs out)")
    return value


def check_writable_uri(value: str | None) -> str | None:
    """`check_uri`, for a place kubetune writes to (storage.root, predictions): a read-only
    store (the Hugging Face Hub) is refused."""
    value = check_uri(value)
    match = _SCHEME.match(value or "")
    if match and match.group(1).lower() in READ_ONLY_SCHEMES:
        raise ValueError(f"{match.group(1)}:// is read-only (the Hugging Face Hub): kubetune writes here; "
                         f"use a local folder or {', '.join(s + '://' for s in SUPPORTED_SCHEMES if s not in READ_ONLY_SCHEMES)}")
    return value


def check_image(value: str) -> str:
    """An image reference the kubelet can pull: [registry[:port]/]name[:tag][@digest]."""
    name = value.split("@", 1)[0]
    if len(name) > MAX_IMAGE_NAME or not _IMAGE.match(value):
        raise ValueError("not a valid image reference ([registry[:port]/]name[:tag][@sha256:digest], lowercase name)")
    return value


def check_qualified_key(key: str) -> None:
    """A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain (<= 253), the
    name <= 63 characters of letters, digits, '-', '_' and '.'."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"key {key[:80]!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        raise ValueError(f"key {key[:80]!r}: must be [prefix/]name, the name at most 63 letters, digits, '-', '_', '.'")


def check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """Keys as Kubernetes qualifies them; keys and values at most 256 KiB in total."""
    total = 0
    for key, value in annotations.items():
        check_qualified_key(key)
        total += len(key.encode()) + len(value.encode())
    if total > MAX_ANNOTATIONS_BYTES:
        raise ValueError(f"{total} bytes in total; Kubernetes allows at most {MAX_ANNOTATIONS_BYTES} (256 KiB)")
    return annotations


def check_tolerations(tolerations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The enum fields of a toleration, which the OpenAPI schema types only as strings."""
    for i, toleration in enumerate(tolerations):
        operator = toleration.get("operator", "Equal")
        if operator not in TOLERATION_OPERATORS:
            raise ValueError(f"[{i}].operator: must be one of {', '.join(TOLERATION_OPERATORS)}")
        effect = toleration.get("effect", "")
        if effect not in TAINT_EFFECTS:
            raise ValueError(f"[{i}].effect: must be one of {', '.join(e for e in TAINT_EFFECTS if e)} (or empty)")
        key = toleration.get("key")
        if isinstance(key, str) and key:
            check_qualified_key(key)
    return tolerations


def check_checkpoint_every(value: Any) -> Any:
    """`train.checkpoint_every`: a number of steps or `auto`, in one message (a union's errors
    would name each of its arms)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a number of steps (at least 1) or auto (got {value!r})")
    return value
