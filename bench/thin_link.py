"""A thin link between a terminal and a program: a pty relay throttled like a slow SSH hop.

Runs the program under a pty of its own and copies bytes both ways: the program's output
at ``--rate`` bits per second, each byte delivered ``--delay`` seconds after it was read;
keys after ``--delay`` too. At most ``--buffer`` bytes wait in the link (as a TCP window
would hold them); past that the relay stops reading, the pty fills and the program's
writes block, as they would over SSH. The window size follows the outer terminal's.

    .venv/bin/python bench/thin_link.py --rate 1000000 --delay 0.05 -- llm-pessoal
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import os
import pty
import select
import signal
import sys
import termios
import threading
import time
import tty


def window_size(fd: int) -> bytes:
    return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)


class Link:
    """One direction: bytes in, delivered after ``delay`` at ``rate`` bits/s."""

    def __init__(self, out_fd: int, rate: float, delay: float, buffer: int) -> None:
        self.out_fd = out_fd
        self.rate = rate
        self.delay = delay
        self.buffer = buffer
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._send, daemon=True).start()

    def room(self) -> bool:
        with self.cond:
            return self.queued < self.buffer

    def put(self, data: bytes) -> None:
        with self.cond:
            self.queue.append((time.monotonic() + self.delay, data))
            self.queued += len(data)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def _send(self) -> None:
        next_free = time.monotonic()  # when the wire is free again
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if not self.queue:
                    return
                due, data = self.queue[0]
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            # the wire: serialise at the rate, a small piece at a time
            piece = data[:1024]
            rest = data[len(piece) :]
            start = max(next_free, time.monotonic())
            next_free = start + len(piece) * 8 / self.rate if self.rate else start
            wait = next_free - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with contextlib.suppress(OSError):
                os.write(self.out_fd, piece)
            with self.cond:
                self.queued -= len(piece)
                if rest:
                    self.queue[0] = (due, rest)
                else:
                    self.queue.popleft()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1_000_000, help="bits per second")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds, each way")
    parser.add_argument("--buffer", type=int, default=65536, help="bytes held in the link")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        parser.error("give the program to run after --")

    pid, master = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None

    def resize(*_: object) -> None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(master, termios.TIOCSWINSZ, window_size(stdin))
            os.kill(pid, signal.SIGWINCH)

    if is_tty:
        resize()
        tty.setraw(stdin)
        signal.signal(signal.SIGWINCH, resize)
    down = Link(stdout, args.rate, args.delay, args.buffer)
    up = Link(master, args.rate, args.delay, args.buffer)
    try:
        while True:
            fds = [stdin]
            if down.room():
                fds.append(master)
            try:
                ready, _, _ = select.select(fds, [], [], 0.05)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 16384)
                except OSError:
                    break
                if not data:
                    break
                down.put(data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    break
                up.put(data)
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                with contextlib.suppress(OSError):
                    while data := os.read(master, 16384):
                        down.put(data)
                break
    finally:
        down.close()
        deadline = time.monotonic() + 5
        while down.queued and time.monotonic() < deadline:
            time.sleep(0.02)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    with contextlib.suppress(ChildProcessError):
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
