"""A loopback stand-in for the Hugging Face Hub HTTP API, for tests that drive the real `huggingface_hub` client.

Why: push/pull code paths (`upload_folder`, `push_to_hub`, `snapshot_download`, `from_pretrained(repo_id)`) are the
ones most likely to break on a client upgrade, and mocking `HfApi` hides exactly those breaks. This server speaks just
enough of the Hub's wire protocol (checked against huggingface_hub 2.4) for the unmodified client to push and pull
model repos, keeps everything in memory, and records every request (path and all headers) so a test can assert on
what went over the wire, e.g. that the token rode in `Authorization` but never landed in a stored file.

Usage::

    with HubServer() as hub:
        api = HfApi(endpoint=hub.url, token="hf_x")
        api.create_repo("tester/demo")
        api.upload_folder(repo_id="tester/demo", folder_path=folder)
        assert hub.files("tester/demo") == {...}

Pointing the client at the server:

* Explicitly: `HfApi(endpoint=hub.url)`, `snapshot_download(..., endpoint=hub.url)`,
  `hf_hub_download(..., endpoint=hub.url)`. Under this suite's conftest, call `go_online(monkeypatch)` first:
  offline mode blocks requests to any endpoint.
* Implicitly, in-process (code that doesn't take an endpoint, e.g. transformers' `push_to_hub`/`from_pretrained`):
  call `point_client_at(monkeypatch, hub.url)`. `HF_ENDPOINT` is read once, at import, into
  `huggingface_hub.constants.ENDPOINT` and `HUGGINGFACE_CO_URL_TEMPLATE`, so setting the variable in a running
  process does nothing; the helper patches both constants (every client module reads them through `constants.` at
  call time), drops transformers' cached `HfApi` (built once with the endpoint of its first use), patches
  `datasets.config.HF_ENDPOINT` (another import-time copy), and turns off offline mode, which `tests/conftest.py`
  switches on for the whole suite and which the client also caches at import (`constants.HF_HUB_OFFLINE`).
* Subprocesses: the helper also sets `HF_ENDPOINT` and `HF_HUB_DISABLE_TELEMETRY` and unsets `HF_HUB_OFFLINE` and
  `TRANSFORMERS_OFFLINE` in `os.environ`, which a child process inherits and reads at its own import.
* Telemetry: `go_online` (called by `point_client_at`) turns it off, else the process's first online request fetches
  `/api/agent-harnesses` from `constants.ENDPOINT` even when the call names another endpoint.

Xet: `hf_xet` is installed, so the client takes its Xet paths (`upload_folder` goes through the pipelined uploader),
but Xet is only used for files the preupload answer marks "lfs", and for downloads only when the resolve response
carries `X-Xet-Hash`. This server answers every file "regular" (inlined, base64, in the commit) and never sends Xet
headers, so nothing Xet-related ever goes over the wire and `HF_HUB_DISABLE_XET` is not needed. Files are therefore
limited to what a regular commit carries (the real Hub caps them at 10 MB; keep test files small).

Not implemented (answered 404 and listed in `HubServer.unexpected`): dataset/space repos, branches other than
`main`, pull requests, LFS/Xet uploads, commit listings, paths-info.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

FAKE_USER = "tester"
MAIN = "main"


def git_blob_oid(content: bytes) -> str:
    """Git's blob id of `content`: the Hub's ETag and tree `oid` for a regular file.

    The client compares it with its own `sha.git_hash` of a local file (preupload answer) to drop unchanged files
    from a commit, so it has to be the real git formula, not any hash.
    """
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; `headers` keeps every header with the client's spelling."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (HTTP header names are case-insensitive, the client lowercases some)."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


@dataclass
class _Commit:
    oid: str
    message: str
    description: str
    added: list[str]
    deleted: list[str]
    tree: dict[str, bytes]
    created: float = field(default_factory=time.time)


class _HubError(Exception):
    """An error answer: JSON body plus the `X-Error-Code` the client maps to its typed exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.extra = headers or {}, extra


