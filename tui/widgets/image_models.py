"""The image models on disk, as the Models dialog's "Image models" section shows them: hub
models in the cache (size, last use) and local folders and files in ``[paths] models``;
pull a hub id with progress per file and in total (Esc stops it; pulling again goes on),
delete one (after a question naming its size), make one the default for this run or for
every run (state.json, in [diffusion] model's place)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from engines.hub import (
    DownloadCancelled,
    DownloadPlan,
    DownloadProgress,
    HubError,
    HubModels,
    ImageModel,
    hub_cache,
    is_hub_id,
    wants_fp16,
)
from engines.state import IMAGE_MODEL
from engines.units import human_bytes
from tui.screens.base import ReportsWorkerFailures, app_of
from tui.text import visible
from tui.widgets.dialogs import ConfirmDialog

if TYPE_CHECKING:
    pass

REDRAW_EVERY_S = 0.2
"""The download is redrawn at most five times a second."""


def when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds).strftime("%d %b %Y %H:%M") if seconds else "-"


def model_label(model: ImageModel) -> Text:
    """``● owner/name  4.3 GB``: the default marked, the size dim."""
    text = Text("● " if model.default else "  ", style="green" if model.default else "")
    text.append(visible(model.name))
    size = human_bytes(model.size) + ("" if model.complete else " · incomplete")
    text.append(f"  {size}", style="dim")
    return text


def model_details(model: ImageModel) -> Text:
    kinds = {"hub": "hub model (cache)", "folder": "diffusers folder", "file": "single file"}
    text = Text(visible(model.name) + "\n", style="bold")
    rows = [
        ("kind", kinds[model.kind]),
        ("size", human_bytes(model.size)),
        ("last used", when(model.last_used)),
        ("where", visible(str(model.path))),
    ]
    if model.partial:
        rows.append(("resumable part", human_bytes(model.partial)))
    if not model.complete:
        rows.append(("state", "incomplete: Enter pulls the rest"))
    if model.default:
        rows.append(("default", "yes"))
    for label, value in rows:
        text.append(f"{label:<15}", style="dim")
        text.append(value + "\n")
    text.rstrip()
    return text


@dataclass
class ImagePullProgressed(Message):
    """A download went on (high-rate: only the newest is drawn)."""

    progress: DownloadProgress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ImagePullProgressed)


@dataclass
class ImagePullEnded(Message):
    repo: str
    error: str | None
    cancelled: bool = False


@dataclass
class ImageModelsListed(Message):
    models: list[ImageModel]


class ImageModelsPane(ReportsWorkerFailures, Vertical):
    """The image models: list, details, a pull form and its progress."""

    DEFAULT_CSS = """
    ImageModelsPane { height: 1fr; }
    ImageModelsPane #image-models-main { height: 1fr; min-height: 5; }
    ImageModelsPane #image-models-list {
        width: 2fr; height: 1fr; border: round $panel-lighten-2;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    ImageModelsPane #image-models-list:focus { border: round $primary; }
    ImageModelsPane #image-model-details {
        width: 3fr; height: 1fr; border: round $panel-lighten-2; padding: 0 1;
    }
    ImageModelsPane #image-pull-form { height: auto; }
    ImageModelsPane #image-pull-name { width: 1fr; }
    ImageModelsPane #image-pull-button { margin-left: 1; }
    ImageModelsPane #image-pull-view { height: auto; }
    ImageModelsPane #image-pull-view ProgressBar { width: auto; }
    ImageModelsPane .image-pull-line { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    ImageModelsPane #image-pull-status.-failed { color: $error; }
    """

    BINDINGS = [
        Binding(
            "escape",
            "stop_pull",
            "Stop",
            tooltip="Stop the download (pulling again goes on from it)",
            id="image-models.stop",
        ),
        Binding(
            "p",
            "focus_pull",
            "Pull",
            tooltip="Type a hub id to download; Enter starts it",
            id="image-models.pull",
        ),
        Binding(
            "d,delete",
            "delete_model",
            "Delete",
            tooltip="Delete the highlighted image model and free its space (asks first)",
            id="image-models.delete",
        ),
        Binding(
            "u",
            "use_model",
            "Use now",
            tooltip="Make the highlighted model the image model of this run",
            id="image-models.use",
        ),
        Binding(
            "s",
            "save_default",
            "Default",
            tooltip="Make the highlighted model the default of every run (kept in state.json)",
            id="image-models.default",
        ),
        Binding(
            "r",
            "refresh",
            "Refresh",
            tooltip="Read the image models on disk again",
            id="image-models.refresh",
        ),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.models: list[ImageModel] = []
        self.pulling: str | None = None
        self._cancel = threading.Event()
        self._drawn_at = 0.0

    def hub(self) -> HubModels:
        return HubModels(hub_cache(app_of(self).settings.paths.cache))

    def compose(self) -> ComposeResult:
        with Horizontal(id="image-models-main"):
            yield OptionList(id="image-models-list")
            with VerticalScroll(id="image-model-details", can_focus=True):
                yield Static("", id="image-model-details-text")
        with Horizontal(id="image-pull-form"):
            yield Input(placeholder="Hub id to pull, e.g. owner/name", id="image-pull-name")
            yield Button("Pull", id="image-pull-button", variant="primary")
        with Vertical(id="image-pull-view"):
            yield Label("", id="image-pull-status", classes="image-pull-line")
            yield ProgressBar(total=None, show_eta=False, id="image-pull-bar")
            yield Label("", id="image-pull-files", classes="image-pull-line")
        yield Label(
            "P pull · D delete · U use now · S default · R refresh · Esc stops a pull",
            classes="dialog-hint",
        )

    def on_mount(self) -> None:
        self.query_one("#image-pull-view").display = False
        self.refresh_models()

    # -- the list ----------------------------------------------------------------------------

    def refresh_models(self) -> None:
        """Read the models on disk again (in a thread); the default is the engine's model."""
        self.list_models(app_of(self).diffusion.model)

    @work(thread=True, exclusive=True, group="image-models-list", exit_on_error=False)
    def list_models(self, default: str) -> None:
        settings = app_of(self).settings
        try:
            found = self.hub().models(
                [settings.paths.models], default, [settings.paths.loras, settings.paths.embeddings]
            )
        except (HubError, OSError) as exc:
            self.app.call_from_thread(
                self.notify, visible(str(exc)), title="Image models", severity="error", markup=False
            )
            return
        self.post_message(ImageModelsListed(found))

    @on(ImageModelsListed)
    def _listed(self, event: ImageModelsListed) -> None:
        event.stop()
        current = self.highlighted()
        self.models = event.models
        listing = self.query_one("#image-models-list", OptionList)
        listing.clear_options()
        listing.add_options([Option(model_label(m), id=m.name) for m in self.models])
        details = self.query_one("#image-model-details-text", Static)
        if not self.models:
            details.update(
                Text(
                    "No image models on disk yet. The default, "
                    f"{visible(app_of(self).diffusion.model)}, downloads on the first image, or "
                    "now: P, then Enter.\nLocal ones go in "
                    f"{visible(str(app_of(self).settings.paths.models))}",
                    style="dim",
                )
            )
            return
        names = [m.name for m in self.models]
        listing.highlighted = names.index(current.name) if current and current.name in names else 0

    def highlighted(self) -> ImageModel | None:
        listing = self.query_one("#image-models-list", OptionList)
        if listing.highlighted is None or not 0 <= listing.highlighted < len(self.models):
            return None
        return self.models[listing.highlighted]

    @on(OptionList.OptionHighlighted, "#image-models-list")
    def _highlight(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        model = self.highlighted()
        if model is not None:
            self.query_one("#image-model-details-text", Static).update(model_details(model))

    @on(OptionList.OptionSelected, "#image-models-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        model = self.highlighted()
        if model is not None and model.kind == "hub" and not model.complete:
            self.start_pull(model.name)

    def action_refresh(self) -> None:
        self.refresh_models()

    # -- pulling -----------------------------------------------------------------------------

    def action_focus_pull(self) -> None:
        self.query_one("#image-pull-name", Input).focus()

    @on(Input.Submitted, "#image-pull-name")
    @on(Button.Pressed, "#image-pull-button")
    def _pull_asked(self, event: Message) -> None:
        event.stop()
        self.start_pull(self.query_one("#image-pull-name", Input).value.strip())

    def start_pull(self, repo: str) -> None:
        if self.pulling:
            self.notify(
                f"{visible(self.pulling)} is downloading: Esc stops it.",
                severity="warning",
                markup=False,
            )
            return
        if not is_hub_id(repo):
            self.notify(
                f"{visible(repo) or 'Nothing'} is not a hub id: type owner/name, e.g. "
                "stable-diffusion-v1-5/stable-diffusion-v1-5.",
                severity="warning",
                markup=False,
            )
            self.action_focus_pull()
            return
        self.pulling = repo
        self._cancel.clear()
        self._drawn_at = 0.0
        self.query_one("#image-pull-view").display = True
        self._status(f"{repo}: asking the hub what it holds…")
        self.query_one("#image-pull-files", Label).update("")
        self.query_one("#image-pull-bar", ProgressBar).update(total=None, progress=0)
        self.refresh_bindings()
        self.pull(repo)

    @work(thread=True, exclusive=True, group="image-model-pull", exit_on_error=False)
    def pull(self, repo: str) -> None:
        def planned(plan: DownloadPlan) -> None:
            self.app.call_from_thread(self._status, f"{plan.repo}: {plan.summary()}")

        def progressed(p: DownloadProgress) -> None:
            self.post_message(ImagePullProgressed(p))

        try:
            self.hub().pull(
                repo,
                fp16=wants_fp16(app_of(self).settings.diffusion.dtype),
                on_plan=planned,
                on_progress=progressed,
                cancel=self._cancel,
            )
        except DownloadCancelled:
            self.post_message(ImagePullEnded(repo, None, cancelled=True))
        except HubError as exc:
            self.post_message(ImagePullEnded(repo, str(exc)))
        else:
            self.post_message(ImagePullEnded(repo, None))

    @on(ImagePullProgressed)
    def _progressed(self, event: ImagePullProgressed) -> None:
        event.stop()
        p = event.progress
        now = time.monotonic()
        if not self.pulling or (not p.done and now - self._drawn_at < REDRAW_EVERY_S):
            return
        self._drawn_at = now
        self._status(f"{p.repo}: {p.describe()}")
        total = max(p.overall.overall_total, 1)
        self.query_one("#image-pull-bar", ProgressBar).update(
            total=total, progress=p.overall.overall_completed
        )
        self.query_one("#image-pull-files", Label).update(
            Text(visible("  ".join(p.file_lines(1))), style="dim")
        )

    @on(ImagePullEnded)
    def _ended(self, event: ImagePullEnded) -> None:
        event.stop()
        self.pulling = None
        self.refresh_bindings()
        self.query_one("#image-pull-files", Label).update("")
        if event.cancelled:
            self._status(
                f"Stopped pulling {event.repo}; what came stays in the cache and pulling "
                "again goes on from it.",
                failed=True,
            )
        elif event.error:
            self._status(event.error, failed=True)
            self.notify(
                visible(event.error), title="Not pulled", severity="error", timeout=15, markup=False
            )
        else:
            self._status(f"Pulled {event.repo}: U uses it now, S makes it the default.")
            self.notify(f"Pulled {visible(event.repo)}.", title="Image models", markup=False)
        self.refresh_models()

    def action_stop_pull(self) -> None:
        self._cancel.set()
        self._status(f"Stopping the download of {self.pulling}…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_pull":
            return self.pulling is not None  # else Esc closes the dialog
        return True

    def _status(self, message: str, *, failed: bool = False) -> None:
        label = self.query_one("#image-pull-status", Label)
        label.update(Text(visible(message)))
        label.set_class(failed, "-failed")

    # -- delete, use, default ---------------------------------------------------------------------

    def action_delete_model(self) -> None:
        model = self.highlighted()
        if model is None:
            self.notify("There is no image model to delete.", severity="warning", markup=False)
            return
        if self.pulling == model.name:
            self.notify(
                f"{visible(model.name)} is downloading: Esc stops it first.",
                severity="warning",
                markup=False,
            )
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.delete_model(model)
            else:
                self.notify(f"Kept {visible(model.name)}.", markup=False)

        self.app.push_screen(
            ConfirmDialog(
                f"Delete {model.name} ({human_bytes(model.size)}) from {model.path}? "
                "This frees its space; using it again downloads it again."
                if model.kind == "hub"
                else f"Delete {model.path} ({human_bytes(model.size)})? It cannot be undone."
            ),
            confirmed,
        )

    @work(thread=True, exclusive=True, group="image-model-delete", exit_on_error=False)
    def delete_model(self, model: ImageModel) -> None:
        try:
            freed = self.hub().remove(model.name, [app_of(self).settings.paths.models])
        except (HubError, OSError) as exc:
            self.app.call_from_thread(
                self.notify, visible(str(exc)), title="Not deleted", severity="error", markup=False
            )
            return
        self.app.call_from_thread(
            self.notify,
            f"Deleted {visible(model.name)}: {human_bytes(freed)} freed.",
            title="Image models",
            markup=False,
        )
        self.app.call_from_thread(self.refresh_models)

    def action_use_model(self) -> None:
        model = self.highlighted()
        if model is not None:
            self.use_model(model.name, remember=False)

    def action_save_default(self) -> None:
        model = self.highlighted()
        if model is not None:
            self.use_model(model.name, remember=True)

    @work(thread=True, exclusive=True, group="image-model-use", exit_on_error=False)
    def use_model(self, name: str, remember: bool) -> None:
        """In a thread: the engine waits for a generation in progress before it switches."""
        if remember:
            app_of(self).state.set(IMAGE_MODEL, name)
        app_of(self).diffusion.use(name)
        note = "the default of every run" if remember else "the image model of this run"
        self.app.call_from_thread(
            self.notify,
            f"{visible(name)} is now {note}; it loads on the next image.",
            title="Image models",
            markup=False,
        )
        self.app.call_from_thread(self.refresh_models)
