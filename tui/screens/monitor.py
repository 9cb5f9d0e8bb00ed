"""The Monitor screen: the machine, the services and the recent images at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Label, OptionList, Static
from textual.widgets.option_list import Option

from engines.chat_types import ChatError, LoadedModel
from engines.hosts import model_key, split_key
from engines.monitor import GpuFigures, History, Sample, Sampler
from engines.store import StoredImage, StoreError
from engines.units import human_bytes
from tui.screens.base import AppScreen, styles
from tui.text import shown, visible
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.footer import AppFooter
from tui.widgets.hosts import monitor_lines
from tui.widgets.image_viewer import ImageViewer, open_image
from tui.widgets.picture import Picture, Renderer
from tui.widgets.queue import QueueList

if TYPE_CHECKING:
    from PIL import Image

SAMPLE_EVERY_S = 1.0
SERVICES_EVERY_S = 5.0
RECENT_IMAGES = 6


@dataclass
class SystemSampled(Message):
    """A new sample; one still waiting in the queue is replaced by the newer one."""

    sample: Sample

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SystemSampled)


@dataclass
class ModelsLoaded(Message):
    models: list[LoadedModel] | None
    error: str = ""


@dataclass
class ThumbnailsRead(Message):
    images: list[tuple[StoredImage, Image.Image | None]]


def bar(percent: float, width: int = 20) -> Text:
    """A meter: filled cells coloured by how full it is."""
    percent = max(0.0, min(100.0, percent))
    filled = round(width * percent / 100)
    colour = "green" if percent < 60 else "yellow" if percent < 85 else "red"
    return Text.assemble(("█" * filled, colour), ("░" * (width - filled), "grey35"))


BLOCKS = " ▁▂▃▄▅▆▇█"


class Spark(Static):
    """A history of percentages on a fixed 0-100 scale, newest on the right, one
    character a second (Textual's Spark scales to its own min and max, which
    makes a steady 3 % look full)."""

    DEFAULT_CSS = "Spark { height: 1; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self.values: list[float] = []

    def set_values(self, values: list[float]) -> None:
        self.values = values
        self.refresh()

    def render(self) -> Text:
        width = max(1, self.content_size.width)
        values = self.values[-width:]
        text = Text(" " * (width - len(values)), style="grey23")
        for v in values:
            v = max(0.0, min(100.0, v))
            colour = "green" if v < 60 else "yellow" if v < 85 else "red"
            text.append(BLOCKS[max(1, round(v / 100 * 8))], style=colour)
        return text


def meter(label: str, percent: float, detail: str = "", width: int = 20) -> Text:
    text = Text(f"{label:<5}", style="bold")
    text.append_text(bar(percent, width))
    text.append(f" {percent:5.1f}%")
    if detail:
        text.append(f"  {detail}", style="dim")
    return text


def expires(model: LoadedModel) -> str:
    if model.expires_at is None:
        return ""
    seconds = (model.expires_at - datetime.now(UTC)).total_seconds()
    if seconds <= 0:
        return "unloading"
    return f"unloads in {seconds / 60:.0f} min" if seconds >= 90 else f"unloads in {seconds:.0f} s"


class Thumbnail(Picture, can_focus=True):
    """A recent image, small (in pixels where the terminal draws them); Enter views it
    larger."""

    BINDINGS = [
        Binding("enter", "view", "View", tooltip="View the image larger", id="monitor.view_image"),
        Binding("right", "app.focus_next", "Next", show=False),
        Binding("left", "app.focus_previous", "Previous", show=False),
    ]

    @dataclass
    class ViewRequested(Message):
        image: StoredImage

    def __init__(self, image: StoredImage, renderer: Renderer = "halfblock") -> None:
        super().__init__(renderer, "…")
        self.stored = image
        self.tooltip = shown(image.parameters.prompt)

    def action_view(self) -> None:
        self.post_message(self.ViewRequested(self.stored))

    def on_click(self) -> None:
        self.action_view()


class GpuPanel(Vertical):
    """One GPU: utilisation and memory with their histories, heat, power, processes."""

    def __init__(self, index: int) -> None:
        super().__init__(classes="panel gpu-panel", id=f"gpu{index}")
        self.index = index

    def compose(self) -> ComposeResult:
        yield Static("", classes="gpu-title")
        yield Static("", classes="gpu-util")
        yield Spark(classes="gpu-util-history")
        yield Static("", classes="gpu-memory")
        yield Spark(classes="gpu-memory-history")
        table: DataTable[str | Text] = DataTable(classes="gpu-processes", show_cursor=False)
        table.add_columns("PID", "process", "memory", "")
        yield table

    def show(self, gpu: GpuFigures, history: History) -> None:
        heat = f"{gpu.temperature:.0f}°C" if gpu.temperature is not None else ""
        power = (
            f"{gpu.power_w:.0f}/{gpu.power_limit_w:.0f} W"
            if gpu.power_w is not None and gpu.power_limit_w
            else ""
        )
        self.query_one(".gpu-title", Static).update(
            Text.assemble(
                (f"GPU {gpu.index} ", "bold"),
                shown(gpu.name),
                ("  " + "  ".join(x for x in (heat, power) if x), "dim"),
            )
        )
        self.query_one(".gpu-util", Static).update(meter("util", gpu.utilization))
        self.query_one(".gpu-memory", Static).update(
            meter(
                "mem",
                gpu.memory_percent,
                f"{human_bytes(gpu.memory_used)} / {human_bytes(gpu.memory_total)}",
            )
        )
        self.query_one(".gpu-util-history", Spark).set_values(history.get(f"gpu{gpu.index}"))
        self.query_one(".gpu-memory-history", Spark).set_values(
            history.get(f"gpu{gpu.index}-memory")
        )
        table = self.query_one(DataTable)
        table.clear()
        for p in gpu.processes:
            table.add_row(str(p.pid), shown(p.name), human_bytes(p.used_memory), p.role)
        if not gpu.processes:
            table.add_row("", "no process holds memory", "", "")


class LoadedModels(OptionList):
    """Ollama's loaded models; U unloads the highlighted one."""

    BINDINGS = [
        Binding(
            "u",
            "unload",
            "Unload model",
            tooltip="Ask Ollama to unload the highlighted model",
            id="monitor.unload_model",
        )
    ]

    @dataclass
    class UnloadRequested(Message):
        model: str

    def action_unload(self) -> None:
        if self.highlighted is None:
            return
        option = self.get_option_at_index(self.highlighted)
        if option.id:
            self.post_message(self.UnloadRequested(option.id))


