"""The benchmarks' harness: a real pseudo-terminal, a terminal emulator, the fake Ollama server.

A client (the app, a peer, or a plain CLI) runs under a 120x40 pty that this process owns. A
reader thread drains the pty as fast as the bytes come and stamps each chunk with the wall
clock (and the client's CPU ticks), so the client never blocks on a full pty and a chunk's
time is when a real terminal would have drawn it. ``pyte`` replays the chunks into an
emulated screen to decide what is visible when; during a stream that replay is deferred to
after the run (``pyte`` is pure Python, about 1 MB/s, and on a small machine would otherwise
steal the CPU the client is being measured on).

Nothing here is a test: the scripts print JSON figures.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
APP = VENV_BIN / "llm-pessoal"
SERVER_SCRIPT = ROOT / "tests" / "ollama_server.py"
COLS, ROWS = 120, 40
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MODEL = "llama3.2:latest"
SERVER_VERSION = "0.12.6"


try:
    import pyte
except ImportError:  # bench-only dependencies, installed into this venv on first use
    _REQ = ROOT / "bench" / "requirements.txt"
    print(f"[bench] installing {_REQ} into {sys.prefix}", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(_REQ)],
        check=True,
    )  # fmt: skip
    import pyte

sys.setswitchinterval(0.0005)  # the reader thread gets the GIL back quickly


# ---------------------------------------------------------------------------- the reply


def _tokenize(text: str) -> list[str]:
    # The fake server's tokenizer (tests/ollama_server.py: tokenize), one token a chunk.
    return re.findall(r"\s*\S+|\s+", text)


MARKER = "qxendmark2000"
"""The reply's last token: a word found nowhere else, on screen only once the reply is."""


def markdown_reply(n_tokens: int = 2000) -> str:
    """A realistic Markdown reply of exactly ``n_tokens`` server tokens, the last being
    :data:`MARKER`: headings, paragraphs, lists, a table and several fenced code blocks."""
    words = [
        "the",
        "a",
        "model",
        "reply",
        "stream",
        "token",
        "terminal",
        "screen",
        "widget",
        "render",
        "frame",
        "layout",
        "cache",
        "prompt",
        "server",
        "client",
        "latency",
        "memory",
        "process",
        "buffer",
        "update",
        "scroll",
        "markdown",
        "parser",
        "block",
        "inline",
        "list",
        "table",
        "code",
        "fence",
        "heading",
        "paragraph",
        "window",
        "event",
        "loop",
        "worker",
    ]

    def para(seed: int, n: int) -> str:
        out = [words[(seed * 7 + i * 13 + (i * i) % 5) % len(words)] for i in range(n)]
        out[0] = out[0].capitalize()
        for i in range(9, n - 1, 11):
            out[i] += ","
        if n > 4:
            out[2] = f"**{out[2]}**"
            out[5] = f"`{out[5]}`"
        return " ".join(out) + "."

    sections: list[str] = []
    k = 0
    while True:
        k += 1
        s = [f"## {k}. Part {k}: {words[k % len(words)]} and {words[(k * 3) % len(words)]}", ""]
        s += [para(k, 38), ""]
        s += [f"- item {k}.{j}: {para(k + j, 9)}" for j in range(1, 5)] + [""]
        kind = k % 4
        if kind == 0:
            s += [
                "```python",
                f"def handle_{k}(events: list[str]) -> dict[str, int]:",
                '    """Count each event kind."""',
                "    counts: dict[str, int] = {}",
                "    for event in events:",
                "        counts[event] = counts.get(event, 0) + 1",
                f"    return {{k: v * {k} for k, v in counts.items()}}",
                "```",
            ]
        elif kind == 1:
            s += [
                "```bash",
                f"ollama pull llama3.2 && ollama run llama3.2 'part {k}'",
                f"curl -s http://localhost:11434/api/tags | jq '.models[{k % 3}].name'",
                "```",
            ]
        elif kind == 2:
            s += [
                "| setting | value | note |",
                "| --- | ---: | --- |",
                f"| rate | {k * 10} | tokens per second |",
                f"| ctx | {k * 512} | context window |",
                f"| temp | 0.{k % 10} | sampling |",
            ]
        else:
            s += [
                "```json",
                f'{{"model": "llama3.2", "stream": true, "options": {{"seed": {k}}}}}',
                "```",
            ]
        s += ["", f"1. First, {para(k * 2, 12)}", f"2. Then, {para(k * 3, 12)}", ""]
        s += [f"> Note {k}: {para(k * 5, 16)}", ""]
        sections.append("\n".join(s))
        body = "# A long answer\n\n" + "\n".join(sections)
        if len(_tokenize(body)) >= n_tokens - 60:
            break
    body = body.rstrip() + "\n\n## Summary\n\n"
    fill = n_tokens - len(_tokenize(body.rstrip())) - 1
    if fill < 1 and len(sections) > 1:  # the last section (some 200 tokens) went past the end
        body = "# A long answer\n\n" + "\n".join(sections[:-1]).rstrip() + "\n\n## Summary\n\n"
        fill = n_tokens - len(_tokenize(body.rstrip())) - 1
    if fill < 1:
        raise ValueError("reply overshoots; lower the cut-off")
    text = body + " ".join(words[i % len(words)] for i in range(fill)) + " " + MARKER
    tokens = _tokenize(text)
    assert len(tokens) == n_tokens and tokens[-1].strip() == MARKER and text.count(MARKER) == 1
    return text


