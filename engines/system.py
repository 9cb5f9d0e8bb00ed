"""System figures (CPU, memory, GPU) and the app's status/health reports."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from engines.chat import ChatEngine
from engines.config import Settings


def app_version() -> str:
    try:
        return version("llm-pessoal")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@dataclass(frozen=True)
class GpuFigures:
    index: int
    name: str
    utilization: float
    memory_used: int
    memory_total: int
    temperature: float | None = None


def gpu_figures() -> tuple[list[GpuFigures], str]:
    """Every NVIDIA GPU through NVML, and a note saying why there are none."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"no NVIDIA driver ({exc})"
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                temp: float | None = float(
                    pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                )
            except pynvml.NVMLError:
                temp = None
            name = pynvml.nvmlDeviceGetName(h)
            out.append(
                GpuFigures(
                    i,
                    name.decode() if isinstance(name, bytes) else str(name),
                    float(util.gpu),
                    int(mem.used),
                    int(mem.total),
                    temp,
                )
            )
        return out, "" if out else "no NVIDIA GPU"
    except pynvml.NVMLError as exc:
        return [], f"NVML failed: {exc}"
    finally:
        pynvml.nvmlShutdown()


def system_info(cpu_interval: float = 0.2) -> dict[str, Any]:
    """The specification's ``system_info``: cpu_usage, memory_usage, gpu_usage (percent)."""
    gpus, gpu_note = gpu_figures()
    mem = psutil.virtual_memory()
    return {
        "cpu_usage": psutil.cpu_percent(interval=cpu_interval),
        "memory_usage": mem.percent,
        "gpu_usage": max((g.utilization for g in gpus), default=None),
        "cpu_count": psutil.cpu_count(),
        "load_average": list(os.getloadavg()),
        "memory_total": mem.total,
        "memory_used": mem.total - mem.available,
        "gpus": [asdict(g) for g in gpus],
        "gpu_note": gpu_note,
    }


async def status_report(settings: Settings, engine: ChatEngine) -> dict[str, Any]:
    """What the specification's ``/api/status`` returned, with details."""
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
        "system_info": system_info(),
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


async def health_report(settings: Settings, engine: ChatEngine) -> dict[str, Any]:
    """What the specification's ``/api/health`` returned, with the checks behind it."""
    started = time.perf_counter()
    server = await engine.status()
    checks = {
        "ollama": "ok" if server.online else server.error,
        "database": "ok" if _writable(settings.paths.database) else "not writable",
        "outputs": "ok" if _writable(settings.paths.outputs) else "not writable",
    }
    healthy = all(v == "ok" for v in checks.values())
    return {
        "status": "healthy" if healthy else "degraded",
        "timestamp": datetime.now(UTC).isoformat(),
        "version": app_version(),
        "checks": checks,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