class _Repo:
    """A model repo: a linear history of full snapshots on a single `main` branch."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id
        self.commits: list[_Commit] = []
        self.commits.append(self._new_commit("initial commit", "", [], [], {}))

    @property
    def head(self) -> _Commit:
        return self.commits[-1]

    def _new_commit(self, message, description, added, deleted, tree) -> _Commit:
        parent = self.commits[-1].oid if self.commits else ""
        seed = json.dumps([self.repo_id, parent, message, time.time_ns(), sorted(tree)]).encode()
        return _Commit(hashlib.sha1(seed).hexdigest(), message, description, added, deleted, tree)

    def find(self, revision: str) -> _Commit:
        """`main` or a (prefix of a) commit oid, like the Hub; anything else is an unknown revision."""
        if revision == MAIN:
            return self.head
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            for commit in reversed(self.commits):
                if commit.oid.startswith(revision):
                    return commit
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, message: str, description: str, operations: list[tuple[str, str, bytes]]) -> _Commit:
        tree = dict(self.head.tree)
        added, deleted = [], []
        for kind, path, content in operations:
            if kind == "file":
                tree[path] = content
                added.append(path)
            elif kind == "deletedFile":
                if path not in tree:
                    raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del tree[path]
                deleted.append(path)
            else:  # deletedFolder
                gone = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
                for p in gone:
                    del tree[p]
                deleted.extend(gone)
        self.commits.append(self._new_commit(message, description, added, deleted, tree))
        return self.head


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(payload, status: int = 200) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def _error_reply(error: _HubError) -> _Reply:
    reply = _json_reply({"error": error.message, **error.extra}, error.status)
    reply.headers["X-Error-Message"] = error.message.encode("ascii", "backslashreplace").decode()  # latin-1 only
    if error.code:
        reply.headers["X-Error-Code"] = error.code
    reply.headers.update(error.headers)
    return reply


# (method, pattern on the still-percent-encoded path, handler). The client quotes revisions with `safe=""`, so a
# revision is always one path segment; repo ids are `namespace/name` or a bare `name`.
_RESOLVE = r"/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
_ROUTES = [
    ("GET", r"/api/whoami-v2", "_whoami"),
    ("GET", r"/api/agent-harnesses", "_agent_harnesses"),
    ("POST", r"/api/repos/create", "_create_repo"),
    ("POST", r"/api/validate-yaml", "_validate_yaml"),
    ("POST", r"/api/models/(?P<repo>.+?)/preupload/(?P<rev>[^/]+)", "_preupload"),
    ("POST", r"/api/models/(?P<repo>.+?)/commit/(?P<rev>[^/]+)", "_commit"),
    ("GET", r"/api/models/(?P<repo>.+?)/revision/(?P<rev>[^/]+)", "_model_info"),
    ("GET", r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)", "_model_info"),
    ("GET", r"/api/models/(?P<repo>.+?)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "_tree"),
    ("HEAD", _RESOLVE, "_resolve"),
    ("GET", _RESOLVE, "_resolve"),
]


class HubServer:
    """In-memory Hub on `127.0.0.1:<free port>`, served from a background thread; see the module docstring.

    Attributes:
        url: the endpoint to hand to the client (`http://127.0.0.1:<port>`, no trailing slash).
        user: the account `whoami` reports and bare repo names are created under.
        requests: every request received, in order (`RecordedRequest`: method, path, query, all headers).
        unexpected: requests no route matched (answered 404) or whose payload a route couldn't read (answered 400,
            not 5xx, which the client would retry with backoff); a test can assert it stays empty.
    """

    def __init__(self, user: str = FAKE_USER):
        self.user = user
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[RecordedRequest] = []
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ test-facing API

    def canonical(self, repo_id: str) -> str:
        """`name` -> `user/name`: how the Hub files a repo created without a namespace."""
        return repo_id if "/" in repo_id else f"{self.user}/{repo_id}"

    @property
    def repo_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._repos)

    def files(self, repo_id: str, revision: str = MAIN) -> dict[str, bytes]:
        """Path -> content of every file in the repo at `revision` (`main` or a commit oid)."""
        with self._lock:
            return dict(self._repo(repo_id).find(revision).tree)

    def commits(self, repo_id: str) -> list[dict]:
        """The repo's history, oldest first, starting with the Hub's automatic "initial commit".

        Each entry: `oid`, `message`, `description`, `added` (paths written, in payload order), `deleted`.
        """
        with self._lock:
            history = self._repo(repo_id).commits
            return [
                {
                    "oid": c.oid,
                    "message": c.message,
                    "description": c.description,
                    "added": c.added,
                    "deleted": c.deleted,
                }
                for c in history
            ]

    def requests_to(self, fragment: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path contains `fragment` (and with `method`, if given)."""
        with self._lock:
            return [r for r in self.requests if fragment in r.path and method in (None, r.method)]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        split = urlsplit(raw_path)
        request = RecordedRequest(method, unquote(split.path), parse_qs(split.query), headers)
        with self._lock:
            self.requests.append(request)
            for route_method, pattern, name in _ROUTES:
                match = re.fullmatch(pattern, split.path)
                if route_method == method and match:
                    groups = {key: unquote(value) for key, value in match.groupdict(default="").items()}
                    try:
                        return getattr(self, name)(request, groups, body)
                    except _HubError as error:
                        return _error_reply(error)
                    except (KeyError, TypeError, ValueError) as error:  # a payload this server can't read
                        self.unexpected.append(request)
                        return _error_reply(_HubError(400, f"hub_server could not handle the request: {error!r}"))
            self.unexpected.append(request)
        return _error_reply(_HubError(404, f"hub_server has no route for {method} {split.path}"))

    def _repo(self, repo_id: str) -> _Repo:
        repo = self._repos.get(self.canonical(repo_id))
        if repo is None:
            raise _HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    @staticmethod
    def _writable_main(request: RecordedRequest, revision: str) -> None:
        """Writes go to `main` only: no branches, no pull requests."""
        if request.query.get("create_pr", ["0"])[0] not in ("0", "false"):
            raise _HubError(400, "hub_server does not support pull requests (create_pr)")
        if revision != MAIN:
            raise _HubError(404, f"hub_server only has the '{MAIN}' branch, not {revision!r}", "RevisionNotFound")

    # ------------------------------------------------------------------ endpoints (called with the lock held)

    def _whoami(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        if not request.header("Authorization"):
            raise _HubError(401, "Invalid credentials in Authorization header")
        access = {"displayName": "hub_server", "role": "write"}
        return _json_reply(
            {
                "type": "user",
                "name": self.user,
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": access},
            }
        )

    def _agent_harnesses(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        # Fetched once per process to build the user agent unless telemetry is off (`go_online` turns it off).
        return _json_reply({"standardEnvVars": [], "harnesses": {}})

    def _create_repo(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise _HubError(400, f"hub_server only hosts model repos, not {repo_type!r}")
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        if repo_id in self._repos:
            # `create_repo(exist_ok=True)` (what transformers' push_to_hub uses) swallows exactly this 409, then
            # still reads the repo url from its body.
            raise _HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        self._repos[repo_id] = _Repo(repo_id)
        return _json_reply({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        # Called before any commit that contains a README.md (model cards); the metadata is accepted as is.
        return _json_reply({"errors": [], "warnings": []})

    def _preupload(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        repo = self._repo(groups["repo"])
        self._writable_main(request, groups["rev"])
        tree = repo.head.tree
        answers = [
            {
                "path": f["path"],
                "uploadMode": "regular",  # inline in the commit: keeps the client off the LFS and Xet protocols
                "shouldIgnore": False,
                # The client skips a file whose oid here equals its local git oid, like the Hub does.
                "oid": git_blob_oid(tree[f["path"]]) if f["path"] in tree else None,
            }
            for f in json.loads(body)["files"]
        ]
        return _json_reply({"files": answers, "commitOid": repo.head.oid})

    def _commit(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        repo = self._repo(groups["repo"])
        self._writable_main(request, groups["rev"])
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not repo.head.oid.startswith(parent):
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        operations = [_operation(line) for line in lines[1:]]
        commit = repo.commit(header.get("summary", ""), header.get("description", ""), operations)
        commit_url = f"{self.url}/{repo.repo_id}/commit/{commit.oid}"
        return _json_reply({"success": True, "commitOid": commit.oid, "commitUrl": commit_url, "hookOutput": ""})

    def _model_info(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        repo = self._repo(groups["repo"])
        commit = repo.find(groups.get("rev") or MAIN)
        info = {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": _iso(commit.created),
            "createdAt": _iso(repo.commits[0].created),
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.tree)],
        }
        return _json_reply(info)

    def _tree(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        commit = self._repo(groups["repo"]).find(groups["rev"])
        folder = groups["path"].strip("/")
        recursive = request.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries = _tree_entries(commit.tree, folder, recursive)
        if folder and not entries:
            raise _HubError(404, f"{folder} does not exist on {commit.oid}", "EntryNotFound")
        return _json_reply(entries)  # one page: no `Link` header, so the client stops paginating

    def _resolve(self, request: RecordedRequest, groups: dict, body: bytes) -> _Reply:
        commit = self._repo(groups["repo"]).find(groups["rev"])
        headers = {"X-Repo-Commit": commit.oid}  # mandatory even on 404: the client caches "file absent at commit"
        content = commit.tree.get(groups["path"])
        if content is None:
            raise _HubError(404, f"{groups['path']} does not exist on {commit.oid}", "EntryNotFound", headers)
        headers |= {"ETag": f'"{git_blob_oid(content)}"', "Content-Type": "application/octet-stream"}
        headers["Accept-Ranges"] = "bytes"
        return _ranged(_Reply(200, content, headers), request.header("Range"))


def _operation(line: dict) -> tuple[str, str, bytes]:
    """One NDJSON commit line -> (kind, path, content) for `_Repo.commit`."""
    kind, value = line.get("key"), line.get("value", {})
    if kind == "file":
        raw = value["content"]
        content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
        return kind, value["path"], content
    if kind in ("deletedFile", "deletedFolder"):
        return kind, value["path"], b""
    # "lfsFile" would reference an LFS/Xet upload, which `_preupload` never asks for.
    raise _HubError(400, f"hub_server does not support commit operation {kind!r}")


def _tree_entries(tree: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
    """The tree API's answer under `folder`: directories then files, each with type, path, oid and size."""
    prefix = f"{folder}/" if folder else ""
    paths = [p for p in sorted(tree) if p.startswith(prefix)]
    ancestors = {"/".join(parts[:i]) for parts in (p.split("/") for p in paths) for i in range(1, len(parts))}
    folders = sorted(d for d in ancestors if d.startswith(prefix))
    if not recursive:
        depth = prefix.count("/")
        paths = [p for p in paths if p.count("/") == depth]
        folders = [d for d in folders if d.count("/") == depth]
    entries = [
        {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0} for d in folders
    ]
    entries += [{"type": "file", "path": p, "oid": git_blob_oid(tree[p]), "size": len(tree[p])} for p in paths]
    return entries


def _ranged(reply: _Reply, range_header: str | None) -> _Reply:
    """Honour `Range: bytes=start-[end]`, which the client sends to resume an interrupted download."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
    if not match:
        return reply
    size = len(reply.body)
    start, end = int(match[1]), int(match[2] or size - 1)
    reply.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return _Reply(206, reply.body[start : end + 1], reply.headers)


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP shell around `HubServer._dispatch`; `hub` is bound per server by a generated subclass."""

    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub: the client pools connections
    timeout = 30  # an idle pooled connection's handler thread gives up after this

    def _handle(self) -> None:
        reply = self.hub._dispatch(self.command, self.path, dict(self.headers.items()), self._read_body())
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))  # HEAD too: the client reads the size from it
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature is the base class's
        pass  # requests are recorded on the server; stderr noise would only clutter pytest output


def go_online(monkeypatch) -> None:
    """Undo the suite-wide offline mode for one test, in-process and for its child processes.

    `tests/conftest.py` sets `HF_HUB_OFFLINE=1` before anything imports `huggingface_hub`, which caches it in
    `constants.HF_HUB_OFFLINE`; while it is set the client refuses every request, even to an explicit endpoint.

    Telemetry goes off at the same time: with it on, the first request a process makes online first fetches the
    agent-harness registry (for the user agent) from `constants.ENDPOINT`, i.e. from huggingface.co whatever
    endpoint the call itself was given.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def point_client_at(monkeypatch, url: str, *, cache_dir: str | os.PathLike | None = None) -> None:
    """Send every in-process Hub call that doesn't name an endpoint (and every child process) to `url`.

    `monkeypatch` is pytest's fixture, so all of it is undone at test teardown. Also calls `go_online`. Pass
    `cache_dir` to also move the default download cache (`HF_HUB_CACHE`), so code that doesn't take a `cache_dir`
    (e.g. `from_pretrained(repo_id)`) doesn't write to the real one.
    """
    from huggingface_hub import constants, hf_api

    url = url.rstrip("/")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    # The module-level `HfApi()` behind `huggingface_hub.file_exists`, `model_info`, ... (PEFT calls them) copied
    # the endpoint when it was built at import.
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_ENDPOINT", url)
    go_online(monkeypatch)
    if cache_dir is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        transformers_hub = None
    if transformers_hub is not None:
        # transformers keeps one HfApi, built with the endpoint current at its first use. Imported here (not only
        # patched if already loaded) so the instance built during the test is dropped again at teardown.
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
    if "datasets.config" in sys.modules:  # not imported here: `datasets` is slow to import and rarely involved
        datasets_config = sys.modules["datasets.config"]
        monkeypatch.setattr(datasets_config, "HF_ENDPOINT", url)
        monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