# ---------------------------------------------------------------------------- the server


class Server:
    """``tests/ollama_server.py`` in a process of its own (as the app would meet Ollama)."""

    def __init__(self, reply_file: Path, rate: float | None = None) -> None:
        argv = [str(VENV_BIN / "python"), str(SERVER_SCRIPT), "--port", "0"]
        argv += ["--reply-file", str(reply_file)]
        if rate:
            argv += ["--rate", str(rate)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = match.group(1)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/__fake/state", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def config(self, **settings: Any) -> None:
        req = urllib.request.Request(
            self.url + "/__fake/config",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=5).close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------- /proc readers


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (all its threads) in clock ticks, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def system_busy_ticks() -> int:
    """Ticks all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


class OtherLoad:
    """How many CPUs, on average, processes other than ``own`` pids (the client, the server,
    this bench) kept busy between ``start()`` and ``stop()``: noise in the figures."""

    def __init__(self, *pids: int) -> None:
        self.pids = (*pids, os.getpid())
        self.start()

    def _own(self) -> int:
        return sum(cpu_ticks(p) or 0 for p in self.pids)

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.time(), system_busy_ticks(), self._own()

    def stop(self) -> float:
        elapsed = max(time.time() - self.t0, 1e-3)
        other = (system_busy_ticks() - self.busy0) - (self._own() - self.own0)
        return round(max(other, 0) / CLK_TCK / elapsed, 2)


def cpu_seconds(pid: int) -> float | None:
    ticks = cpu_ticks(pid)
    return None if ticks is None else ticks / CLK_TCK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (statm's resident pages)."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
    return total


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in process_tree(pid))


def mapped_libraries(pid: int, needles: Iterable[str]) -> list[str]:
    """Which of ``needles`` appear in a path mapped by ``pid`` (e.g. torch's shared objects)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return [n for n in needles if n in maps]


# ---------------------------------------------------------------------------- the terminal


_APC = re.compile(rb"\x1b_[^\x1b]*\x1b\\")


class _Screen(pyte.Screen):
    """pyte's screen, answering the terminal's queries (device attributes, cursor position)."""

    def __init__(self, cols: int, rows: int, reply: Callable[[str], None]) -> None:
        super().__init__(cols, rows)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)


@dataclass
class Chunk:
    t: float  # time.time() when read
    data: bytes
    cpu: int | None  # the client's utime+stime (ticks) when read


@dataclass
class Terminal:
    """A client under a 120x40 pty, its output recorded, and a pyte screen of it."""

    argv: Sequence[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    cols: int = COLS
    rows: int = ROWS
    answer_queries: bool = True
    answer_delay_s: float = 0.0
    """How long the terminal's answers take to reach the client: a link's round trip
    (over SSH, the questions and their answers each cross it once)."""
    chunks: list[Chunk] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
        env = dict(os.environ if self.env is None else self.env)
        env.update(TERM="xterm-256color", COLORTERM="truecolor", LANG="C.UTF-8")
        for k in ("LINES", "COLUMNS", "TMUX", "NO_COLOR", "TEXTUAL"):
            env.pop(k, None)
        self.screen = _Screen(self.cols, self.rows, self._answer)
        self.stream = pyte.ByteStream(self.screen)
        self._fed = 0
        self._apc_tail = b""
        self._lock = threading.Lock()
        self.t_start = time.time()
        self.proc = subprocess.Popen(
            list(self.argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_take_controlling_tty,
        )
        os.close(slave)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- the reader thread

    def _read(self) -> None:
        pid = self.pid
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                break
            if not data:
                break
            t = time.time()
            with self._lock:
                self.chunks.append(Chunk(t, data, cpu_ticks(pid)))

    # -- input

    def _answer(self, data: str) -> None:
        if not self.answer_queries:
            return
        if self.answer_delay_s > 0:
            threading.Timer(self.answer_delay_s, self._send_answer, (data,)).start()
        else:
            self._send_answer(data)

    def _send_answer(self, data: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, data.encode())

    def write(self, data: str | bytes) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def type(self, text: str, delay: float = 0.0) -> None:
        """Type ``text`` (all at once, or one character per ``delay`` seconds)."""
        if delay <= 0:
            self.write(text)
            return
        for ch in text:
            self.write(ch)
            time.sleep(delay)

    # -- the screen

    def received(self) -> int:
        with self._lock:
            return len(self.chunks)

    def pump(self, until: int | None = None) -> Chunk | None:
        """Feed recorded chunks (up to index ``until``) to the screen; return the last fed."""
        with self._lock:
            todo = self.chunks[self._fed : until]
        last = None
        for chunk in todo:
            self.stream.feed(self._without_apc(chunk.data))
            self._fed += 1
            last = chunk
        return last

    def _without_apc(self, data: bytes) -> bytes:
        """``data`` without its APC strings (``ESC _ ... ESC \\``, e.g. Kitty's graphics
        query), which a terminal does not show but pyte would print; one not yet ended
        waits for the next chunk."""
        data = _APC.sub(b"", self._apc_tail + data)
        start = data.rfind(b"\x1b_")
        self._apc_tail = data[start:] if start != -1 else b""
        return data[:start] if start != -1 else data

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def visible(self, *needles: str) -> bool:
        screen = self.text()
        return all(n in screen for n in needles)

    def wait_visible(
        self, needles: Sequence[str], timeout: float, *, any_of: bool = False
    ) -> float | None:
        """Pump live until ``needles`` are on screen (all, or ``any_of``); return the read
        stamp of the chunk that put them there, or None on timeout or exit."""
        match = any if any_of else all
        deadline = time.time() + timeout
        while True:
            exited = self.proc.poll() is not None
            while (chunk := self.pump(self._fed + 1)) is not None:
                screen = self.text()
                if match(n in screen for n in needles):
                    return chunk.t
            if exited or time.time() > deadline:
                return None
            time.sleep(0.002)

    def raw_contains(self, needle: bytes, since: int = 0) -> int | None:
        """Index of the first recorded chunk (from ``since``) after which the raw output holds
        ``needle`` (a cheap live trigger; the screen decides)."""
        with self._lock:
            chunks = self.chunks[since:]
        tail = b""
        for i, c in enumerate(chunks):
            buf = tail + c.data
            if needle in buf:
                return since + i
            tail = buf[-len(needle) :]
        return None

    def bytes_since(self, index: int) -> int:
        with self._lock:
            return sum(len(c.data) for c in self.chunks[index:])

    def last_output_at(self) -> float | None:
        with self._lock:
            return self.chunks[-1].t if self.chunks else None

    def cpu_at(self, index: int) -> int | None:
        with self._lock:
            return self.chunks[index].cpu

    # -- the end

    def close(self, quit_keys: str | bytes | None = "\x11", grace: float = 3.0) -> None:
        if self.proc.poll() is None and quit_keys:
            with contextlib.suppress(OSError):
                self.write(quit_keys)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # stragglers of its session
            os.killpg(self.pid, signal.SIGKILL)
        self._reader.join(2)
        with contextlib.suppress(OSError):
            os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def find_first_visible(
    term: Terminal, needle: str, start_index: int, not_before: float
) -> Chunk | None:
    """Replay the recording into the screen (from where it was) and return the first chunk
    after which ``needle`` is on screen, only looking at chunks read at or after
    ``not_before`` (the needle cannot be drawn earlier); feeds everything before that."""
    while True:
        chunk = term.pump(term._fed + 1)
        if chunk is None:
            return None
        if term._fed <= start_index or chunk.t < not_before:
            continue
        if needle in term.text():
            return chunk


# ---------------------------------------------------------------------------- the app's config


def app_config(workdir: Path, host: str) -> Path:
    """A config.toml whose paths all live under ``workdir``, talking to ``host``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    cfg.write_text(
        "[ollama]\n"
        f'host = "{host}"\n'
        f'default_model = "{MODEL}"\n'
        "\n[paths]\n"
        'outputs = "outputs"\nlogs = "logs"\ndatabase = "data/bench.db"\n'
        'exports = "exports"\ncache = "cache"\n'
    )
    return cfg


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLAMA", "LLM_PESSOAL", "VIRTUAL_ENV", "PYTHON"))
        and k not in ("DEBUG", "LOG_LEVEL")
    }
    env.update(extra)
    return env


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"llmp-bench-{prefix}-"))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def median(values: Sequence[float]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def rnd(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy it was at the start."""
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "loadavg_1m_at_start": os.getloadavg()[0],
    }


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def find_text(term: Terminal, text: str) -> tuple[int, int] | None:
    """(column, row), 0-based, of ``text`` on the screen (pumped first), or None."""
    term.pump()
    for row, line in enumerate(term.screen.display):
        col = line.find(text)
        if col >= 0:
            return col, row
    return None


def click_text(term: Terminal, text: str, timeout: float = 10.0) -> bool:
    """Click (SGR mouse: press and release of the left button) on ``text`` once visible."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        where = find_text(term, text)
        if where is not None:
            x, y = where[0] + 1 + min(2, len(text) // 2), where[1] + 1
            term.write(f"\x1b[<0;{x};{y}M\x1b[<0;{x};{y}m")
            return True
        time.sleep(0.05)
    return False


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """From py-spy's raw (collapsed) stacks: the functions with the most samples, inclusive
    (on the stack) and exclusive (on top), as percentages of the samples taken."""
    inclusive: dict[str, int] = {}
    exclusive: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"samples": 0}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            re.sub(r":\d+\)$", ")", f.replace(str(ROOT) + "/", "").replace("/site-packages/", "~/"))
            for f in stack.split(";")
            if not f.startswith(("thread (", "process "))
        ]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        exclusive[frames[-1]] = exclusive.get(frames[-1], 0) + count

    def rank(table: dict[str, int]) -> list[str]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in best]

    return {"samples": total, "inclusive": rank(inclusive), "exclusive": rank(exclusive)}
