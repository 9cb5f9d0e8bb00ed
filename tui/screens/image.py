"""The Image screen: Stable Diffusion in-process, with live previews."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, ProgressBar, Static

from engines.diffusion import (
    DiffusionError,
    EngineStatus,
    GenerationRequest,
    GenerationResult,
    LoadCancelled,
    RequestError,
    StepInfo,
    validate,
)
from engines.images import read_parameters
from engines.store import StoredImage, StoreError
from tui.text import visible
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.footer import AppFooter
from tui.widgets.gallery import Gallery
from tui.widgets.image_form import FormError, ImageForm
from tui.widgets.picture import Picture

if TYPE_CHECKING:
    from PIL import Image

    from tui.app import LlmPessoalApp


@dataclass
class PipelineChanged(Message):
    status: EngineStatus

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PipelineChanged)  # the newest status is the truth


@dataclass
class StepCompleted(Message):
    """A step is done; the screen reads the newest one (high-rate: coalesced)."""


@dataclass
class GenerationEnded(Message):
    result: GenerationResult | None
    error: str | None
    last: Image.Image | None


def open_image(path: Path) -> Image.Image:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


class ImageViewer(ModalScreen[None]):
    """One image, as large as the terminal allows, with its parameters."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, image: StoredImage, renderer: str) -> None:
        super().__init__(classes="dialog")
        self.image = image
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        with Vertical(classes="viewer-box"):
            yield Picture(self.renderer, "", id="viewer-picture")  # type: ignore[arg-type]
            yield Static(
                Text(visible(self.image.parameters.to_text()), style="dim"), id="viewer-text"
            )
            yield Label(f"{self.image.path}   (Esc closes)", classes="dialog-hint")

    def on_mount(self) -> None:
        self.load_picture()

    @work(thread=True, exit_on_error=False)
    def load_picture(self) -> None:
        try:
            picture = open_image(self.image.path)
        except OSError as exc:
            self.app.call_from_thread(
                self.notify, f"Cannot open {self.image.path}: {exc}", severity="error"
            )
            return
        self.app.call_from_thread(self.query_one(Picture).show, picture)


