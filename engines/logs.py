"""JSON-lines logging under ``logs/``, as the original web app's formatter (referencia-tecnica.md) shows."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.handlers
import os
from datetime import UTC, datetime
from pathlib import Path

from engines.files import PRIVATE_MODE, open_private

LOG_FILE = "app.jsonl"
_MARK = "_llm_pessoal"  # set on the handlers this module added, so a second setup replaces them
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, message, module, function, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "message": record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file (the live one after each rotation included) only its
    owner can read: logs hold prompts and replies, as the database does."""

    def _open(self) -> io.TextIOWrapper:
        return open_private(Path(self.baseFilename), encoding=self.encoding or "utf-8")


def setup_logging(log_dir: Path, level: str) -> str | None:
    """Send the app's logs to ``log_dir/app.jsonl``. Returns a warning when that is
    impossible (the app then runs without a log file rather than not at all)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _MARK, False):
            root.removeHandler(old)
            old.close()
    root.setLevel(level)
    handler: logging.Handler
    warning: str | None = None
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / LOG_FILE
        handler = PrivateRotatingFileHandler(
            path, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
        )
        for rotated in log_dir.glob(LOG_FILE + ".*"):  # written by an older version: 0644
            with contextlib.suppress(OSError):
                if not rotated.is_symlink():
                    os.chmod(rotated, PRIVATE_MODE)
    except OSError as exc:
        handler = logging.NullHandler()
        warning = f"logs are off: cannot write to {log_dir}: {exc.strerror or exc}"
    handler.setFormatter(JSONFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    # Third-party chatter (httpx logs every request at INFO) stays out unless debugging.
    for noisy in ("httpx", "httpcore", "markdown_it", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    return warning
