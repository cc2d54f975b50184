"""`hf://` URIs pinned to one commit of their Hub repository (docs/storage.md#the-hugging-face-hub).

A branch or tag of a Hub repository moves when someone pushes; a run that read `main` at its
start and again after a restart would mix two versions of the data without noticing. So every
`hf://[datasets/]org/name[@rev]/path` a run reads (data splits, `model.source`) is resolved
once, as the run begins, to the commit its revision names then (`pin`, one request to the
Hub's revision endpoint), and read at that commit only: `hf://datasets/org/name@<sha>/path`.
The commit goes into the run's `lineage.json` with each file (`revision`, and `hub_ref`, the
revision as written), and the run's attempts.json keeps every pinned revision (data and model:
`hub_commits`); a later attempt of the same run reads the commits its first attempt recorded
(`commits_of` and `hub_commits`, given to `pin`), not the branch's newest, so a resume trains on
the data and model it began with.

The files are read by huggingface_hub's `HfFileSystem` (fsspec's `hf://`), which takes the
endpoint from `HF_ENDPOINT` and a token from `HF_TOKEN`, as every Hub client does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from kubetune.storage import StoreUnavailableError, is_transient

SCHEME = "hf://"
DEFAULT_REVISION = "main"
REQUEST_TIMEOUT_S = 30.0  # a Hub that accepts and never answers fails the run's start, not hangs it
_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def is_hub_uri(uri: str) -> bool:
    return uri.startswith(SCHEME)


def hub_ref(uri: str, default_revision: str | None = None) -> tuple[str, str, str, str]:
    """(repo type, repo id, revision as written (else `default_revision`, else main), path in repo)."""
    from huggingface_hub.utils import parse_hf_uri

    parsed = parse_hf_uri(uri)
    return parsed.type, parsed.id, parsed.revision or default_revision or DEFAULT_REVISION, parsed.path_in_repo


def ref_key(repo_type: str, repo_id: str, revision: str) -> str:
    """How a pinned revision is keyed in a run's records: `datasets/org/name@main`."""
    return f"{_PREFIXES.get(repo_type, repo_type + 's/')}{repo_id}@{revision}"


def pinned_uri(repo_type: str, repo_id: str, commit: str, path: str) -> str:
    return f"{SCHEME}{_PREFIXES.get(repo_type, repo_type + 's/')}{repo_id}@{quote(commit, safe='')}" + (
        f"/{path}" if path else "")


def pin(uri: str, field: str, commits: dict[str, str], error: type[Exception],
        default_revision: str | None = None) -> tuple[str, str, str]:
    """(`uri` read at one commit, the ref key, the commit). The commit is `commits[key]` when the
    run pinned this revision already (a later attempt), else the one the revision names now,
    added to `commits`. A repository or revision the Hub does not know raises `error` (a user
    error, exit 2) naming `field`; a Hub that cannot be reached, `StoreUnavailableError`."""
    try:
        repo_type, repo_id, revision, path = hub_ref(uri, default_revision)
    except ValueError as exc:  # HfUriError
        raise error(f"{field}: {uri}: not an hf:// URI of a repository ({_one_line(exc)})") from None
    key = ref_key(repo_type, repo_id, revision)
    if key not in commits:
        commits[key] = _commit(repo_type, repo_id, revision, f"{field}: {uri}", error)
    return pinned_uri(repo_type, repo_id, commits[key], path), key, commits[key]


def commits_of(records: dict[str, list[dict[str, Any]]] | None) -> dict[str, str]:
    """The revisions a run's first attempt pinned (its file records: `hub_ref` -> `revision`)."""
    return {r["hub_ref"]: r["revision"] for rs in (records or {}).values() for r in rs
            if r.get("hub_ref") and r.get("revision")}


def _commit(repo_type: str, repo_id: str, revision: str, what: str, error: type[Exception]) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, timeout=REQUEST_TIMEOUT_S).sha
    except RevisionNotFoundError:
        raise error(f"{what}: the Hub repository {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise error(f"{what}: no Hub {repo_type} repository {repo_id} (or it is private: set HF_TOKEN)") from None
    except Exception as exc:
        if _is_network_fault(exc):
            raise StoreUnavailableError(f"{what}: the Hugging Face Hub is unreachable: {_one_line(exc)}") from None
        raise error(f"{what}: cannot read the Hub repository {repo_id}: {_one_line(exc)}") from None


def _is_network_fault(exc: BaseException) -> bool:
    from kubetune.workload.model.hub import is_network_fault

    return is_network_fault(exc) or is_transient(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
