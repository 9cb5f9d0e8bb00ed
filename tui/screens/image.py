"""The Image screen: Stable Diffusion in-process, with live previews."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import var
from textual.widgets import Label, ProgressBar, Static

from engines.diffusion import (
    SCHEDULERS,
    VARIATION_COUNT,
    VARIATION_STRENGTH,
    DiffusionError,
    EngineStatus,
    GenerationRequest,
    GenerationResult,
    RequestError,
    StepInfo,
    validate,
)
from engines.images import ImageParameters, read_settings
from engines.queue import (
    ImageQueue,
    Job,
    JobEnded,
    JobImageSaved,
    JobStepped,
    PipelineStatus,
    QueueChanged,
    QueueEvent,
)
from engines.store import StoredImage, StoreError
from tui.screens.base import styles
from tui.screens.image_prompts import ImagePromptActions
from tui.text import shown, visible
from tui.widgets.dialogs import PickDialog, TextDialog
from tui.widgets.footer import AppFooter
from tui.widgets.image_form import FormError, ImageForm
from tui.widgets.image_viewer import open_image
from tui.widgets.picture import Picture
from tui.widgets.queue import QueueList

SCHEDULER_NAMES = frozenset(SCHEDULERS)
GALLERY = "gallery"
"""The name the gallery screen is installed under."""
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class PipelineChanged(Message):
    status: EngineStatus

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PipelineChanged)  # the newest status is the truth


@dataclass
class StepCompleted(Message):
    """A step is done. High-rate: a newer step replaces one still waiting in the queue."""

    info: StepInfo

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepCompleted)


@dataclass
class GenerationEnded(Message):
    job: Job
    result: GenerationResult | None
    error: str | None
    last: Image.Image | None


@dataclass
class BatchShown(Message):
    """A batch's grid (or its one image) is ready to show."""

    job_id: int
    picture: Image.Image
    paths: list[Path]


@dataclass
class JobImage(Message):
    job_id: int
    count: int


class QueueMoved(Message):
    """The queue changed: a job started, ended, or was added, moved or removed."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QueueMoved)


class _JobCancel(threading.Event):
    """What the Monitor sets to stop the image being made: the running job's stop."""

    def __init__(self, queue: ImageQueue, job_id: int) -> None:
        super().__init__()
        self.queue = queue
        self.job_id = job_id

    def set(self) -> None:
        super().set()
        self.queue.stop(self.job_id)


