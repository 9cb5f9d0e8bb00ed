"""A download's progress: bytes per part and in all, rates over a sliding window, ETAs.

Ollama's pull lines become :class:`PullProgress` through :class:`PullTracker`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engines.units import duration_text, human_bytes


@dataclass(frozen=True)
class PullProgress:
    """One line of a pull, as Ollama reported it, with the figures worked out from it.

    ``digest``, ``total`` and ``completed`` are Ollama's, for the layer the line is about
    (empty and 0 on the lines between layers: "pulling manifest", "verifying sha256
    digest", "writing manifest", "success"). ``rate`` (bytes/s, over the last few
    seconds) and ``eta_s`` are this layer's; the ``overall_`` figures add up the layers
    announced so far (Ollama announces each when it starts on it). A rate or ETA is None
    until there is enough to tell."""

    model: str
    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0
    rate: float | None = None
    eta_s: float | None = None
    overall_total: int = 0
    overall_completed: int = 0
    overall_rate: float | None = None
    overall_eta_s: float | None = None
    layers: int = 0
    done: bool = False

    @property
    def layer(self) -> str:
        """The layer's short id, as Ollama's own progress shows it (12 hex digits)."""
        return self.digest.removeprefix("sha256:")[:12]

    @property
    def fraction(self) -> float | None:
        return min(self.completed / self.total, 1.0) if self.total > 0 else None

    @property
    def overall_fraction(self) -> float | None:
        if self.overall_total <= 0:
            return None
        return min(self.overall_completed / self.overall_total, 1.0)

    def figures(self) -> str:
        """This layer's bytes, rate and ETA: ``1.2 GB / 2.0 GB · 35.2 MB/s · ETA 0:23``."""
        return _figures(self.completed, self.total, self.rate, self.eta_s)

    def overall_figures(self) -> str:
        return _figures(
            self.overall_completed, self.overall_total, self.overall_rate, self.overall_eta_s
        )


def _figures(completed: int, total: int, rate: float | None, eta_s: float | None) -> str:
    parts = [f"{human_bytes(completed)} / {human_bytes(total)}"]
    if rate is not None and completed < total:
        parts.append(f"{human_bytes(rate)}/s")
    if eta_s is not None and completed < total:
        parts.append(f"ETA {duration_text(eta_s)}")
    return " · ".join(parts)


class RateMeter:
    """Units per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> float | None:
        """Add a sample (a time and a running total); the rate, or None while unknown."""
        samples = self._samples
        samples.append((t, value))
        while len(samples) > 2 and t - samples[1][0] >= self.window:
            samples.popleft()
        t0, v0 = samples[0]
        if t - t0 < 1e-3:
            return None
        return max(value - v0, 0.0) / (t - t0)


@dataclass
class _Layer:
    total: int
    completed: int
    start: int
    meter: RateMeter
    rate: float | None = None


class PullTracker:
    """Turns Ollama's pull lines into :class:`PullProgress`: per layer and overall, with
    rates and ETAs. Bytes a layer had before this pull (a resumed download, a cached
    layer) count as done but not as speed."""

    def __init__(
        self, model: str, clock: Callable[[], float] = time.monotonic, window: float = 5.0
    ) -> None:
        self.model = model
        self.clock = clock
        self.window = window
        self._layers: dict[str, _Layer] = {}
        self._overall = RateMeter(window)
        self._overall_rate: float | None = None

    def update(
        self, status: str, digest: str = "", total: int = 0, completed: int = 0
    ) -> PullProgress:
        now = self.clock()
        layer = None
        if digest:
            layer = self._layers.get(digest)
            if layer is None:
                layer = _Layer(total, completed, completed, RateMeter(self.window))
                self._layers[digest] = layer
            layer.total = max(total, layer.total)
            layer.completed = max(completed, layer.completed)
            layer.rate = layer.meter.add(now, layer.completed)
            moved = sum(x.completed - x.start for x in self._layers.values())
            self._overall_rate = self._overall.add(now, moved)
        done = status == "success"
        overall_total = sum(x.total for x in self._layers.values())
        overall_completed = sum(min(x.completed, x.total) for x in self._layers.values())
        if done:  # whatever was said on the way, it is all here now
            overall_completed = overall_total
        return PullProgress(
            model=self.model,
            status=status,
            digest=digest,
            total=layer.total if layer else 0,
            completed=layer.completed if layer else 0,
            rate=layer.rate if layer else None,
            eta_s=_eta(layer.total, layer.completed, layer.rate) if layer else None,
            overall_total=overall_total,
            overall_completed=overall_completed,
            overall_rate=self._overall_rate,
            overall_eta_s=_eta(overall_total, overall_completed, self._overall_rate),
            layers=len(self._layers),
            done=done,
        )


def _eta(total: int, completed: int, rate: float | None) -> float | None:
    if total > 0 and completed >= total:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return (total - completed) / rate
