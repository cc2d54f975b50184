"""A small Hugging Face Hub for tests of `hf://` sources: the endpoints huggingface_hub's
`HfFileSystem` (and `HfApi`) ask, over real HTTP on 127.0.0.1 (port 0), so tests drive the
real client, pointed at it with `HF_ENDPOINT`, without patching it.

Why hand-written: no Hub is reachable from this machine or from CI, and the Hub's server is not
published (no emulator exists, unlike moto for S3). Only what `HfFileSystem` reads is here,
answered as huggingface.co answers it (huggingface_hub 2.4's `hf_api.py`, `hf_file_system.py`,
`file_download.py` and `utils/_http.py` are the reference):

- `GET /api/{models|datasets}/{org}/{name}[/revision/{rev}]`: the repo's info, `sha` the
  commit the revision names, `cardData` its card's YAML header; 404 with `X-Error-Code: RepoNotFound` or `RevisionNotFound`;
- `GET /api/{type}s/{org}/{name}/tree/{rev}[/{path}]?recursive=&expand=`: the entries under a
  folder (`type`, `oid`, `size`, `path`), paginated by a `Link: <...>; rel="next"` header
  (`PAGE` entries a page, so the client's pagination is exercised);
- `POST /api/{type}s/{org}/{name}/paths-info/{rev}` (form: `paths`, `expand`): those entries;
- `GET|HEAD /[datasets/]{org}/{name}/resolve/{rev}/{path}`: the file, with `X-Repo-Commit`,
  `ETag` (the blob's git oid) and `Content-Length`, and `Range` requests answered 206.

A repo is a list of commits (`commit(files)` adds one and moves `main` to it), so a test can
move a branch while a run is pinned to its older commit. `requests` records each request's
method and path, so a test can see which revision a run read.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlencode

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

PAGE = 2  # entries per tree page: small, so listings of a few files take several pages
_API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def git_oid(data: bytes) -> str:
    """A blob's git object id, as the Hub reports it (`oid`, the ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One repository: its commits (sha -> files) and its branches (name -> sha)."""

    repo_type: str  # "model" or "dataset"
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit holding `files` (the whole tree); `branch` moves to it. Returns its sha."""
        sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()  # unique, as a commit's is: no two trees share one
        self.commits[sha] = dict(files)
        self.refs[branch] = sha
        return sha

    def sha(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """The server: `add_repo`, then point `HF_ENDPOINT` at `url`."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def add_repo(self, repo_type: str, repo_id: str, files: dict[str, bytes]) -> Repo:
        repo = Repo(repo_type, repo_id)
        repo.commit(files)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    # -- the endpoints ---------------------------------------------------------------------
    def _app(self, environ, start_response):  # noqa: ANN001 (WSGI)
        request = Request(environ)
        self.requests.append((request.method, request.full_path))
        return self._route(request)(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path
        if (match := _API.match(path)) is not None:
            kind, repo_id, op, rev, rest = match.groups()
            repo = self.repos.get((kind[:-1], repo_id))
            if repo is None:
                return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
            sha = repo.sha(unquote(rev or "main"))
            if sha is None:
                return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = repo.commits[sha]
            if op in (None, "revision"):
                return _json({"id": repo_id, "sha": sha, "private": False, "disabled": False,
                              "cardData": _card_data(files.get("README.md", b"")),
                              "siblings": [{"rfilename": name} for name in sorted(files)]})
            if op == "tree":
                return self._tree(request, files, unquote(rest or "").strip("/"))
            paths = [p.strip("/") for p in request.form.getlist("paths")]
            return _json([e for p in paths if (e := _entry(files, p)) is not None])
        if (match := _RESOLVE.match(path)) is not None:
            datasets, repo_id, rev, name = match.groups()
            repo = self.repos.get(("dataset" if datasets else "model", repo_id))
            sha = repo.sha(unquote(rev)) if repo else None
            if repo is None or sha is None:
                return _error(404, "RepoNotFound" if repo is None else "RevisionNotFound", path)
            data = repo.commits[sha].get(unquote(name))
            if data is None:
                return _error(404, "EntryNotFound", f"{name} not found")
            return _file(request, data, sha)
        return _error(404, None, f"no such endpoint: {path}")

    def _tree(self, request: Request, files: dict[str, bytes], folder: str) -> Response:
        recursive = request.args.get("recursive", "false").lower() == "true"
        if folder and folder in files:
            entries = [_entry(files, folder)]
        else:
            entries = _children(files, folder, recursive)
            if folder and not entries:
                return _error(404, "EntryNotFound", f"{folder} not found")
        start = int(request.args.get("cursor", "0"))
        response = _json(entries[start:start + PAGE])
        if start + PAGE < len(entries):
            query = {**request.args.to_dict(), "cursor": str(start + PAGE)}
            response.headers["Link"] = f'<{request.base_url}?{urlencode(query)}>; rel="next"'
        return response


def _card_data(readme: bytes) -> dict:
    """The YAML header of a repo's card (README.md), as the Hub serves it (`cardData`)."""
    import yaml

    text = readme.decode()
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    return yaml.safe_load(text[4:text.index("\n---", 4)]) or {}


def _children(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
    prefix = f"{folder}/" if folder else ""
    found: dict[str, dict] = {}
    for name in sorted(files):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        for depth in range(1, len(parts)):  # the folders on the way
            sub = prefix + "/".join(parts[:depth])
            if depth == 1 or recursive:
                found.setdefault(sub, _folder(files, sub))
        if recursive or len(parts) == 1:
            found[name] = _entry(files, name)
    return [found[key] for key in sorted(found)]


def _entry(files: dict[str, bytes], path: str) -> dict | None:
    if path in files:
        data = files[path]
        return {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}
    if any(name.startswith(f"{path}/") for name in files):
        return _folder(files, path)
    return None


def _folder(files: dict[str, bytes], path: str) -> dict:
    inside = sorted(n for n in files if n.startswith(f"{path}/"))
    return {"type": "directory", "oid": hashlib.sha1("\n".join(inside).encode()).hexdigest(), "size": 0, "path": path}


def _file(request: Request, data: bytes, sha: str) -> Response:
    headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Accept-Ranges": "bytes"}
    ranged = request.range
    if ranged is not None and (span := ranged.range_for_length(len(data))) is not None:
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        body, status = data[start:stop], 206
    else:
        body, status = data, 200
    response = Response(b"" if request.method == "HEAD" else body, status=status, headers=headers,
                        content_type="application/octet-stream")
    response.headers["Content-Length"] = str(len(body))
    return response


def _json(data) -> Response:  # noqa: ANN001
    import json

    return Response(json.dumps(data), content_type="application/json")


def _error(status: int, code: str | None, message: str) -> Response:
    import json

    response = Response(json.dumps({"error": message}), status=status, content_type="application/json")
    if code:
        response.headers["X-Error-Code"] = code
        response.headers["X-Error-Message"] = message
    return response


def hf_uri(repo: Repo, path: str = "", revision: str | None = None) -> str:
    """`hf://[datasets/]org/name[@rev]/path` of a file or folder of `repo`."""
    prefix = "datasets/" if repo.repo_type == "dataset" else ""
    at = f"@{quote(revision, safe='')}" if revision else ""
    return f"hf://{prefix}{repo.repo_id}{at}" + (f"/{path}" if path else "")
