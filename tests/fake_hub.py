"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1, enough for create_repo + create_commit.

Implements the requests `huggingface_hub` 2.x sends for those two calls:
``POST /api/repos/create``, ``POST /api/validate-yaml`` (README metadata),
``POST /api/{type}s/{repo}/preupload/{rev}`` (answered "regular" for every
file, so contents come inline, base64, in the commit) and
``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON); and, for the model repositories a test
serves (``state.served``), what ``snapshot_download`` asks: ``GET /api/models/{repo}/revision/{rev}``
(the commit), ``GET /api/models/{repo}/tree/{rev}`` (the files) and ``HEAD`` / ``GET
/{repo}/resolve/{rev}/{file}``. Anything else is a
404 and is recorded, so a test sees an unexpected call instead of a silent pass.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass
class FakeHubState:
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # "model:user/name" -> create payload
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # "model:user/name" -> path -> content
    requests: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    fail_commits: int | None = None  # answer every commit with this HTTP status (a server or auth error)
    served: dict[str, dict[str, bytes]] = field(default_factory=dict)  # model repo id -> file -> bytes


class _Handler(BaseHTTPRequestHandler):
    state: FakeHubState
    endpoint: str

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        self.state.bodies.append(data)
        return data

    SHA = "c" * 40  # the one commit of every served repository

    def _served_file(self) -> tuple[str, str] | None:
        """(repo id, file) of a ``/{org}/{name}/resolve/{rev}/{file}`` request for a served repository."""
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, name = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
            if name in self.state.served.get(repo, {}):
                return repo, name
        return None

    def _file_headers(self, repo: str, name: str) -> bytes:
        data = self.state.served[repo][name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{abs(hash((repo, name, data))):x}"')
        self.send_header("X-Repo-Commit", self.SHA)
        self.end_headers()
        return data

    def do_HEAD(self) -> None:
        self.state.requests.append(("HEAD", self.path))
        found = self._served_file()
        if found is None:
            self.state.unexpected.append(("HEAD", self.path))
            self.send_response(404)
            self.end_headers()
            return
        self._file_headers(*found)

    def do_GET(self) -> None:
        self.state.requests.append(("GET", self.path))
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        if len(parts) >= 5 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree"):
            repo = f"{parts[2]}/{parts[3]}"
            if repo in self.state.served:
                files = self.state.served[repo]
                if parts[4] == "tree":  # snapshot_download lists the files of the commit
                    listing = [
                        {"type": "file", "path": n, "size": len(d), "oid": "0" * 40}
                        for n, d in sorted(files.items())
                    ]
                    self._reply(200, listing)
                    return
                siblings = [{"rfilename": name} for name in sorted(files)]
                self._reply(200, {"id": repo, "modelId": repo, "sha": self.SHA, "siblings": siblings})
                return
        found = self._served_file()
        if found is not None:
            self.wfile.write(self._file_headers(*found))
            return
        self.state.unexpected.append(("GET", self.path))
        self._reply(404, {"error": "not implemented by the fake hub"})

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        self.state.requests.append(("POST", path))
        self.state.auth_headers.append(self.headers.get("Authorization", ""))
        body = self._body()
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_type = payload.get("type", "model")
            repo_id = (
                f"{payload['organization']}/{payload['name']}"
                if payload.get("organization")
                else payload["name"]
            )
            key = f"{repo_type}:{repo_id}"
            if key in self.state.repos:
                self._reply(
                    409, {"error": "You already created this repo", "url": self._url(repo_type, repo_id)}
                )
                return
            self.state.repos[key] = payload
            self.state.files.setdefault(key, {})
            self._reply(200, {"url": self._url(repo_type, repo_id)})
            return
        if path == "/api/validate-yaml":
            self._reply(200, {"errors": [], "warnings": []})
            return
        if len(parts) == 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
            repo_type = parts[1].rstrip("s")
            key = f"{repo_type}:{parts[2]}/{parts[3]}"
            if key not in self.state.repos:
                self._reply(404, {"error": "Repository not found"})
                return
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                self._reply(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    },
                )
                return
            if self.state.fail_commits is not None:
                self._reply(self.state.fail_commits, {"error": "fake hub: commit refused"})
                return
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    self.state.files[key][value["path"]] = base64.b64decode(value["content"])
                elif item["key"] != "header":
                    self._reply(400, {"error": f"fake hub: unsupported commit item {item['key']}"})
                    return
            url = self._url(repo_type, f"{parts[2]}/{parts[3]}")
            self._reply(
                200, {"commitUrl": f"{url}/commit/{'a' * 40}", "commitOid": "a" * 40, "pullRequestUrl": None}
            )
            return
        self.state.unexpected.append(("POST", path))
        self._reply(404, {"error": "not implemented by the fake hub"})

    def _url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"


class FakeHub:
    """Context manager: a threaded HTTP server on a free 127.0.0.1 port; ``.endpoint`` is its URL."""

    def __init__(self) -> None:
        self.state = FakeHubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        handler.endpoint = self.endpoint
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        return self.state.files.get(f"{repo_type}:{repo_id}", {})
