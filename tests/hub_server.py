"""A local HTTP server that speaks the Hugging Face hub's API as ``huggingface_hub`` calls it.

Point the client at it with ``HF_ENDPOINT=<server.url>`` (``huggingface_hub.constants`` reads
it at import, so a subprocess gets it in its environment; in-process code passes
``endpoint=``). It answers what a download needs, with the headers huggingface_hub 2.x reads:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: the model info, with
  ``sha``, ``gated`` and ``siblings`` (``rfilename``, ``size``, ``blobId``, ``lfs``);
- ``GET /api/models/{repo}/tree/{rev}``: the file listing ``snapshot_download`` (``hf
  download``) asks for;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``ETag`` (the git blob id
  of small files), ``X-Linked-Etag`` and ``X-Linked-Size`` (the sha256 and size of LFS
  files), ``Content-Length``, ``Accept-Ranges``; a ``Range: bytes=N-`` GET is answered 206
  with ``Content-Range``. Files are served from a redirect target (``/cdn/...``) when
  ``redirect`` is on, as the hub sends LFS files to its CDN.
- Errors as the hub sends them: a missing repo is 404 with ``X-Error-Code: RepoNotFound``, a
  missing file 404 ``EntryNotFound``, a gated repo's files 401 ``GatedRepo`` unless the
  request carries ``Authorization: Bearer <token>`` with the repo's token.

Steering (attributes, safe to change while it runs):

- ``rate``: bytes per second per response (``None``: as fast as it can);
- ``cut_after``: a GET of a file sends this many bytes, then drops the connection (once per
  file, so the client's retry with ``Range`` goes on: the fault mode);
- ``hold_after`` + ``release``: a GET sends this many bytes of a file, then waits until
  ``release`` is set (or the client goes away): a download stays in flight for a test to
  act on, with no timing involved;
- ``requests``: every request seen, as ``(method, path, range header or "")``;
- ``sent``: bytes of file bodies sent, per file.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".msgpack", ".pt", ".pth", ".onnx", ".h5")
CHUNK = 256 * 1024


def git_blob_id(data: bytes) -> str:
    """The git object id of a file (what the hub's ETag is for files not in LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    data: bytes | mmap.mmap
    """The file's bytes (a read-only map of a file on disk, for big ones)."""
    lfs: bool
    etag: str = ""

    def __post_init__(self) -> None:
        if not self.etag:
            data = self.data
            self.etag = hashlib.sha256(data).hexdigest() if self.lfs else git_blob_id(bytes(data))


@dataclass
class HubRepo:
    files: dict[str, HubFile]
    sha: str
    gated: bool = False
    token: str = ""

    @classmethod
    def from_files(
        cls, files: dict[str, bytes], *, gated: bool = False, token: str = ""
    ) -> HubRepo:
        made = {name: HubFile(data, name.endswith(LFS_SUFFIXES)) for name, data in files.items()}
        digest = hashlib.sha1()
        for name in sorted(made):
            digest.update(name.encode() + b"\0" + made[name].etag.encode())
        return cls(made, digest.hexdigest(), gated, token)

    @classmethod
    def from_folder(cls, folder: Path, *, mapped: bool = False, **kwargs: object) -> HubRepo:
        """The files under ``folder``; ``mapped`` serves them from read-only maps of the
        files (no copy in memory: for the benchmark's big repos)."""
        files: dict[str, bytes | mmap.mmap] = {}
        for p in sorted(folder.rglob("*")):
            if not p.is_file():
                continue
            if mapped and p.stat().st_size:
                with p.open("rb") as f:
                    files[p.relative_to(folder).as_posix()] = mmap.mmap(
                        f.fileno(), 0, access=mmap.ACCESS_READ
                    )
            else:
                files[p.relative_to(folder).as_posix()] = p.read_bytes()
        return cls.from_files(files, **kwargs)  # type: ignore[arg-type]

    def size(self, names: Iterable[str] | None = None) -> int:
        """Bytes of all files, or of ``names``."""
        wanted = set(self.files) if names is None else set(names)
        return sum(len(f.data) for n, f in self.files.items() if n in wanted)


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    rate: float | None = None
    cut_after: int | None = None
    hold_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    redirect: bool = False
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    holding: threading.Event = field(default_factory=threading.Event)
    """Set while a GET waits on ``release``."""
    _cut: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    _url: str = ""

    @property
    def url(self) -> str:
        """Where it listens (kept after ``stop()``: a client then finds nothing there)."""
        assert self._url, "start() the server first"
        return self._url

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def gets(self, suffix: str = "") -> list[tuple[str, str, str]]:
        """The GETs of files (not of the API), optionally of one file."""
        return [
            r
            for r in self.requests
            if r[0] == "GET" and "/api/" not in r[1] and r[1].endswith(suffix)
        ]


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a cancelled download) is no error worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RESOLVE = re.compile(r"^/(?:cdn/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: int, error_code: str, message: str, commit: str = "") -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Error-Code": error_code,
            "X-Error-Message": message,
        }
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(code, json.dumps({"error": message}).encode(), headers)

    def _repo(self, name: str) -> HubRepo | None:
        repo = self.fake.repos.get(name)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _revision_ok(self, repo: HubRepo, rev: str) -> bool:
        if rev in ("main", repo.sha):
            return True
        self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        return False

    # -- verbs ---------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        parsed = urlparse(self.path)
        path = unquote(parsed.path)
        with self.fake._lock:
            self.fake.requests.append((self.command, path, self.headers.get("Range", "")))
        if m := _TREE.match(path):
            self._tree(m["repo"], m["rev"])
        elif m := _INFO.match(path):
            self._info(m["repo"], m["rev"] or "main")
        elif m := _RESOLVE.match(path):
            self._resolve(m["repo"], m["rev"], m["file"], cdn=path.startswith("/cdn/"))
        else:
            self._error(404, "", "Not found")

    def _info(self, name: str, rev: str) -> None:
        repo = self._repo(name)
        if repo is None or not self._revision_ok(repo, rev):
            return
        siblings = []
        for path, f in sorted(repo.files.items()):
            sibling: dict[str, object] = {
                "rfilename": path,
                "size": len(f.data),
                "blobId": f.etag if not f.lfs else hashlib.sha1(f.etag.encode()).hexdigest(),
            }
            if f.lfs:
                sibling["lfs"] = {"size": len(f.data), "sha256": f.etag, "pointerSize": 134}
            siblings.append(sibling)
        self._json(
            {
                "_id": name,
                "id": name,
                "modelId": name,
                "sha": repo.sha,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "library_name": "diffusers",
                "tags": ["diffusers"],
                "siblings": siblings,
            }
        )

    def _tree(self, name: str, rev: str) -> None:
        repo = self._repo(name)
        if repo is None or not self._revision_ok(repo, rev):
            return
        entries = []
        folders = sorted({p.rsplit("/", 1)[0] for p in repo.files if "/" in p})
        for folder in folders:
            entries.append(
                {"type": "directory", "path": folder, "oid": git_blob_id(folder.encode())}
            )
        for path, f in sorted(repo.files.items()):
            entry: dict[str, object] = {
                "type": "file",
                "path": path,
                "size": len(f.data),
                "oid": f.etag if not f.lfs else hashlib.sha1(f.etag.encode()).hexdigest(),
            }
            if f.lfs:
                entry["lfs"] = {"oid": f.etag, "size": len(f.data), "pointerSize": 134}
            entries.append(entry)
        self._json(entries)

    def _authorized(self, repo: HubRepo) -> bool:
        if not repo.gated:
            return True
        given = self.headers.get("Authorization", "")
        return bool(repo.token) and given == f"Bearer {repo.token}"

    def _resolve(self, name: str, rev: str, filename: str, *, cdn: bool) -> None:
        repo = self._repo(name)
        if repo is None or not self._revision_ok(repo, rev):
            return
        if not cdn and not self._authorized(repo):
            self._error(
                401,
                "GatedRepo",
                "Access to model " + name + " is restricted. You must have access to it "
                "and be authenticated to access it. Please log in.",
            )
            return
        f = repo.files.get(filename)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", commit=repo.sha)
            return
        size = len(f.data)
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.etag}"'
            headers["X-Linked-Size"] = str(size)
            headers["ETag"] = f'"{hashlib.sha1(f.etag.encode()).hexdigest()}"'
        else:
            headers["ETag"] = f'"{f.etag}"'
        if self.fake.redirect and f.lfs and not cdn:
            headers["Location"] = f"/cdn/{name}/resolve/{repo.sha}/{filename}"
            self._send(302, b"", headers)
            return
        start = 0
        wanted = self.headers.get("Range", "")
        if self.command == "GET" and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)):
            start = int(m[1])
            if start >= size:
                self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                return
        body = memoryview(f.data)[start:]  # no copy of a big file
        self.send_response(206 if start else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._stream(filename, body, start)

    def _stream(self, filename: str, body: memoryview, start: int) -> None:
        fake = self.fake
        with fake._lock:
            cut = fake.cut_after if filename not in fake._cut else None
            if cut is not None:
                fake._cut.add(filename)
        began = time.monotonic()
        sent = 0
        held = False
        try:
            while sent < len(body):
                limit = len(body)
                if cut is not None:
                    limit = min(limit, max(cut - start, 0))
                if fake.hold_after is not None and not held:
                    limit = min(limit, max(fake.hold_after - start, 0))
                if sent >= limit:
                    if cut is not None and sent >= max(cut - start, 0):
                        self.close_connection = True
                        self.connection.shutdown(2)  # the fault: a connection cut half-way
                        return
                    held = True
                    fake.holding.set()
                    while not fake.release.wait(0.05):
                        pass
                    fake.holding.clear()
                    continue
                piece = body[sent : min(sent + CHUNK, limit)]
                self.wfile.write(piece)
                sent += len(piece)
                with fake._lock:
                    fake.sent[filename] = fake.sent.get(filename, 0) + len(piece)
                if fake.rate:
                    ahead = sent / fake.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


# -- the tests' hub repo ------------------------------------------------------------------

EXTRA_FILES = {
    # what a real SD 1.5 repo also holds, none of which a download may fetch
    "v1-5-pruned.ckpt": 700_000,
    "v1-5-pruned-emaonly.safetensors": 400_000,
    "unet/diffusion_pytorch_model.bin": 300_000,
    "unet/diffusion_pytorch_model.non_ema.safetensors": 300_000,
    "text_encoder/flax_model.msgpack": 100_000,
    "text_encoder/pytorch_model.bin": 100_000,
    "safety_checker/config.json": 500,
    "safety_checker/model.safetensors": 200_000,
    "README.md": 300,
}
"""Files (with their sizes) added beside the pipeline: single-file checkpoints, ``.bin`` and
EMA copies, Flax weights, a safety checker. Their bytes are junk: loading one would fail."""


def build_hub_repo(pipeline: Path, dest: Path) -> Path:
    """A repo laid out as SD 1.5's is on the hub, from the tiny pipeline folder at
    ``pipeline``: the same files, an ``fp16`` variant of every weights file (real fp16
    weights), a safety checker named in ``model_index.json``, and :data:`EXTRA_FILES`."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(pipeline, dest)
    for weights in sorted(dest.rglob("*.safetensors")):
        tensors = {k: v.to(torch.float16) for k, v in load_file(weights).items()}
        save_file(tensors, weights.with_name(weights.stem + ".fp16.safetensors"))
    index_path = dest / "model_index.json"
    index = json.loads(index_path.read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["requires_safety_checker"] = True
    index_path.write_text(json.dumps(index, indent=2))
    for name, size in EXTRA_FILES.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([len(name) % 251]) * size)
    return dest
