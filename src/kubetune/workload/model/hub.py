"""The Hugging Face Hub reachable before a model is loaded from it, and a Hub that fails while
loading: one line and a retriable exit, never a minute of retries and a long traceback.

A model or tokenizer that is a Hub id (`source.check_model_source`) is fetched by
`from_pretrained`, whose downloads retry each file five times (about 23 s) and then raise a
long traceback with exit 1, which the Job's podFailurePolicy cannot tell from a bug (issue 28:
20 retries, 122 lines, 53 s). So the train stage's `setup` asks the Hub first (`check_hub`):
one HEAD of the model's `config.json`, retried with backoff for
`storage.startup_timeout_seconds` as the store is, then `HubUnavailableError`, which the
entrypoints print as one line and exit EXIT_STORE_UNAVAILABLE (69), which the Job retries. Any
HTTP answer counts as reachable (a 401 or 404 is the load's to report). Nothing is asked when
huggingface_hub is offline (HF_HUB_OFFLINE) or the model's config is already in its cache.
A network fault while loading after that (`hub_faults`) ends the same way.

Why by hand: huggingface_hub's retries count attempts, not time, and cannot be bounded by the
spec's deadline; the loop is the store's (`storage.Store.check_reachable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from kubetune.storage import StoreUnavailableError, has_scheme, is_transient
from kubetune.store_faults import one_line, retry_until

PROBE_FILE = "config.json"
PROBE_TIMEOUT_S = 10.0


class HubUnavailableError(StoreUnavailableError):
    """The Hub stayed unreachable: one line, exit EXIT_STORE_UNAVAILABLE (the Job retries)."""


def is_hub_id(resolved: str) -> bool:
    """A resolved source (`check_model_source`) that is a Hub id: no URI, no local path."""
    return not has_scheme(resolved) and not resolved.startswith("/")


def is_network_fault(exc: BaseException) -> bool:
    """A fault that may pass: the transport's (refused, reset, timeouts, DNS) or what the store
    calls transient (`storage.is_transient`), anywhere in the cause chain."""
    import httpx2  # huggingface_hub's HTTP client

    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, httpx2.TransportError):
            return True
        link = link.__cause__ or link.__context__
    return is_transient(exc)


def check_hub(sources: dict[str, str], revision: str | None, timeout_s: float) -> None:
    """Each Hub id among `sources` (field -> resolved source) reachable, retried until
    `timeout_s`; else `HubUnavailableError` naming the field, the endpoint and the fault."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return
    for field, repo in sources.items():
        if not is_hub_id(repo) or isinstance(try_to_load_from_cache(repo, PROBE_FILE, revision=revision), str):
            continue
        _probe_until(field, repo, revision, timeout_s, constants.ENDPOINT)


def _probe_until(field: str, repo: str, revision: str | None, timeout_s: float, endpoint: str) -> None:
    from huggingface_hub.utils import build_hf_headers, get_session

    # The URL from_pretrained fetches first (huggingface_hub's file URL, at the endpoint it uses).
    url = f"{endpoint.rstrip('/')}/{repo}/resolve/{quote(revision or 'main', safe='')}/{PROBE_FILE}"

    def unreachable(exc: BaseException, waited: float) -> HubUnavailableError:
        return HubUnavailableError(
            f"{field}: {repo}: the Hugging Face Hub ({endpoint}) unreachable for {waited:.0f}s "
            f"(storage.startup_timeout_seconds: {timeout_s:g}): {one_line(exc)}")

    retry_until(lambda: get_session().head(url, headers=build_hf_headers(), timeout=PROBE_TIMEOUT_S),
                is_network_fault, timeout_s, f"the Hugging Face Hub ({endpoint})", unreachable)


@contextmanager
def hub_faults(field: str, source: str) -> Iterator[None]:
    """Loading `source` (`field`): for a Hub id, a network fault becomes `HubUnavailableError`,
    one line (a store's fault is the entrypoint's to report)."""
    try:
        yield
    except Exception as exc:
        if not is_hub_id(source) or not is_network_fault(exc):
            raise
        raise HubUnavailableError(f"{field}: {source}: network fault while loading it: {one_line(exc)}") from None


