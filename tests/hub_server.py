"""A loopback fake of the Hugging Face Hub HTTP API, so tests push and pull through the real huggingface_hub client.

`HubServer` is a real HTTP server on 127.0.0.1 that speaks the slice of the Hub API that `HfApi.create_repo`,
`HfApi.upload_folder` / `create_commit`, `hf_hub_download`, `snapshot_download` and transformers'
`from_pretrained` use. Nothing in the client is mocked: requests go through huggingface_hub's own httpx client.

Protocol notes (huggingface_hub 2.4, read from its sources):

- Uploads: `POST /api/{type}s/{repo}/preupload/{rev}` answers `"uploadMode": "regular"` for every file, so file
  content travels base64-encoded inside the NDJSON body of `POST /api/{type}s/{repo}/commit/{rev}`. The client
  obeys the server's upload mode whatever the file is (binary or not), so neither git-LFS nor Xet is ever needed;
  were a file answered `"lfs"`, a client with `hf_xet` installed would go to Xet storage, not to the LFS batch API.
- Xet is never advertised: resolve responses carry no `X-Xet-Hash` / `X-Xet-Refresh-Route` / `Link: xet-auth`,
  tree entries carry no `xetHash`, so downloads are plain HTTP GETs of `/{repo}/resolve/{rev}/{path}`.
- All files are plain git blobs: `ETag` is the git blob sha1 (what the real Hub sends for non-LFS files); no
  `X-Linked-Etag` / `X-Linked-Size` and no redirect to a CDN.
- A new repo gets an initial commit holding a `.gitattributes`, like on the real Hub.
- Errors carry the Hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) and `X-Error-Message`
  headers and a `{"error": ...}` body: `hf_raise_for_status` turns them into the matching exceptions, and
  transformers relies on `EntryNotFound` to go on to the next candidate filename.
- Auth: writes need `Authorization: Bearer <token>`, reads of private repos too (anonymous: 401 + `RepoNotFound`,
  as on the Hub). A wrong token is answered 401 "Invalid credentials in Authorization header" on any request.

Environment: huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HOME`... once, at import time, into
`huggingface_hub.constants`, and its HTTP event hook refuses every request while `constants.HF_HUB_OFFLINE` is true
(this test suite sets it before anything imports huggingface_hub). So the test process itself never talks to the
server: clients run in child processes, `run_client(url, home, script)`, whose environment `hub_environ(url, home)`
points at the server and lifts offline mode. The server runs in a thread of the test process, so tests inspect what
it stored and received directly. The `hub_server` fixture only starts a server.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_TOKEN = "hf_test_token"
USER_NAME = "user"  # namespace of repos created without an organization, and whoami's answer

# The `.gitattributes` the Hub writes into every new repo (abridged): it makes fresh repos look like real ones.
INITIAL_GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""

_REPO = r"(?P<repo>[^/]+/[^/]+)"  # only namespaced ids: repos created without an organization go under USER_NAME
_API_REPO = rf"^/api/(?P<type>models|datasets)/{_REPO}"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "_create_repo"),
    ("DELETE", re.compile(r"^/api/repos/delete$"), "_delete_repo"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "_whoami"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "_validate_yaml"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "_agent_harnesses"),
    ("POST", re.compile(rf"{_API_REPO}/preupload/(?P<rev>[^/]+)$"), "_preupload"),
    ("POST", re.compile(rf"{_API_REPO}/commit/(?P<rev>[^/]+)$"), "_commit"),
    ("GET", re.compile(rf"{_API_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"), "_tree"),
    ("GET", re.compile(rf"{_API_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "_info"),
    ("GET", re.compile(rf"^/(?:(?P<prefix>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "_resolve"),
    ("HEAD", re.compile(rf"^/(?:(?P<prefix>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "_resolve"),
]
_TYPE_OF_SEGMENT = {"models": "model", "datasets": "dataset"}
_URL_PREFIX = {"model": "", "dataset": "datasets/"}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub sends as `ETag` for non-LFS files and the client compares with."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    # The client's `parse_datetime` accepts exactly this shape ('%Y-%m-%dT%H:%M:%S.%fZ').
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclasses.dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    date: str
    files: dict[str, str]  # path in repo -> git blob sha1 (content lives in the blob store)


@dataclasses.dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    refs: dict[str, str]  # branch -> commit oid
    commits: dict[str, _Commit]


@dataclasses.dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class _HubError(Exception):
    """An error answer, Hub-style: status, `X-Error-Code` / `X-Error-Message` headers and a JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})

    def response(self) -> _Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return _json({"error": self.message}, self.status, headers)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class HubServer:
    """A fake Hugging Face Hub on 127.0.0.1:<free port>, serving from a daemon thread until `close()`.

    Repos live under `root` (a fresh temporary directory by default): blobs by git sha1 under `blobs/`, refs and
    commits in `state.json`, so a new server on the same root sees the same repos. Every request is recorded in
    `requests` as `{"method", "path" (with query), "headers" (lower-cased names), "body" (bytes)}`; requests no route
    answered are also listed in `unhandled`, and handler crashes (answered 500) in `errors`.
    """

    def __init__(self, token: str = DEFAULT_TOKEN, root: Path | None = None):
        self.token = token
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="hub_server_")
        self.root = Path(root) if root is not None else Path(self._tmp.name)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.requests: list[dict[str, Any]] = []
        self.unhandled: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._load()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True  # a stuck handler must never keep the test process alive
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval so `close()` returns quickly: `shutdown()` waits for the serve loop to notice.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and join the thread (bounded by `timeout` seconds). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # `shutdown()` blocks until serve_forever returns; run it aside so a wedged loop cannot hang the caller.
        stopper = threading.Thread(target=self._httpd.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout)
        self._httpd.server_close()
        self._thread.join(timeout)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ inspection helpers for tests

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The repo's files at `revision` (branch or commit oid): path in repo -> content."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.commits[self._resolve_revision(repo, revision)]
            return {path: self._read_blob(oid) for path, oid in sorted(commit.files.items())}

    def head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str:
        """The commit oid `branch` points to."""
        with self._lock:
            return self._repos[(repo_type, repo_id)].refs[branch]

    def commit_titles(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> list[str]:
        """Commit titles from `branch`'s head back to the initial commit."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            titles, oid = [], repo.refs.get(branch)
            while oid is not None:
                titles.append(repo.commits[oid].title)
                oid = repo.commits[oid].parent
            return titles

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        with self._lock:
            return sorted(repo_id for kind, repo_id in self._repos if kind == repo_type)

    def requests_to(self, fragment: str) -> list[dict[str, Any]]:
        """Recorded requests whose path contains `fragment` (e.g. "/commit/", "/resolve/")."""
        return [r for r in list(self.requests) if fragment in r["path"]]

    # ------------------------------------------------------------------ storage

    def _state_path(self) -> Path:
        return self.root / "state.json"

    def _load(self) -> None:
        if not self._state_path().exists():
            return
        for raw in json.loads(self._state_path().read_text()):
            commits = {oid: _Commit(**c) for oid, c in raw.pop("commits").items()}
            repo = _Repo(commits=commits, **raw)
            self._repos[(repo.repo_type, repo.repo_id)] = repo

    def _save(self) -> None:
        state = [dataclasses.asdict(repo) for repo in self._repos.values()]
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self._state_path())

    def _write_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.root / "blobs" / oid
        if not path.exists():
            path.write_bytes(data)
        return oid

    def _read_blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()

    def _blob_size(self, oid: str) -> int:
        return (self.root / "blobs" / oid).stat().st_size

    def _new_commit(self, repo: _Repo, parent: str | None, title: str, files: dict[str, str]) -> _Commit:
        # Deterministic oid from what the commit is (a chain of parents keeps them distinct).
        digest = json.dumps([repo.repo_type, repo.repo_id, parent, title, sorted(files.items())]).encode()
        commit = _Commit(hashlib.sha1(digest).hexdigest(), parent, title, _now(), dict(files))
        repo.commits[commit.oid] = commit
        return commit

    # ------------------------------------------------------------------ request helpers

    def _auth(self, headers: dict[str, str]) -> bool:
        """True with the right token, False without any; a wrong token is an error whatever the route (as on the Hub)."""
        value = headers.get("authorization")
        if value is None:
            return False
        if value.startswith("Bearer ") and hmac.compare_digest(value[len("Bearer ") :], self.token):
            return True
        raise _HubError(401, "Invalid credentials in Authorization header")

    def _require_write(self, headers: dict[str, str]) -> None:
        if not self._auth(headers):
            raise _HubError(401, "Invalid username or password.")

    def _repo_for_read(self, repo_type: str, repo_id: str, headers: dict[str, str]) -> _Repo:
        authed = self._auth(headers)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and not authed:
            # The Hub hides private repos from anonymous callers behind the same error as a missing one.
            raise _HubError(401, "Invalid username or password.", "RepoNotFound")
        return repo

    def _repo_for_write(self, repo_type: str, repo_id: str, headers: dict[str, str]) -> _Repo:
        self._require_write(headers)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve_revision(self, repo: _Repo, revision: str) -> str:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.commits:
            return revision
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # ------------------------------------------------------------------ routes

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response:
        """Answer one request (called from the handler threads)."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        matched_path = False
        for route_method, pattern, handler_name in _ROUTES:
            match = pattern.match(split.path)
            if match is None:
                continue
            matched_path = True
            if route_method != method:
                continue
            # Revisions come percent-encoded as one segment (`refs%2Fpr%2F1`), paths with their slashes kept.
            params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            try:
                with self._lock:
                    return getattr(self, handler_name)(method=method, query=query, headers=headers, body=body, **params)
            except _HubError as error:
                return error.response()
        self.unhandled.append(f"{method} {raw_path}")
        if matched_path:
            return _HubError(405, f"HubServer: {method} not allowed on {split.path}").response()
        return _HubError(501, f"HubServer does not implement {method} {split.path}").response()

    def _whoami(self, headers: dict[str, str], **_: Any) -> _Response:
        self._require_write(headers)
        return _json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER_NAME,
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def _validate_yaml(self, **_: Any) -> _Response:
        # `create_commit` validates a README.md's metadata first; every card is fine here.
        return _json({"errors": [], "warnings": []})

    def _agent_harnesses(self, **_: Any) -> _Response:
        # huggingface_hub fetches this registry (once per process) to build its user agent when not offline.
        return _json({"standardEnvVars": [], "harnesses": {}})

    def _create_repo(self, headers: dict[str, str], body: bytes, **_: Any) -> _Response:
        self._require_write(headers)
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"HubServer only hosts model and dataset repos, not {repo_type!r}")
        repo_id = f"{payload.get('organization') or USER_NAME}/{payload['name']}"
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        existing = self._repos.get((repo_type, repo_id))
        if existing is not None:
            # `create_repo(exist_ok=True)` swallows the 409 and then reads the repo's "url" from this very body.
            message = f"You already created this {repo_type} repo"
            return _json({"error": message, "url": self._repo_url(existing)}, 409, {"X-Error-Message": message})
        repo = _Repo(repo_type, repo_id, private, _now(), {}, {})
        initial = self._new_commit(
            repo, None, "initial commit", {".gitattributes": self._write_blob(INITIAL_GITATTRIBUTES)}
        )
        repo.refs["main"] = initial.oid
        self._repos[(repo_type, repo_id)] = repo
        self._save()
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self, headers: dict[str, str], body: bytes, **_: Any) -> _Response:
        self._require_write(headers)
        payload = json.loads(body or b"{}")
        key = (payload.get("type") or "model", f"{payload.get('organization') or USER_NAME}/{payload['name']}")
        if self._repos.pop(key, None) is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        self._save()
        return _Response(200)

    def _preupload(self, type: str, repo: str, rev: str, headers: dict[str, str], body: bytes, query, **_: Any):
        target = self._repo_for_write(_TYPE_OF_SEGMENT[type], repo, headers)
        if query.get("create_pr"):
            raise _HubError(400, "HubServer does not support pull requests (create_pr)")
        current = target.commits[self._resolve_revision(target, rev)].files
        files = [
            {
                "path": f["path"],
                # Always a plain git blob: the content then rides base64 in the commit, no LFS or Xet round-trip.
                "uploadMode": "regular",
                "shouldIgnore": False,
                # The remote blob's git sha1 lets the client drop unchanged files from the commit, as on the Hub.
                "oid": current.get(f["path"]),
            }
            for f in json.loads(body)["files"]
        ]
        return _json({"files": files, "commitOid": target.refs.get(rev, rev)})

    def _commit(self, type: str, repo: str, rev: str, headers: dict[str, str], body: bytes, query, **_: Any):
        target = self._repo_for_write(_TYPE_OF_SEGMENT[type], repo, headers)
        if query.get("create_pr"):
            raise _HubError(400, "HubServer does not support pull requests (create_pr)")
        if rev not in target.refs:
            raise _HubError(
                404, f"Invalid rev id: {rev} (HubServer commits to existing branches only)", "RevisionNotFound"
            )
        parent = target.commits[target.refs[rev]]
        files = dict(parent.files)
        title = "Commit"
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary") or title
                expected = value.get("parentCommit")
                if expected is not None and expected != parent.oid:
                    raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HubError(400, f"HubServer only accepts base64 file content, got {value.get('encoding')!r}")
                files[value["path"]] = self._write_blob(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise _HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            elif key == "lfsFile":
                # Never reached while preupload answers "regular": there is no LFS store to point at.
                raise _HubError(400, f"HubServer has no LFS storage (lfsFile {value.get('path')!r})")
            else:
                raise _HubError(400, f"HubServer does not understand commit operation {key!r}")
        commit = self._new_commit(target, parent.oid, title, files)
        target.refs[rev] = commit.oid
        self._save()
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(target)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _info(self, type: str, repo: str, headers: dict[str, str], query, rev: str = "main", **_: Any):
        target = self._repo_for_read(_TYPE_OF_SEGMENT[type], repo, headers)
        commit = target.commits[self._resolve_revision(target, rev)]
        with_blobs = query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, oid in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=self._blob_size(oid), blobId=oid)
            siblings.append(sibling)
        return _json(
            {
                "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
                "id": repo,
                "modelId" if type == "models" else "datasetId": repo,
                "author": repo.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": target.created,
                "private": target.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            },
            headers={"X-Repo-Commit": commit.oid},
        )

    def _tree(self, type: str, repo: str, rev: str, headers: dict[str, str], query, path: str = "", **_: Any):
        target = self._repo_for_read(_TYPE_OF_SEGMENT[type], repo, headers)
        commit = target.commits[self._resolve_revision(target, rev)]
        recursive = query.get("recursive", "").lower() in ("1", "true")
        expand = query.get("expand", "").lower() in ("1", "true")
        base = path.strip("/")
        prefix = f"{base}/" if base else ""
        files = {p: oid for p, oid in commit.files.items() if p.startswith(prefix)}
        if base and not files:
            raise _HubError(404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        folders: dict[str, list[str]] = {}  # folder path -> oids under it (for a stable folder oid)
        entries: list[dict[str, Any]] = []
        for file_path, oid in sorted(files.items()):
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                folders.setdefault(prefix + "/".join(parts[:depth]), []).append(oid)
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "oid": oid, "size": self._blob_size(oid), "path": file_path})
        for folder, oids in folders.items():
            oid = hashlib.sha1("".join(oids).encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
        if expand:
            for entry in entries:
                entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        return _json(entries, headers={"X-Repo-Commit": commit.oid})

    def _resolve(self, method: str, repo: str, rev: str, path: str, headers: dict[str, str], prefix: str = "", **_):
        target = self._repo_for_read("dataset" if prefix else "model", repo, headers)
        commit = target.commits[self._resolve_revision(target, rev)]
        oid = commit.files.get(path)
        if oid is None:
            # X-Repo-Commit lets the client cache the miss (`.no_exist/<commit>/<path>`), as with the real Hub.
            raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self._read_blob(oid)
        response_headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{oid}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        status = 200
        range_match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", ""))
        if range_match is not None and method == "GET":
            # Resumed downloads ask for the rest of a partial file.
            start = int(range_match.group(1))
            end = int(range_match.group(2)) if range_match.group(2) else len(data) - 1
            response_headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return _Response(status, data, response_headers)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, hands it to the `HubServer`, writes its answer and closes the connection."""

    # HTTP/1.1 framing with `Connection: close` on every answer: no idle keep-alive sockets are left to pin handler
    # threads once the test is over (huggingface_hub's shared httpx client would otherwise keep them open).
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def _serve(self) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self._read_body(headers)
        hub.requests.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
        try:
            response = hub.handle(self.command, self.path, headers, body)
        except Exception:
            hub.errors.append(traceback.format_exc())
            response = _HubError(500, "HubServer crashed, see HubServer.errors").response()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        # HEAD answers announce the size of what GET would send, which is what the client reads the file size from.
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        self.close_connection = True

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the final empty line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded on the HubServer; stderr noise would only clutter test output


# ---------------------------------------------------------------------- clients, in child processes


def hub_environ(url: str, home: Path, token: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process that should talk to the Hub at `url` only, with all its caches under `home`.

    Starts from `base` (default: `os.environ`), sets `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_ASSETS_CACHE`,
    `HF_XET_CACHE`, `HF_TOKEN_PATH` (so the user's saved token is neither read nor sent) and
    `HF_HUB_DISABLE_TELEMETRY`, `HF_HUB_DISABLE_UPDATE_CHECK`; sets `HF_TOKEN` to `token` (removed when None); removes
    `HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`, `HUGGINGFACE_HUB_CACHE`, `HUGGINGFACE_ASSETS_CACHE` and
    `HUGGING_FACE_HUB_TOKEN`. `run_client` runs scripts under it; for other commands use
    `subprocess.run(..., env=hub_environ(url, home))`.
    """
    env = dict(os.environ if base is None else base)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE"):
        env.pop(name, None)
    env.pop("HUGGING_FACE_HUB_TOKEN", None)
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(
        HF_ENDPOINT=url.rstrip("/"),
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_ASSETS_CACHE=str(home / "assets"),
        HF_XET_CACHE=str(home / "xet"),
        HF_TOKEN_PATH=str(home / "token"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
    )
    return env


def run_client(url: str, home: Path, script: str, token: str | None = None, timeout: float = 120.0) -> str:
    """Run the Python `script` in a child process pointed at the Hub at `url` (`hub_environ(url, home, token)`).

    This is how tests talk to a `HubServer`: the suite sets HF_HUB_OFFLINE=1 before huggingface_hub is imported, which
    freezes offline mode (and the endpoint and cache paths) into this process's `huggingface_hub.constants`; a child
    imports huggingface_hub afresh under the server's environment, so nothing in this process is patched.

    `script` is dedented and run as `python -c` with `home` (created if need be) as working directory, so a repo id
    such as "org/repo" can never be taken for a local folder. Children report to the test by printing (e.g. one JSON
    line) or by writing files under the test's tmp_path. Returns the child's stdout; a non-zero exit or a timeout
    raises AssertionError with the tail of the child's stderr (its traceback).
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", textwrap.dedent(script)]
    try:
        result = subprocess.run(
            command,
            env=hub_environ(url, home, token),
            cwd=home,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr or ""
        raise AssertionError(f"hub client timed out after {timeout} s; stderr tail:\n{stderr[-4000:]}") from None
    if result.returncode != 0:
        raise AssertionError(
            f"hub client exited with {result.returncode}; stdout tail:\n{result.stdout[-1000:]}\n"
            f"stderr tail:\n{result.stderr[-4000:]}"
        )
    return result.stdout


@pytest.fixture(name="hub_server")
def hub_server_fixture(tmp_path: Path) -> Iterator[HubServer]:
    """A running `HubServer` (token `DEFAULT_TOKEN`, repos under tmp_path/hub_server), stopped after the test.

    It patches nothing: this process stays offline; clients reach the server through `run_client(hub_server.url, ...)`.
    Import it as `from hub_server import hub_server_fixture  # noqa: F401` and take a `hub_server` argument: importing
    the name `hub_server` itself works too, but then ruff flags every `hub_server` argument as a redefinition (F811).
    """
    with HubServer(root=tmp_path / "hub_server") as server:
        yield server


hub_server = hub_server_fixture  # the same fixture under its own name, for `from hub_server import hub_server`