class ImageScreen(Screen[None]):
    """Describe an image, generate it, watch it form, keep it."""

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
            tooltip="Stop the generation within a step, or the model's download",
            id="image.cancel",
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
            tooltip="To the gallery of recent images",
            id="image.gallery",
        ),
        Binding("ctrl+f", "form", "Form", show=False, tooltip="Back to the form", id="image.form"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._latest_step: StepInfo | None = None
        self._step_pending = threading.Event()
        self._cancel = threading.Event()
        self.generating = False
        self.loading = False
        self._steps_total = 1
        self._downloading = False

    @property
    def lp(self) -> LlmPessoalApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="pipeline-status")
        with Horizontal(id="image-body"):
            with Vertical(id="image-left"):
                yield ImageForm(self.lp.settings.diffusion, id="image-form")
                yield Label("", id="image-error", classes="dialog-error")
                yield Label("Recent images", classes="field-label")
                yield Gallery(id="gallery")
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
        self.refresh_gallery()
        self._show_status(self.lp.diffusion.status)
        self.query_one("#image-progress", ProgressBar).display = False

    def on_screen_resume(self) -> None:
        self.refresh_gallery()
        self._show_status(self.lp.diffusion.status)

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
            bar.display = True
            bar.update(total=max(d.overall.overall_total, 1), progress=d.overall.overall_completed)
            figures.update(Text(visible("  ".join(d.file_lines(1))), style="dim"))
            return
        if self._downloading:
            self._downloading = False
            figures.update("")
        if self.generating:
            bar.update(total=self._steps_total)
        elif not self.loading:
            bar.display = False

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

    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
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
        self.query_one("#image-error", Label).update(visible(message))

    def action_generate(self) -> None:
        if self.generating:
            self.notify("An image is being generated: Esc stops it.", severity="warning")
            return
        form = self.query_one(ImageForm)
        try:
            request = validate(form.request(), self.lp.diffusion.limits)
        except FormError as exc:
            self._error(str(exc))
            form.focus_field(exc.field)
            return
        except RequestError as exc:
            self._error(f"Not generated: {exc}")
            return
        self._error("")
        self._cancel.clear()
        self.generating = True
        progress = self.query_one("#image-progress", ProgressBar)
        self._steps_total = request.steps * request.count
        progress.update(total=self._steps_total, progress=0)
        progress.display = True
        self.query_one("#image-figures", Label).update("starting…")
        self.refresh_bindings()
        self.generate(request)

    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
    def generate(self, request: GenerationRequest) -> None:
        engine = self.lp.diffusion
        if not engine.loaded:
            try:
                engine.load(on_progress=self._progress, cancel=self._cancel)
            except LoadCancelled as exc:  # Esc: asked for, not a failure
                self.post_message(PipelineChanged(engine.status))
                stopped = GenerationResult(cancelled=True, notes=[str(exc)])
                self.post_message(GenerationEnded(stopped, None, None))
                return
            except DiffusionError as exc:
                self.post_message(PipelineChanged(engine.status))
                self.post_message(GenerationEnded(None, str(exc), None))
                return
            self.post_message(PipelineChanged(engine.status))

        def on_step(info: StepInfo) -> None:
            self._latest_step = info
            if not self._step_pending.is_set():
                self._step_pending.set()
                self.post_message(StepCompleted())

        try:
            result = engine.generate(request, on_step=on_step, cancel=self._cancel)
        except DiffusionError as exc:
            self.post_message(GenerationEnded(None, str(exc), None))
            return
        last = None
        if result.images:
            try:
                last = open_image(result.images[-1].path)
            except OSError:
                last = None
        self.post_message(GenerationEnded(result, None, last))

    @on(StepCompleted)
    def _step_completed(self) -> None:
        self._step_pending.clear()
        info = self._latest_step
        if info is None or not self.generating:
            return
        done = info.image_index * info.steps + info.step
        self.query_one("#image-progress", ProgressBar).update(progress=done)
        image = f"image {info.image_index + 1}/{info.count} · " if info.count > 1 else ""
        self.lp.live.image_steps_per_s = info.steps_per_s
        self.lp.live.image_progress = f"{image}step {info.step}/{info.steps}"
        self.query_one("#image-figures", Label).update(
            f"{image}step {info.step}/{info.steps} · {info.steps_per_s:.2f} steps/s · "
            f"ETA {info.eta_s:.0f} s"
        )
        if info.preview is not None:
            self.query_one("#preview", Picture).show(info.preview)

    @on(GenerationEnded)
    def _generation_ended(self, event: GenerationEnded) -> None:
        self.generating = False
        self.lp.live.image_steps_per_s = None
        self.refresh_bindings()
        self.query_one("#image-progress", ProgressBar).display = False
        figures = self.query_one("#image-figures", Label)
        if event.error:
            self._error(event.error)
            figures.update("")
            self.notify(visible(event.error), title="No image", severity="error", timeout=15)
            return
        result = event.result
        assert result is not None
        for note in result.notes:
            self.notify(visible(note), title="Note", timeout=10)
        if event.last is not None:
            self.query_one("#preview", Picture).show(event.last)
        saved = len(result.images)
        if result.cancelled:
            figures.update(f"stopped; {saved} image{'s' if saved != 1 else ''} kept")
        elif saved:
            last = result.images[-1]
            figures.update(f"{last.path.name} · seed {last.parameters.seed} · {last.seconds:.1f} s")
        self.refresh_gallery()
        self.lp.image_finished(saved, self)

    def action_cancel(self) -> None:
        if self.generating or self.loading:
            self._cancel.set()
            self.query_one("#image-figures", Label).update("stopping…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.generating or self.loading
        return True

    # -- gallery ------------------------------------------------------------------------

    def refresh_gallery(self) -> None:
        try:
            images = self.lp.store.images()
        except StoreError as exc:
            self.notify(str(exc), title="Gallery", severity="error")
            return
        self.query_one(Gallery).show(images)

    def action_gallery(self) -> None:
        self.query_one(Gallery).focus()

    def action_form(self) -> None:
        self.query_one("#image-prompt").focus()

    @on(Gallery.Highlighted)
    def _highlighted(self, event: Gallery.Highlighted) -> None:
        if not self.generating:
            self.show_stored(event.image.path)

    @work(thread=True, exclusive=True, group="thumbnail", exit_on_error=False)
    def show_stored(self, path: Path) -> None:
        try:
            picture = open_image(path)
        except OSError:
            return
        self.app.call_from_thread(self.query_one("#preview", Picture).show, picture)

    @on(Gallery.Acted)
    def _acted(self, event: Gallery.Acted) -> None:
        image = event.image
        if event.action == "view":
            self.app.push_screen(ImageViewer(image, self.lp.image_renderer))
        elif event.action == "copy":
            self.app.copy_to_clipboard(str(image.path))
            self.notify(f"Copied {image.path}")
        elif event.action == "reuse":
            try:
                parameters = read_parameters(image.path)
            except (OSError, ValueError) as exc:
                self.notify(f"Cannot read {image.path.name}: {exc}", severity="error")
                return
            self.query_one(ImageForm).fill(parameters)
            self.query_one("#image-prompt").focus()
            self.notify(f"The form now holds the settings of {image.path.name}.")
        elif event.action == "delete":

            def confirmed(yes: bool | None) -> None:
                if not yes:
                    return
                try:
                    image.path.unlink(missing_ok=True)
                    self.lp.store.forget_image(image.id)
                except (OSError, StoreError) as exc:
                    self.notify(f"Not deleted: {exc}", severity="error")
                    return
                self.refresh_gallery()
                self.notify(f"Deleted {image.path.name}.")

            self.app.push_screen(ConfirmDialog(f"Delete {image.path.name}?"), confirmed)