class ImageScreen(ImagePromptActions):
    """Describe an image, generate it, watch it form, keep it."""

    CSS_PATH = styles("image.tcss", "gallery.tcss")
    """The gallery's too: it opens only from here, and a style file read when a screen is
    first shown re-parses every rule and restyles every widget of the app."""

    BINDINGS = [
        Binding(
            "ctrl+g",
            "generate",
            "Generate",
            tooltip="Generate with the form's settings",
            id="image.generate",
        ),
        Binding(
            "escape",
            "cancel",
            "Cancel",
            tooltip="Stop the job being made within a step, or the model's download",
            id="image.cancel",
        ),
        Binding(
            "f8",
            "queue",
            "Queue",
            tooltip="To the queue: stop, pause, move, remove jobs",
            id="image.queue",
        ),
        Binding(
            "f9",
            "resume_queue",
            "Resume",
            show=False,
            tooltip="Resume every paused job (those left when the app last ended)",
            id="image.resume",
        ),
        Binding(
            "ctrl+s",
            "save_grid",
            "Save grid",
            show=False,
            tooltip="Save the batch shown as one contact-sheet PNG, seeds under the pictures",
            id="image.save_grid",
        ),
        Binding("ctrl+l", "load", "Load model", tooltip="Load the pipeline now", id="image.load"),
        Binding(
            "f5",
            "models",
            "Models",
            tooltip="Image models on disk: pull, delete, make one the default",
            id="image.models",
        ),
        Binding(
            "ctrl+b",
            "gallery",
            "Gallery",
            tooltip="The gallery: every image as thumbnails, with filters",
            id="image.gallery",
        ),
        Binding("ctrl+f", "form", "Form", show=False, tooltip="Back to the form", id="image.form"),
        Binding(
            "ctrl+r",
            "pick_lora",
            "LoRA",
            tooltip="Insert <lora:name:1.0> from [paths] loras at the prompt's cursor",
            id="image.lora",
        ),
        Binding(
            "ctrl+o",
            "import_settings",
            "Import PNG",
            show=False,  # the footer is full at 120 columns; F1 and the palette list it
            tooltip="Import settings from a PNG (AUTOMATIC1111, ComfyUI or this app)",
            id="image.import",
        ),
        Binding(
            "ctrl+t",
            "start_from_last",
            "From last",
            show=False,
            tooltip="Start the next image from the last one made (img2img)",
            id="image.from_last",
        ),
    ]

    generating = var(False, bindings=True)

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self.last_step: StepInfo | None = None
        """The newest step shown of the generation under way."""
        self.loading = False
        self._steps_total = 1
        self._downloading = False
        self.shown_batch: list[Path] = []
        """The images of the batch shown in the preview (a grid when more than one)."""
        self._grid_job: int | None = None
        self._job_shown: int | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="pipeline-status")
        with Horizontal(id="image-body"):
            with VerticalScroll(id="image-left"):
                yield ImageForm(self.lp.settings.diffusion, id="image-form")
                yield Label("", id="image-error", classes="dialog-error")
                yield Label("Queue (F8; F9 resumes)", classes="field-label")
                yield QueueList(self.lp.image_queue, id="image-queue")
            with Vertical(id="image-right"):
                yield Picture(
                    self.lp.image_renderer,
                    "Ctrl+G generates. The steps show here as the image forms.",
                    id="preview",
                )
                yield ProgressBar(total=1, show_eta=False, id="image-progress")
                yield Label("", id="image-figures")
        yield AppFooter()

    def on_mount(self) -> None:
        self.query_one("#image-prompt").focus()
        self._show_status(self.lp.diffusion.status)
        # hidden, its rows kept: the picture keeps its size when a generation starts (a
        # picture drawn again at another size is a whole new frame, 90 KB at 120x40)
        self.query_one("#image-progress", ProgressBar).visible = False
        queue = self.lp.image_queue
        queue.subscribe(self._queue_event)
        _recovered_paused, stopped = queue.recovered
        try:
            paused = queue.counts().get("paused", 0)
        except StoreError:
            paused = 0
        if paused or stopped:
            left = []
            if paused:
                left.append(f"{paused} job{'s' if paused > 1 else ''} paused (F9 resumes)")
            if stopped:
                left.append(f"{stopped} stopped while it ran (its images are kept; r retries)")
            self.notify(
                "Left when the app last ended: " + "; ".join(left) + ".", title="Queue", timeout=15
            )

        self.show_newest()

    @work(thread=True, exclusive=True, group="newest", exit_on_error=False)
    def show_newest(self) -> None:
        """At start, the newest image in the preview (as AUTOMATIC1111 shows its last
        output), read off the event loop."""
        try:
            images = self.lp.store.images(limit=1)
            if not images:
                return
            picture = open_image(images[0].path)
        except (OSError, StoreError):
            return  # the preview keeps its hint; the gallery says what is missing
        self.app.call_from_thread(self._show_newest, images[0], picture)

    def _show_newest(self, image: StoredImage, picture: Image.Image) -> None:
        preview = self.query_one("#preview", Picture)
        if self.generating or preview.image is not None:
            return  # a generation's steps or image came first: they are newer
        preview.show(picture)
        self.query_one("#image-figures", Label).update(
            shown(f"{image.path.name} · seed {image.parameters.seed} · the newest image")
        )

    def on_unmount(self) -> None:
        self.lp.image_queue.unsubscribe(self._queue_event)

    def on_screen_resume(self) -> None:
        self._show_status(self.lp.diffusion.status)

    def _queue_event(self, event: QueueEvent) -> None:
        """From the queue's worker thread: messages to this screen."""
        if isinstance(event, JobStepped):
            self.post_message(StepCompleted(event.info))
        elif isinstance(event, PipelineStatus):
            self.post_message(PipelineChanged(event.status))
        elif isinstance(event, JobImageSaved):
            self.post_message(JobImage(event.job_id, event.image.parameters.seed))
        elif isinstance(event, JobEnded):
            last = None
            if event.result is not None and event.result.images:
                try:
                    last = open_image(event.result.images[-1].path)
                except OSError:
                    last = None
            self.post_message(GenerationEnded(event.job, event.result, event.error, last))
        elif isinstance(event, QueueChanged):
            self.post_message(QueueMoved())

    # -- pipeline state ------------------------------------------------------------

    def _show_status(self, status: EngineStatus) -> None:
        style = {"ready": "green", "loading": "yellow", "failed": "red"}.get(status.state, "dim")
        text = Text.assemble(
            ("● ", style),
            "" if status.download else "Stable Diffusion ",  # room for the download's figures
            (visible(status.model), "bold"),
            f" · {status.describe()}",
        )
        if status.state == "not loaded":
            text.append(" · loads on the first image (Ctrl+L loads now)", style="dim")
        self.query_one("#pipeline-status", Static).update(text)

    @on(PipelineChanged)
    def _pipeline_changed(self, event: PipelineChanged) -> None:
        self._show_status(event.status)
        self._show_download(event.status)
        if self.loading and event.status.state != "loading":
            self.loading = False
            self.refresh_bindings()

    def _show_download(self, status: EngineStatus) -> None:
        """A hub model's download in the bar and the figures line (per file), while it goes."""
        bar = self.query_one("#image-progress", ProgressBar)
        figures = self.query_one("#image-figures", Label)
        d = status.download
        if d is not None:
            self._downloading = True
            bar.visible = True
            bar.update(total=max(d.overall.overall_total, 1), progress=d.overall.overall_completed)
            figures.update(Text(visible("  ".join(d.file_lines(1))), style="dim"))
            return
        if self._downloading:
            self._downloading = False
            figures.update("")
        if self.generating:
            bar.update(total=self._steps_total)
        elif not self.loading:
            bar.visible = False

    def _progress(self, status: EngineStatus) -> None:
        """From the loading thread."""
        self.post_message(PipelineChanged(status))

    def action_load(self) -> None:
        if self.generating or self.loading:
            return
        self._cancel.clear()
        self.loading = True
        self.refresh_bindings()
        self.load_pipeline()

    def action_models(self) -> None:
        from tui.screens.models import ModelsDialog

        self.app.push_screen(ModelsDialog(section="image"), lambda _: self.on_screen_resume())

    @work(thread=True, exclusive=True, group="pipeline-load", exit_on_error=False)
    def load_pipeline(self) -> None:
        engine = self.lp.diffusion
        try:
            engine.load(on_progress=self._progress, cancel=self._cancel)
        except DiffusionError as exc:
            self.app.call_from_thread(
                self.notify, str(exc), title="Model not loaded", severity="error", timeout=15
            )
        self.post_message(PipelineChanged(engine.status))

    # -- generation --------------------------------------------------------------------

    def _error(self, message: str) -> None:
        self.query_one("#image-error", Label).update(shown(message))

    def action_generate(self) -> None:
        """Queue the form's settings as a job; the form stays as it is, to edit and queue
        more."""
        form = self.query_one(ImageForm)
        try:
            request = validate(form.request(), self.lp.diffusion.limits)
        except FormError as exc:
            self._error(str(exc))
            form.focus_field(exc.field)
            return
        except RequestError as exc:
            self._error(f"Not queued: {exc}")
            return
        self._queue(request)

    def _queue(self, request: GenerationRequest) -> None:
        self._error("")
        try:
            job = self.lp.image_queue.add(request, self.lp.diffusion.model)
        except StoreError as exc:
            self._error(f"Not queued: {exc}")
            return
        self.lp.image_queue.claim()
        waiting = self.lp.image_queue.counts().get("queued", 0)
        if self.generating or waiting > 1:
            self.notify(f"Job #{job.id} queued ({waiting} waiting).", title="Queue")
        self.lp.run_image_queue()
        self.generating = self.lp.image_queue.busy

    @on(QueueList.Resumed)
    def _resumed(self, event: QueueList.Resumed) -> None:
        self.lp.image_queue.claim()
        self.lp.run_image_queue()

    def action_resume_queue(self) -> None:
        queue = self.lp.image_queue
        resumed = queue.resume_all()
        if not resumed:
            self.notify("No paused job to resume.", title="Queue")
            return
        queue.claim()
        self.notify(f"{resumed} job{'s' if resumed > 1 else ''} resumed.", title="Queue")
        self.lp.run_image_queue()

    def action_queue(self) -> None:
        self.query_one(QueueList).focus()

    @on(QueueMoved)
    def _queue_moved(self, event: QueueMoved) -> None:
        queue = self.lp.image_queue
        running = queue.running_id
        if running is not None and running != self._job_shown:
            self._job_started(running)
        self.generating = queue.busy
        if not self.generating:
            self._job_shown = None
            self.lp.live.image_steps_per_s = None
            self.lp.live.image_cancel = None
            if not self.loading and not self._downloading:
                self.query_one("#image-progress", ProgressBar).visible = False

    def _job_started(self, job_id: int) -> None:
        self._job_shown = job_id
        self.last_step = None
        self.shown_batch = []
        self._grid_job = None
        self.lp.live.image_cancel = _JobCancel(self.lp.image_queue, job_id)
        job = self.lp.image_queue.job(job_id)
        progress = self.query_one("#image-progress", ProgressBar)
        self._steps_total = job.request.steps * job.remaining if job else 1
        progress.update(total=self._steps_total, progress=0)
        progress.visible = True
        self.query_one("#image-figures", Label).update(f"job #{job_id} starting…")

    @on(StepCompleted)
    def _step_completed(self, event: StepCompleted) -> None:
        info = event.info
        if not self.generating:
            return
        self.last_step = info
        done = info.image_index * info.steps + info.step
        # img2img and the hires fix run other numbers of steps than the form's
        self.query_one("#image-progress", ProgressBar).update(
            total=info.steps * info.count, progress=done
        )
        image = f"image {info.image_index + 1}/{info.count} · " if info.count > 1 else ""
        self.lp.live.image_steps_per_s = info.steps_per_s
        self.lp.live.image_progress = f"{image}step {info.step}/{info.steps}"
        self.query_one("#image-figures", Label).update(
            f"{image}step {info.step}/{info.steps} · {info.steps_per_s:.2f} steps/s · "
            f"ETA {info.eta_s:.0f} s"
        )
        if info.preview is not None:
            self.query_one("#preview", Picture).show_preview(info.preview)

    @on(JobImage)
    def _job_image(self, event: JobImage) -> None:
        job = self.lp.image_queue.job(event.job_id)
        if job is not None and job.count > 1:
            self.show_batch(event.job_id)

    @on(GenerationEnded)
    def _generation_ended(self, event: GenerationEnded) -> None:
        figures = self.query_one("#image-figures", Label)
        preview = self.query_one("#preview", Picture)
        log.info(
            "previews: %d drawn, %d dropped (the terminal was behind)",
            preview.previews_drawn,
            preview.previews_held,
        )
        preview.previews_drawn = preview.previews_held = 0
        job = event.job
        if event.error:
            self._error(f"Job #{job.id} failed: {event.error}")
            figures.update("")
            self.notify(
                visible(event.error), title=f"Job #{job.id} failed", severity="error", timeout=15
            )
            return
        result = event.result
        assert result is not None
        for note in result.notes:
            self.notify(visible(note), title="Note", timeout=10)
        saved = len(result.images)
        if job.count > 1 and job.done:
            self.show_batch(job.id)
        elif event.last is not None:
            self.shown_batch = [result.images[-1].path]
            self.query_one("#preview", Picture).show(event.last)
        if result.cancelled:
            word = "paused" if job.state == "paused" else "stopped"
            figures.update(f"job #{job.id} {word}; {saved} image{'s' if saved != 1 else ''} kept")
        elif saved:
            last = result.images[-1]
            figures.update(
                shown(f"{last.path.name} · seed {last.parameters.seed} · {last.seconds:.1f} s")
            )
        self.lp.image_finished(saved, self)

    def action_cancel(self) -> None:
        queue = self.lp.image_queue
        if self.generating and queue.running_id is not None:
            queue.stop(queue.running_id)
            self.query_one("#image-figures", Label).update("stopping…")
        elif self.loading:
            self._cancel.set()
            self.query_one("#image-figures", Label).update("stopping…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.generating or self.loading
        if action == "save_grid":
            return len(self.shown_batch) > 1
        return True

    # -- batch grids --------------------------------------------------------------------

    @on(QueueList.ShowJob)
    def _show_job(self, event: QueueList.ShowJob) -> None:
        self.show_batch(event.job.id)

    @work(thread=True, exclusive=True, group="batch", exit_on_error=False)
    def show_batch(self, job_id: int) -> None:
        from engines.grid import cells_of, contact_sheet

        paths = self.lp.image_queue.images_of(job_id)
        cells = cells_of(paths)
        if not cells:
            self.app.call_from_thread(
                self.notify, f"Job #{job_id} has no image in the gallery.", title="Batch"
            )
            return
        picture = contact_sheet(cells) if len(cells) > 1 else cells[0].image
        self.post_message(BatchShown(job_id, picture, paths))

    @on(BatchShown)
    def _batch_shown(self, event: BatchShown) -> None:
        self.shown_batch = event.paths
        self._grid_job = event.job_id
        self.query_one("#preview", Picture).show(event.picture)
        self.refresh_bindings()

    def action_save_grid(self) -> None:
        if len(self.shown_batch) < 2:
            self.notify(
                "No batch shown: g on a job of several images shows its grid.", title="Grid"
            )
            return
        self.save_grid(list(self.shown_batch), self._grid_job)

    @work(thread=True, exclusive=True, group="batch-save", exit_on_error=False)
    def save_grid(self, paths: list[Path], job_id: int | None) -> None:
        from engines.grid import cells_of, contact_sheet, save_grid

        try:
            sheet = contact_sheet(cells_of(paths))
            path = save_grid(sheet, self.lp.settings.paths.outputs, f"job{job_id or 0}")
        except (OSError, ValueError) as exc:
            self.app.call_from_thread(
                self.notify, f"Grid not saved: {exc}", title="Grid", severity="error"
            )
            return
        self.app.call_from_thread(self.notify, f"Grid saved: {path}", title="Grid")

    # -- gallery ------------------------------------------------------------------------

    def action_gallery(self) -> None:
        from tui.screens.gallery import GalleryScreen

        # one gallery, kept between openings: its filters and place stay, and it opens
        # at once the second time
        if not self.app.is_screen_installed(GALLERY):
            self.app.install_screen(GalleryScreen(), GALLERY)
        self.app.push_screen(GALLERY, self._from_gallery)

    def _from_gallery(self, chosen: tuple[str, StoredImage] | None) -> None:
        """The gallery closed on an action for this screen's form."""
        if chosen is None:
            return
        action, image = chosen
        if action == "reuse":
            self.import_settings(image.path)
        elif action == "init":
            self.query_one(ImageForm).set_init_image(str(image.path))
            self.notify(f"The next image starts from {visible(image.path.name)}.", markup=False)
        elif action == "variations":
            self.variations(image)
        elif action == "improve":  # issue 14: a chat model rewrites its prompt
            self.query_one(ImageForm).fill(image.parameters)
            self.improve(image.parameters.prompt, image.path)

    def action_form(self) -> None:
        self.query_one("#image-prompt").focus()

    # -- img2img, LoRAs, imported settings --------------------------------------------

    def variations(self, image: StoredImage) -> None:
        """The same prompt and settings, img2img from the image at a low strength, with
        new seeds."""
        self.prepare_variations(image)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def prepare_variations(self, image: StoredImage) -> None:
        from PIL import Image

        try:
            with Image.open(image.path) as im:  # its real size: a hires fix made it larger
                width, height = im.size
        except OSError as exc:
            self.app.call_from_thread(
                self.notify, f"No variations: {exc}", severity="error", markup=False
            )
            return
        p = image.parameters
        request = GenerationRequest(
            prompt=p.prompt,
            negative_prompt=p.negative_prompt,
            width=width // 8 * 8,
            height=height // 8 * 8,
            steps=p.steps,
            guidance=p.guidance,
            scheduler=p.scheduler if p.scheduler in SCHEDULER_NAMES else "Euler a",
            count=VARIATION_COUNT,
            init_image=str(image.path),
            strength=VARIATION_STRENGTH,
        )
        self.app.call_from_thread(self._start_variations, image, request)

    def _start_variations(self, image: StoredImage, request: GenerationRequest) -> None:
        try:
            request = validate(request, self.lp.diffusion.limits)
        except RequestError as exc:
            self._error(f"No variations: {exc}")
            return
        self.notify(
            f"{VARIATION_COUNT} variations of {visible(image.path.name)} "
            f"(strength {VARIATION_STRENGTH:g}, new seeds).",
            markup=False,
        )
        self._queue(request)

    def action_pick_lora(self) -> None:
        names = self.lp.diffusion.lora_names()
        if not names:
            folder = self.lp.settings.paths.loras
            self.notify(
                f"No LoRAs in {visible(str(folder))}: put .safetensors files there "
                "([paths] loras in config.toml).",
                title="LoRA",
                severity="warning",
                markup=False,
            )
            return

        def picked(index: int | None) -> None:
            if index is not None:
                self.query_one(ImageForm).insert_in_prompt(f"<lora:{names[index]}:1.0>")

        self.app.push_screen(PickDialog("Insert a LoRA at the cursor", names), picked)

    def action_import_settings(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.import_settings(Path(path).expanduser())

        self.app.push_screen(TextDialog("Import settings from a PNG: its path"), chosen)

    def action_start_from_last(self) -> None:
        try:
            images = self.lp.store.images(limit=1)
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return
        if not images:
            self.notify("No image yet to start from.", severity="warning")
            return
        newest = images[0]
        self.query_one(ImageForm).set_init_image(str(newest.path))
        self.notify(f"The next image starts from {visible(newest.path.name)}.", markup=False)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def import_settings(self, path: Path) -> None:
        try:
            parameters, source = read_settings(path)
        except (OSError, ValueError) as exc:
            self.app.call_from_thread(
                self.notify,
                visible(f"Nothing imported: {exc}"),
                title="Import",
                severity="error",
                markup=False,
            )
            return
        self.app.call_from_thread(self._imported, path, parameters, source)

    def _imported(self, path: Path, parameters: ImageParameters, source: str) -> None:
        form = self.query_one(ImageForm)
        form.fill(parameters)
        self.query_one("#image-prompt").focus()
        note = f"The form now holds the settings of {visible(path.name)} ({source})."
        if (sampler := form.unknown_sampler(parameters)) is not None:
            note += f" Its sampler {sampler} is not one of the app's: kept the form's."
        self.notify(note, title="Import", markup=False)
