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
    LoadCancelled,
    RequestError,
    StepInfo,
    validate,
)
from engines.files import OutsideFolder, remove_inside
from engines.images import ImageParameters, read_settings
from engines.store import StoredImage, StoreError
from tui.screens.base import AppScreen
from tui.text import shown, visible
from tui.widgets.dialogs import ConfirmDialog, PickDialog, TextDialog
from tui.widgets.footer import AppFooter
from tui.widgets.gallery import Gallery
from tui.widgets.image_form import FormError, ImageForm
from tui.widgets.image_viewer import ImageViewer, open_image
from tui.widgets.picture import Picture

SCHEDULER_NAMES = frozenset(SCHEDULERS)

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
    result: GenerationResult | None
    error: str | None
    last: Image.Image | None


class ImageScreen(AppScreen[None]):
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

    def compose(self) -> ComposeResult:
        yield Static("", id="pipeline-status")
        with Horizontal(id="image-body"):
            with VerticalScroll(id="image-left"):
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
        self._start(request)

    def _start(self, request: GenerationRequest) -> None:
        self._error("")
        self._cancel.clear()
        self.last_step = None
        self.generating = True
        self.lp.live.image_cancel = self._cancel
        progress = self.query_one("#image-progress", ProgressBar)
        self._steps_total = request.steps * request.count
        progress.update(total=self._steps_total, progress=0)
        progress.display = True
        self.query_one("#image-figures", Label).update("starting…")
        self.generate(request)

    @work(thread=True, exclusive=True, group="generation", exit_on_error=False)
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
            self.post_message(StepCompleted(info))

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
            self.query_one("#preview", Picture).show(info.preview)

    @on(GenerationEnded)
    def _generation_ended(self, event: GenerationEnded) -> None:
        self.generating = False
        self.lp.live.image_steps_per_s = None
        self.lp.live.image_cancel = None
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
            figures.update(
                shown(f"{last.path.name} · seed {last.parameters.seed} · {last.seconds:.1f} s")
            )
        self.refresh_gallery()
        if saved:
            # the gallery's highlight follows the new image, so the picture and its
            # caption name the same file (it stayed on the one highlighted before)
            gallery = self.query_one(Gallery)
            paths = [i.path for i in gallery.items]
            if result.images[-1].path in paths:
                gallery.highlighted = paths.index(result.images[-1].path)
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
        self.app.call_from_thread(self._show_stored, path, picture)

    def _show_stored(self, path: Path, picture: Image.Image) -> None:
        current = self.query_one(Gallery).current()
        if self.generating or current is None or current.path != path:
            return  # read too late: another image was chosen (or is being made) since
        self.query_one("#preview", Picture).show(picture)

    @on(Gallery.Acted)
    def _acted(self, event: Gallery.Acted) -> None:
        image = event.image
        if event.action == "view":
            self.app.push_screen(ImageViewer(image, self.lp.image_renderer))
        elif event.action == "copy":
            self.app.copy_to_clipboard(str(image.path))
            self.notify(f"Copied {image.path}")
        elif event.action == "reuse":
            self.import_settings(image.path)
        elif event.action == "init":
            self.query_one(ImageForm).set_init_image(str(image.path))
            self.notify(f"The next image starts from {visible(image.path.name)}.", markup=False)
        elif event.action == "variations":
            self.variations(image)
        elif event.action == "delete":
            outputs = self.lp.settings.paths.outputs

            def confirmed(yes: bool | None) -> None:
                if not yes:
                    return
                try:
                    remove_inside(outputs, image.path, "[paths] outputs")
                    self.lp.store.forget_image(image.id)
                except (OSError, StoreError, OutsideFolder) as exc:
                    self.notify(visible(f"Not deleted: {exc}"), severity="error")
                    return
                self.refresh_gallery()
                self.notify(visible(f"Deleted {image.path}."))

            self.app.push_screen(ConfirmDialog(f"Delete {image.path}?"), confirmed)

    # -- img2img, LoRAs, imported settings --------------------------------------------

    def variations(self, image: StoredImage) -> None:
        """The same prompt and settings, img2img from the image at a low strength, with
        new seeds."""
        if self.generating:
            self.notify("An image is being generated: Esc stops it.", severity="warning")
            return
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
        if self.generating:
            return
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
        self._start(request)

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
        gallery = self.query_one(Gallery)
        if not gallery.items:
            self.notify("No image yet to start from.", severity="warning")
            return
        newest = max(gallery.items, key=lambda i: i.created_at)
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