class MonitorScreen(AppScreen[None]):
    """Meters and two-minute histories, services with actions, recent images."""

    CSS_PATH = styles("monitor.tcss")

    BINDINGS = [
        Binding(
            "x",
            "unload_pipeline",
            "Unload pipeline",
            tooltip="Free the Stable Diffusion pipeline's memory",
            id="monitor.unload_pipeline",
        ),
        Binding(
            "m", "focus_models", "Models", tooltip="To Ollama's loaded models", id="monitor.models"
        ),
        Binding("i", "focus_images", "Images", tooltip="To the recent images", id="monitor.images"),
        Binding("q", "focus_queue", "Queue", tooltip="To the image queue", id="monitor.queue"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.history = History()
        self._sampler: Sampler | None = None
        self._timer: Timer | None = None
        self._services_timer: Timer | None = None
        self._gpus_seen: set[int] = set()
        self._images_shown: list[int] | None = None

    def compose(self) -> ComposeResult:
        yield Static("Monitor", id="monitor-title")
        with VerticalScroll(id="monitor-body"):
            with Horizontal(id="machine"):
                with Vertical(classes="panel", id="cpu-panel"):
                    yield Static("", id="cpu-meter")
                    yield Spark(id="cpu-history")
                    yield Static("", id="cpu-detail")
                    yield Static("", id="memory-meter")
                    yield Spark(id="memory-history")
                    yield Static("", id="memory-detail")
                with Vertical(id="gpus"):
                    yield Static("", id="gpu-note")
            with Vertical(classes="panel", id="services"):
                yield Static("", id="ollama-line")
                yield LoadedModels(id="loaded-models")
                yield Static("", id="pipeline-line")
                yield Static("", id="activity-line")
            yield Label(
                "Image queue (Q; s stop, p pause, r resume, [ ] move, x remove)",
                classes="field-label",
            )
            yield QueueList(self.lp.image_queue, id="monitor-queue", compact=True)
            yield Label("Recent images (I, then ←/→ and Enter)", classes="field-label")
            yield Horizontal(id="recent-images")
        yield AppFooter()

    def action_focus_queue(self) -> None:
        self.query_one(QueueList).focus()

    @on(QueueList.Resumed)
    def _queue_resumed(self, event: QueueList.Resumed) -> None:
        self.lp.image_queue.claim()
        self.lp.run_image_queue()

    # -- sampling only while shown ------------------------------------------------

    def on_mount(self) -> None:
        self.watch(self.lp, "ollama", lambda _status: self.refresh_services(), init=False)
        if self.lp.hosts.multi:
            self.watch(self.lp, "host_states", lambda _: self.refresh_services(), init=False)

    def on_screen_resume(self) -> None:
        self.on_screen_suspend()  # never two timers
        if self._sampler is None:
            self._sampler = Sampler(self.lp.settings.paths.outputs)
        self.sample_now()
        self.refresh_services()
        self.read_thumbnails()
        self._timer = self.set_interval(SAMPLE_EVERY_S, self.sample_now)
        self._services_timer = self.set_interval(SERVICES_EVERY_S, self.refresh_services)

    def on_screen_suspend(self) -> None:
        for timer in (self._timer, self._services_timer):
            if timer is not None:
                timer.stop()
        self._timer = self._services_timer = None

    def on_unmount(self) -> None:
        if self._sampler is not None:
            self._sampler.close()

    def on_resize(self) -> None:
        self.set_class(self.size.width < 110, "-narrow")
        self.set_class(self.size.width >= 160 and self.size.height >= 50, "-roomy")

    @work(thread=True, exclusive=True, group="monitor", exit_on_error=False)
    def sample_now(self) -> None:
        if self._sampler is not None:
            self.post_message(SystemSampled(self._sampler.sample()))

    @on(SystemSampled)
    def _sampled(self, event: SystemSampled) -> None:
        s = event.sample
        self.history.record(s)
        cores = " ".join(f"{c:3.0f}" for c in s.cpu.per_core[:32])
        self.query_one("#cpu-meter", Static).update(meter("CPU", s.cpu.total))
        self.query_one("#cpu-history", Spark).set_values(self.history.get("cpu"))
        load = " ".join(f"{x:.2f}" for x in s.cpu.load_average)
        self.query_one("#cpu-detail", Static).update(
            Text(f"cores {cores}\nload {load}", style="dim")
        )
        m = s.memory
        self.query_one("#memory-meter", Static).update(
            meter("RAM", m.percent, f"{human_bytes(m.used)} / {human_bytes(m.total)}")
        )
        self.query_one("#memory-history", Spark).set_values(self.history.get("memory"))
        disk = (
            f"disk {s.disk.percent:.0f}% of {human_bytes(s.disk.total)} ({s.disk.path})"
            if s.disk
            else ""
        )
        self.query_one("#memory-detail", Static).update(
            Text(
                f"swap {m.swap_percent:.0f}% of {human_bytes(m.swap_total)}   {disk}\n"
                f"llm-pessoal: CPU {s.process.cpu_percent:.1f}%  RSS {human_bytes(s.process.rss)}"
                f"  threads {s.process.threads}",
                style="dim",
            )
        )
        self._show_gpus(s)
        self._show_activity(s)

    def _show_gpus(self, s: Sample) -> None:
        note = s.gpu_note
        if s.mps_allocated is not None:
            note = f"Apple GPU (MPS): {human_bytes(s.mps_allocated)} held by torch"
        self.query_one("#gpu-note", Static).update(Text(note, style="dim"))
        self.query_one("#gpu-note").display = bool(note) and not s.gpus
        gpus = self.query_one("#gpus", Vertical)
        for gpu in s.gpus:
            if gpu.index not in self._gpus_seen:
                self._gpus_seen.add(gpu.index)
                gpus.mount(GpuPanel(gpu.index))
                continue  # shown from the next sample, once mounted
            self.query_one(f"#gpu{gpu.index}", GpuPanel).show(gpu, self.history)

    def _show_activity(self, s: Sample) -> None:
        live = self.lp.live
        parts = []
        if live.reply_tokens_per_s is not None:
            parts.append(f"reply {live.reply_tokens_per_s:.1f} tok/s")
        if live.image_steps_per_s is not None:
            parts.append(f"image {live.image_progress} · {live.image_steps_per_s:.2f} steps/s")
        gpu = ", ".join(f"GPU {g.index} {g.utilization:.0f}%" for g in s.gpus)
        if parts and gpu:
            parts.append(gpu)
        text = " · ".join(parts) if parts else "idle: no reply streaming, no image generating"
        self.query_one("#activity-line", Static).update(
            Text.assemble(("Now  ", "bold"), (text, "" if parts else "dim"))
        )

    # -- services --------------------------------------------------------------------

    def _show_pipeline(self) -> None:
        status = self.lp.diffusion.status
        colour = {"ready": "green", "loading": "yellow", "failed": "red"}.get(
            status.state, "grey50"
        )
        memory = f" · {human_bytes(status.memory_bytes)} on the GPU" if status.memory_bytes else ""
        self.query_one("#pipeline-line", Static).update(
            Text.assemble(
                ("● ", colour),
                ("Stable Diffusion ", "bold"),
                visible(status.model),
                f" · {status.describe()}{memory}",
                ("  (X unloads)" if status.state == "ready" else "", "dim"),
            )
        )

    def refresh_services(self) -> None:
        status = self.lp.ollama
        line = self.query_one("#ollama-line", Static)
        if self.lp.hosts.multi:  # a line per server; the loaded models of all, labelled
            line.update(monitor_lines(self.lp.hosts.states))
            if status is not None and status.online:
                self.read_loaded_models()
            else:
                self.post_message(ModelsLoaded(None, status.error if status else ""))
        elif status is None:
            line.update(Text("◌ Ollama: checking…", style="dim"))
        elif status.online:
            line.update(
                Text.assemble(
                    ("● ", "green"),
                    ("Ollama ", "bold"),
                    shown(f"{status.version} at {status.host}"),
                )
            )
            self.read_loaded_models()
        else:
            line.update(Text.assemble(("● ", "red"), ("Ollama ", "bold"), shown(status.error)))
            self.post_message(ModelsLoaded(None))
        self._show_pipeline()

    @work(exclusive=True, group="monitor-services", exit_on_error=False)
    async def read_loaded_models(self) -> None:
        try:
            multi = self.lp.hosts.multi
            models = await (self.lp.hosts.loaded_now() if multi else self.lp.chat.loaded())
        except ChatError as exc:
            self.post_message(ModelsLoaded(None, str(exc)))
            return
        self.post_message(ModelsLoaded(models))

    @on(ModelsLoaded)
    def _models_loaded(self, event: ModelsLoaded) -> None:
        listing = self.query_one(LoadedModels)
        highlighted = listing.highlighted
        listing.clear_options()
        if event.models is None:
            listing.add_option(
                Option(
                    shown(event.error or "no models: Ollama is offline", style="dim"), disabled=True
                )
            )
            return
        if not event.models:
            listing.add_option(Option(Text("no model loaded", style="dim"), disabled=True))
            return
        for m in event.models:
            share = f"{100 * m.size_vram / m.size:.0f}% in VRAM" if m.size else ""
            vram = f" ({human_bytes(m.size_vram)})" if m.size_vram and self.lp.hosts.multi else ""
            label = Text.assemble(
                (f"{visible(m.host)} › ", "") if self.lp.hosts.multi else "",
                (visible(m.name), "bold"),
                f"  {human_bytes(m.size)}  ",
                (f"{share}{vram}  {expires(m)}", "dim"),
            )
            key = model_key(m.host, m.name) if self.lp.hosts.multi else m.name
            listing.add_option(Option(label, id=key))
        keep = highlighted is not None and highlighted < listing.option_count
        listing.highlighted = highlighted if keep else 0

    @on(LoadedModels.UnloadRequested)
    def confirm_unload_model(self, event: LoadedModels.UnloadRequested) -> None:
        host, name = split_key(event.model)
        where = host or "Ollama"

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.unload_model(event.model)

        self.app.push_screen(
            ConfirmDialog(
                f"Unload {name} from {where}? It reloads on its next use.",
                "Unload",
                kept=f"{visible(name)} stays loaded.",
            ),
            confirmed,
        )

    @work(group="monitor-actions", exit_on_error=False)
    async def unload_model(self, key: str) -> None:
        # not in the "monitor-services" group: refreshing the list (as the screen does
        # when the confirmation closes) must not cancel the unloading
        host, name = split_key(key)
        server = self.lp.hosts.find(host) if host else None
        try:
            await (server.engine if server else self.lp.chat).unload(name)
        except ChatError as exc:
            self.notify(str(exc), title="Not unloaded", severity="error")
            return
        self.notify(f"{host or 'Ollama'} unloaded {name}.")
        self.refresh_services()

    def action_unload_pipeline(self) -> None:
        engine = self.lp.diffusion
        kept = "The Stable Diffusion pipeline stays loaded."
        generation = self.lp.live.image_cancel
        if generation is None and not engine.loaded:
            loading = engine.status.state == "loading"
            self.notify(
                "The Stable Diffusion pipeline is loading: unload it once it is ready."
                if loading
                else "The Stable Diffusion pipeline is not loaded.",
                severity="warning",
            )
            return
        if generation is not None:
            # the pipeline cannot go while an image uses it: offer to stop the image
            def stop_first(yes: bool | None) -> None:
                if yes:
                    generation.set()
                    self.notify(
                        "Stopping the image being generated; the pipeline unloads once it "
                        "has stopped (within a step)."
                    )
                    self.unload_pipeline()

            self.app.push_screen(
                ConfirmDialog(
                    "An image is being generated with the pipeline. Stop the generation "
                    "and unload the pipeline?",
                    "Stop and unload",
                    kept=f"{kept} The image goes on.",
                ),
                stop_first,
            )
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.unload_pipeline()

        self.app.push_screen(
            ConfirmDialog(
                "Unload the Stable Diffusion pipeline and free its memory?", "Unload", kept=kept
            ),
            confirmed,
        )

    @work(thread=True, exclusive=True, group="pipeline-unload", exit_on_error=False)
    def unload_pipeline(self) -> None:
        # waits for a generation or a load in progress: the engine holds its lock
        self.lp.diffusion.unload()
        self.app.call_from_thread(self._show_pipeline)
        self.app.call_from_thread(self.notify, "Stable Diffusion pipeline unloaded.")

    def action_focus_models(self) -> None:
        self.query_one(LoadedModels).focus()

    def action_focus_images(self) -> None:
        thumbs = self.query(Thumbnail)
        if thumbs:
            thumbs.first().focus()

    # -- recent images ------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="monitor-images", exit_on_error=False)
    def read_thumbnails(self) -> None:
        try:
            stored = self.lp.store.images(RECENT_IMAGES)
        except StoreError:
            stored = []
        if [i.id for i in stored] == self._images_shown:
            return
        out: list[tuple[StoredImage, Image.Image | None]] = []
        for image in stored:
            try:
                picture = open_image(image.path)
                picture.thumbnail((96, 96))
            except OSError:
                picture = None
            out.append((image, picture))
        self.post_message(ThumbnailsRead(out))

    @on(ThumbnailsRead)
    async def _thumbnails(self, event: ThumbnailsRead) -> None:
        row = self.query_one("#recent-images", Horizontal)
        await row.remove_children()
        self._images_shown = [image.id for image, _ in event.images]
        if not event.images:
            await row.mount(Static(Text("No images yet: F3 makes some.", style="dim")))
            return
        thumbs: list[Widget] = []
        for image, picture in event.images:
            thumb = Thumbnail(image, self.lp.image_renderer)
            thumb.show(picture)
            thumbs.append(thumb)
        await row.mount_all(thumbs)

    @on(Thumbnail.ViewRequested)
    def view(self, event: Thumbnail.ViewRequested) -> None:
        self.app.push_screen(ImageViewer(event.image, self.lp.image_renderer))
