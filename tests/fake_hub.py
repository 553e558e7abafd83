"""A local stand-in for the Hugging Face hub: the few endpoints huggingface_hub's snapshot_download uses.

GET  /api/models/{repo}/revision/{rev}       repo info: {"id", "sha", "siblings"}
GET  /api/models/{repo}/tree/{rev}?recursive  file list, paginated with a Link: <...>; rel="next" header
HEAD /{repo}/resolve/{rev}/{file}             ETag, X-Repo-Commit, Content-Length
GET  /{repo}/resolve/{rev}/{file}             the bytes (Range: bytes=N- answered with 206)

Failures to simulate: `cut[file] = n` sends the full Content-Length but only the file's first n bytes, then
closes the connection (every attempt, also resumed ones); `fail[file_or_"api"] = status` answers that status.
"""

import hashlib
import http.server
import json
import os
import re
import threading
import types
import urllib.parse


class FakeHub:
    def __init__(self, repos: dict, page_size: int = 1000):
        """repos: hub id -> local folder whose files (recursively) the repo serves."""
        self.repos = {}
        for repo, folder in repos.items():
            files = {}
            for base, _, names in os.walk(folder):
                for name in names:
                    path = os.path.join(base, name)
                    with open(path, "rb") as handle:
                        files[os.path.relpath(path, folder).replace(os.sep, "/")] = handle.read()
            self.repos[repo] = (hashlib.sha1(repo.encode()).hexdigest(), dict(sorted(files.items())))
        self.page_size = page_size
        self.cut = {}
        self.fail = {}
        self.requests = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def use(self, monkeypatch, home) -> None:
        """Point huggingface_hub at this hub, online, with its cache and token under `home`, and no waits
        between its retries."""
        from huggingface_hub import constants, file_download
        from huggingface_hub.utils import _http

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HOME", str(home))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", os.path.join(str(home), "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(str(home), "token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        no_wait = types.SimpleNamespace(sleep=lambda seconds: None)  # both modules only call time.sleep
        monkeypatch.setattr(file_download, "time", no_wait)  # http_get's resume retries
        monkeypatch.setattr(_http, "time", no_wait)  # http_backoff's retries


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _handler(hub: FakeHub):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _send(self, status, body=b"", headers=(), send_body=True):
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _json(self, data, headers=()):
            self._send(200, json.dumps(data).encode(), [("Content-Type", "application/json"), *headers])

        def _serve(self, body):
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            hub.requests.append((self.command, path))
            api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path)
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            repo = (api or resolve).group(1) if (api or resolve) else None
            if repo not in hub.repos:
                return self._send(404, b"not found", [("X-Error-Code", "RepoNotFound")], body)
            sha, files = hub.repos[repo]
            if api:
                if "api" in hub.fail:
                    return self._send(hub.fail["api"], b"hub error", send_body=body)
                if api.group(2) == "revision":
                    return self._json({"id": repo, "sha": sha, "siblings": [{"rfilename": f} for f in files]})
                return self._tree(url, files)
            name = resolve.group(3)
            if name not in files:
                return self._send(404, b"no entry", [("X-Error-Code", "EntryNotFound")], body)
            if name in hub.fail:
                return self._send(hub.fail[name], b"hub error", send_body=body)
            self._file(name, files[name], sha, body)

        def _tree(self, url, files):
            start = int(urllib.parse.parse_qs(url.query).get("cursor", ["0"])[0])
            entries = [
                {"type": "file", "path": f, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for f, data in list(files.items())[start : start + hub.page_size]
            ]
            headers = []
            if start + hub.page_size < len(files):
                query = urllib.parse.urlencode({"recursive": "True", "cursor": start + hub.page_size})
                headers.append(("Link", f'<{hub.url}{url.path}?{query}>; rel="next"'))
            self._json(entries, headers)

        def _file(self, name, data, sha, body):
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
            part = data[start:]
            self.send_response(206 if match else 200)
            self.send_header("ETag", f'"{_etag(data)}"')
            self.send_header("X-Repo-Commit", sha)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(part)))
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if name in hub.cut:
                self.wfile.write(data[start : max(start, hub.cut[name])])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler
