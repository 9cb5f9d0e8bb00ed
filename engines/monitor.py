"""What the machine is doing: CPU, memory, disk, this process, and every NVIDIA GPU.

One :class:`Sampler` call reads everything once; it costs well under a
millisecond of CPU besides NVML's own calls. With no GPU or no driver the
sampler says so once, in ``gpu_note``, and carries on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HISTORY_SECONDS = 120


@dataclass(frozen=True)
class CpuFigures:
    total: float
    per_core: tuple[float, ...]
    load_average: tuple[float, float, float]


@dataclass(frozen=True)
class MemoryFigures:
    total: int
    used: int
    percent: float
    swap_total: int
    swap_used: int
    swap_percent: float


@dataclass(frozen=True)
class DiskFigures:
    path: str
    total: int
    used: int
    percent: float


@dataclass(frozen=True)
class ProcessFigures:
    pid: int
    cpu_percent: float
    rss: int
    threads: int


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_memory: int
    role: str = ""
    """'ollama' for Ollama's runner, 'this app' for llm-pessoal itself, else ''."""


@dataclass(frozen=True)
class GpuFigures:
    index: int
    name: str
    utilization: float
    memory_used: int
    memory_total: int
    temperature: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0


@dataclass(frozen=True)
class Sample:
    time: float
    cpu: CpuFigures
    memory: MemoryFigures
    disk: DiskFigures | None
    process: ProcessFigures
    gpus: tuple[GpuFigures, ...] = ()
    gpu_note: str = ""
    mps_allocated: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for gpu, figures in zip(data["gpus"], self.gpus, strict=True):
            gpu["memory_percent"] = round(figures.memory_percent, 1)
        return data


def role_of(name: str, pid: int) -> str:
    if pid == os.getpid():
        return "this app"
    if "ollama" in name.lower():
        return "ollama"
    return ""


class Nvml:
    """NVML, opened once; ``note`` says why there is no GPU figure, if there is none."""

    def __init__(self) -> None:
        self.note = ""
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._names: dict[int, str] = {}
        try:
            import pynvml
        except ImportError:
            self.note = "no GPU figures: nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.note = f"no NVIDIA GPU or driver ({exc})"
            return
        try:
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except pynvml.NVMLError as exc:
            self.note = f"NVML failed: {exc}"
            return
        self._nvml = pynvml
        if not self._handles:
            self.note = "no NVIDIA GPU"

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None

    def _process_name(self, pid: int) -> str:
        name = self._names.get(pid)
        if name is None:
            try:
                name = psutil.Process(pid).name()
            except (psutil.Error, OSError):
                name = "?"
            if len(self._names) > 256:
                self._names.clear()
            self._names[pid] = name
        return name

    def read(self) -> tuple[GpuFigures, ...]:
        nv = self._nvml
        if nv is None:
            return ()
        out = []
        for index, h in enumerate(self._handles):
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                name = nv.nvmlDeviceGetName(h)
            except nv.NVMLError as exc:
                self.note = f"NVML failed: {exc}"
                continue
            out.append(
                GpuFigures(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization=float(util.gpu),
                    memory_used=int(mem.used),
                    memory_total=int(mem.total),
                    temperature=self._optional(
                        nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU
                    ),
                    power_w=self._optional(nv.nvmlDeviceGetPowerUsage, h, scale=1e-3),
                    power_limit_w=self._optional(nv.nvmlDeviceGetEnforcedPowerLimit, h, scale=1e-3),
                    processes=self._processes(h),
                )
            )
        return tuple(out)

    def _optional(self, read: Any, *args: Any, scale: float = 1.0) -> float | None:
        """A figure not every GPU or driver reports (milliwatts scale to watts)."""
        try:
            return float(read(*args)) * scale
        except self._nvml.NVMLError:
            return None

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        nv = self._nvml
        found: dict[int, int] = {}
        for query in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            try:
                for p in getattr(nv, query)(handle):
                    used = int(p.usedGpuMemory or 0) if p.usedGpuMemory is not None else 0
                    found[int(p.pid)] = max(found.get(int(p.pid), 0), used)
            except (nv.NVMLError, AttributeError):
                continue
        processes = []
        for pid, used in sorted(found.items(), key=lambda kv: -kv[1]):
            name = self._process_name(pid)
            processes.append(GpuProcess(pid, name, used, role_of(name, pid)))
        return tuple(processes)


class Sampler:
    """Reads the machine's figures; make one and call :meth:`sample` (about every second)."""

    def __init__(self, disk_path: Path | None = None, *, gpus: bool = True) -> None:
        self.disk_path = disk_path
        self._process = psutil.Process()
        self._nvml = Nvml() if gpus else None
        # the first cpu_percent() calls only start the clocks
        psutil.cpu_percent(percpu=True)
        self._process.cpu_percent()
        self.gpu_note = self._nvml.note if self._nvml else "GPU sampling is off"

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()

    def _disk(self) -> DiskFigures | None:
        path = self.disk_path
        if path is None:
            return None
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = psutil.disk_usage(str(probe))
        except OSError:
            return None
        return DiskFigures(str(path), usage.total, usage.used, usage.percent)

    @staticmethod
    def _mps_allocated() -> int | None:
        torch = sys.modules.get("torch")  # only if the app already loaded it
        mps = getattr(torch, "mps", None) if torch is not None else None
        if mps is None or not torch.backends.mps.is_available():  # type: ignore[union-attr]
            return None
        try:
            return int(mps.current_allocated_memory())
        except (RuntimeError, AttributeError):
            return None

    def sample(self) -> Sample:
        per_core = tuple(psutil.cpu_percent(percpu=True))
        total = sum(per_core) / len(per_core) if per_core else 0.0
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        with self._process.oneshot():
            process = ProcessFigures(
                pid=self._process.pid,
                cpu_percent=self._process.cpu_percent(),
                rss=self._process.memory_info().rss,
                threads=self._process.num_threads(),
            )
        gpus = self._nvml.read() if self._nvml is not None else ()
        if self._nvml is not None:
            self.gpu_note = self._nvml.note
        return Sample(
            time=time.time(),
            cpu=CpuFigures(total, per_core, os.getloadavg()),
            memory=MemoryFigures(
                vm.total, vm.total - vm.available, vm.percent, swap.total, swap.used, swap.percent
            ),
            disk=self._disk(),
            process=process,
            gpus=gpus,
            gpu_note=self.gpu_note,
            mps_allocated=self._mps_allocated(),
        )


@dataclass
class History:
    """The last two minutes of a few figures, one point a sample."""

    length: int = HISTORY_SECONDS
    series: dict[str, deque[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        points = self.series.get(name)
        if points is None:
            points = self.series[name] = deque(maxlen=self.length)
        points.append(value)

    def record(self, sample: Sample) -> None:
        self.add("cpu", sample.cpu.total)
        self.add("memory", sample.memory.percent)
        for gpu in sample.gpus:
            self.add(f"gpu{gpu.index}", gpu.utilization)
            self.add(f"gpu{gpu.index}-memory", gpu.memory_percent)

    def get(self, name: str) -> list[float]:
        return list(self.series.get(name, ()))
