"""System figures (CPU, memory, GPU) and the app's status/health reports."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from engines.config import HostSpec, Settings
from engines.hosts import HostRegistry
from engines.monitor import Sampler
from engines.ollama_client import ChatEngine


def app_version() -> str:
    try:
        return version("llm-pessoal")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


async def system_info(disk: Path | None = None, window_s: float = 0.2) -> dict[str, Any]:
    """The original web app's ``system_info`` (referencia-tecnica.md) (cpu_usage, memory_usage, gpu_usage, in
    percent) with the Monitor's details: per core, load, swap, disk, GPUs and their
    processes. CPU use is measured over ``window_s`` without blocking the loop."""
    sampler = Sampler(disk)
    try:
        await asyncio.sleep(window_s)
        sample = sampler.sample()
    finally:
        sampler.close()
    details = sample.to_dict()
    return {
        "cpu_usage": round(sample.cpu.total, 1),
        "memory_usage": sample.memory.percent,
        "gpu_usage": max((g.utilization for g in sample.gpus), default=None),
        "cpu_count": len(sample.cpu.per_core),
        "load_average": list(sample.cpu.load_average),
        "memory_total": sample.memory.total,
        "memory_used": sample.memory.used,
        "gpus": details["gpus"],
        "gpu_note": sample.gpu_note,
        "details": details,
    }


async def status_report(
    settings: Settings, engine: ChatEngine, hosts: HostRegistry | None = None
) -> dict[str, Any]:
    """What the original web app's ``/api/status`` returned (referencia-tecnica.md), with details.
    Its ``ollama`` keys are the first server's (``engine``); ``hosts`` lists every server of
    ``[ollama] hosts``, each asked at once, within its own timeout."""
    own = hosts is None
    if hosts is None:
        hosts = HostRegistry([HostSpec("ollama", engine.host, engine.timeout)])
    try:
        states, report = await asyncio.gather(hosts.check_all(), _status_report(settings, engine))
        report = dict(report)
    finally:
        if own:
            await hosts.aclose()
    report["hosts"] = [s.to_dict() for s in states]
    return report


async def _status_report(settings: Settings, engine: ChatEngine) -> dict[str, Any]:
    server = await engine.status()
    loaded: list[dict[str, Any]] = []
    if server.online:
        try:
            loaded = [
                {
                    "name": m.name,
                    "size": m.size,
                    "size_vram": m.size_vram,
                    "expires_at": m.expires_at.isoformat() if m.expires_at else None,
                }
                for m in await engine.loaded()
            ]
        except Exception:  # a server that answers /version but not /ps is still online
            loaded = []
    return {
        "ollama_status": "online" if server.online else "offline",
        "stable_diffusion_status": "not_loaded",
        "system_info": await system_info(settings.paths.outputs),
        "ollama": {
            "host": server.host,
            "version": server.version,
            "error": server.error,
            "loaded_models": loaded,
        },
        "stable_diffusion": {"model": settings.diffusion.model, "state": "not loaded"},
        "version": app_version(),
        "timestamp": datetime.now(UTC).isoformat(),
    }


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK)


async def health_report(
    settings: Settings,
    engine: ChatEngine,
    servers: Sequence[tuple[str, ChatEngine, float]] = (),
) -> dict[str, Any]:
    """What the original web app's ``/api/health`` returned (referencia-tecnica.md), with the checks behind it.

    With several servers (``[ollama] hosts``, given as ``servers``) each is asked at once and
    named under ``"servers"``; ``"ollama"`` is "ok" only when all of them answer."""
    started = time.perf_counter()
    named = list(servers) or [("", engine, 0.0)]

    async def ask(engine: ChatEngine, within_s: float) -> str:
        if not within_s:
            answer = await engine.status()
        else:
            try:
                async with asyncio.timeout(within_s):
                    answer = await engine.status()
            except TimeoutError:
                return f"Ollama at {engine.where} did not answer within {within_s:g} s"
        return "ok" if answer.online else answer.error

    answers = await asyncio.gather(*(ask(e, t) for _, e, t in named))
    results = {name: answer for (name, _, _), answer in zip(named, answers, strict=True)}
    down = [name for name, result in results.items() if result != "ok"]
    if len(named) == 1:
        ollama = next(iter(results.values()))
    elif down:
        ollama = f"{len(down)} of {len(named)} servers do not answer: " + "; ".join(
            f"{name}: {results[name]}" for name in down
        )
    else:
        ollama = "ok"
    checks = {
        "ollama": ollama,
        "database": "ok" if _writable(settings.paths.database) else "not writable",
        "outputs": "ok" if _writable(settings.paths.outputs) else "not writable",
    }
    healthy = all(v == "ok" for v in checks.values())
    report: dict[str, Any] = {
        "status": "healthy" if healthy else "degraded",
        "timestamp": datetime.now(UTC).isoformat(),
        "version": app_version(),
        "checks": checks,
    }
    if len(named) > 1:
        report["servers"] = results
    return report | {
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
