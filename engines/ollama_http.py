"""Ollama's three small read-only questions (its version, its models, what is loaded), asked
with the standard library (``urllib.request``).

The app asks them at start and every few seconds after, on every screen; the official
client (``ollama``, with httpx and pydantic behind it) costs about 20 MiB of resident memory
and a few hundred milliseconds of imports, so it is imported for the first real request
(a chat, a pull, ``show``, a delete), not for these. The answers are plain JSON objects;
``engines.ollama_client`` turns them into the app's types, and its errors into the same
messages the official client's errors become.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class HttpError(Exception):
    """Ollama answered with an HTTP error: ``error`` is its ``{"error": ...}`` text."""

    def __init__(self, error: str, status_code: int) -> None:
        super().__init__(error)
        self.error = error
        self.status_code = status_code


class Unreachable(ConnectionError):
    """Nothing answers at the host (refused, no route, unknown name)."""


def _get(host: str, path: str, timeout: float) -> Any:
    # imported here, in the worker thread: not on the way to the first frame. urllib, not
    # bare http.client: it follows redirects and honours HTTP(S)_PROXY and NO_PROXY, as
    # the official client (httpx) does
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        host.rstrip("/") + path,
        headers={"Accept": "application/json", "User-Agent": "llm-pessoal"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", errors="replace")
        error = text
        try:
            data = json.loads(text)
            if isinstance(data, dict) and "error" in data:
                error = str(data["error"])
        except ValueError:
            pass
        raise HttpError(error, exc.code) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TimeoutError(str(exc.reason)) from exc
        raise Unreachable(str(exc.reason)) from exc
    data = json.loads(body.decode("utf-8", errors="replace"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object from {path}, got {type(data).__name__}")
    return data


async def get(host: str, path: str, wait_s: float) -> dict[str, Any]:
    """``GET host + path`` as a JSON object, in a thread (the event loop never waits),
    waiting ``wait_s`` at most for the connection and for each read.
    Raises :class:`Unreachable`, :class:`HttpError`, ``TimeoutError``,
    ``http.client.HTTPException`` or ``ValueError`` (a body that is not a JSON object)."""
    data: dict[str, Any] = await asyncio.to_thread(_get, host, path, wait_s)
    return data
