"""The Models dialog: Ollama's models listed with their details; pull one by name with
progress per layer (Esc stops it), delete the highlighted one (after asking). Its second
section, "Image models", is the image models on disk (tui/widgets/image_models.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Button,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Select,
    Static,
    TabbedContent,
    TabPane,
)
from textual.widgets.option_list import Option

from engines.chat_types import ChatError, ModelDetails, ModelInfo, OllamaUnavailable
from engines.hosts import model_key, split_key
from engines.units import human_bytes
from tui.screens.base import AppModal, styles
from tui.text import shown, visible
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.footer import AppFooter
from tui.widgets.image_models import ImageModelsPane

if TYPE_CHECKING:
    from textual.timer import Timer

    from engines.ollama_client import ChatEngine
    from engines.progress import PullProgress

REDRAW_EVERY_S = 0.1
"""A pull's bars are redrawn at most this often (Ollama reports many times a second)."""


def list_label(model: ModelInfo) -> Text:
    """``llama3.2:latest  3.2B · 2.0 GB``: the name, then (dim) its size in both senses."""
    bits = [b for b in (model.parameter_size, human_bytes(model.size) if model.size else "") if b]
    return Text.assemble(visible(model.name), ("  " + " · ".join(bits), "dim") if bits else "")


def details_text(details: ModelDetails, info: ModelInfo | None = None, host: str = "") -> Text:
    """A model's details as the dialog shows them; the server's text is shown as written.
    ``host``: the Ollama server that has it, when there are several."""
    text = Text()
    text.append(visible(details.name) + "\n", style="bold")
    context = f"{details.context_length:,} tokens" if details.context_length else ""
    rows = [("server", host)] if host else []
    rows += [
        ("family", details.family),
        ("parameters", details.parameter_size),
        ("quantization", details.quantization),
        ("context length", context),
        ("capabilities", ", ".join(details.capabilities)),
        ("size", human_bytes(info.size) if info and info.size else ""),
    ]
    for label, value in rows:
        text.append(f"{label:<16}", style="dim")
        text.append(visible(value or "-") + "\n")
    for title, body in (
        ("Parameters", details.parameters),
        ("Template", details.template),
        ("License", details.license),
    ):
        if body.strip():
            text.append(f"\n{title}\n", style="bold")
            text.append(visible(body.rstrip()) + "\n")
    text.rstrip()
    return text


class LayerRow(Horizontal):
    """One layer of a pull: its id, a bar, and bytes · rate · ETA."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pull-row")
        self.label = label

    def compose(self) -> ComposeResult:
        yield Label(shown(self.label), classes="pull-name")
        yield ProgressBar(total=None, show_eta=False)
        yield Label("", classes="pull-figures")

    def show(self, total: int, completed: int, figures: str) -> None:
        self.query_one(ProgressBar).update(total=max(total, 1), progress=completed)
        self.query_one(".pull-figures", Label).update(figures)


class PullView(Vertical):
    """A pull as it goes: Ollama's words, the whole download, then a bar per layer."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: dict[str, LayerRow] = {}
        self.model = ""
        self._drawn_at = 0.0
        self._last_key: tuple[str, str] = ("", "")
        self._pending: PullProgress | None = None
        self._pending_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Label("", id="pull-status")
        yield LayerRow("all layers", id="pull-overall")
        yield Vertical(id="pull-layers")

    async def begin(self, model: str) -> None:
        self._cancel_pending()
        self.model = model
        self.rows.clear()
        await self.query_one("#pull-layers", Vertical).remove_children()
        self.query_one("#pull-overall", LayerRow).display = False
        self._status(f"Pulling {model}: asking the registry…")
        self._drawn_at = 0.0
        self.display = True

    async def show(self, p: PullProgress) -> None:
        """Draw ``p``; lines that come faster than the eye wait for the next redraw (the
        latest of them is drawn then, even if no other line comes: a stalled download shows
        where it stalled), but never a new layer, a layer's end, or a new status."""
        now = time.monotonic()
        key = (p.status, p.digest)
        finished = p.total > 0 and p.completed >= p.total
        fresh = p.digest not in self.rows if p.digest else key != self._last_key
        if not (fresh or finished or p.done) and now - self._drawn_at < REDRAW_EVERY_S:
            self._pending = p
            if self._pending_timer is None:
                wait = REDRAW_EVERY_S - (now - self._drawn_at)
                self._pending_timer = self.set_timer(wait, self._draw_pending)
            return
        await self._draw(p)

    async def _draw_pending(self) -> None:
        self._pending_timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            await self._draw(pending)

    async def _draw(self, p: PullProgress) -> None:
        self._cancel_pending()
        self._drawn_at, self._last_key = time.monotonic(), (p.status, p.digest)
        self._status(f"Pulling {self.model}: {p.status}")
        if p.digest:
            row = self.rows.get(p.digest)
            if row is None:
                row = LayerRow(p.layer)
                self.rows[p.digest] = row
                await self.query_one("#pull-layers", Vertical).mount(row)
            row.show(p.total, p.completed, p.figures())
        if p.overall_total:
            overall = self.query_one("#pull-overall", LayerRow)
            overall.display = True
            overall.show(p.overall_total, p.overall_completed, p.overall_figures())

    def _cancel_pending(self) -> None:
        self._pending = None
        if self._pending_timer is not None:
            self._pending_timer.stop()
            self._pending_timer = None

    def finish(self, message: str, *, ok: bool) -> None:
        self._cancel_pending()
        self._status(message)
        self.set_class(not ok, "-failed")

    def _status(self, message: str) -> None:
        self.remove_class("-failed")
        self.query_one("#pull-status", Label).update(Text(visible(message)))


class ModelsDialog(AppModal[str | None]):
    """Ollama's models. Dismissed with the name pulled when opened to pull one
    (``close_when_pulled``), else with None."""

    CSS_PATH = styles("dialogs.tcss", "models.tcss")
    BINDINGS = [
        Binding(
            "escape",
            "close",
            "Close",
            tooltip="Stop the pull, or close the dialog",
            id="models.close",
        ),
        Binding(
            "d,delete",
            "delete_model",
            "Delete",
            tooltip="Delete the highlighted model (asks first)",
            id="models.delete",
        ),
        Binding(
            "p",
            "focus_pull",
            "Pull",
            tooltip="Type the name of a model to pull; Enter starts it",
            id="models.pull",
        ),
        Binding(
            "r", "refresh", "Refresh", tooltip="Read the list of models again", id="models.refresh"
        ),
    ]

    def __init__(
        self,
        pull: str = "",
        *,
        close_when_pulled: bool = False,
        section: Literal["ollama", "image"] = "ollama",
        host: str = "",
    ) -> None:
        super().__init__(classes="dialog")
        self.pull_host = host
        """Several servers: the one a pull goes to (the pull form's choice)."""
        self.section = section
        self.initial_pull = pull
        self.close_when_pulled = close_when_pulled
        self.pulling: str | None = None
        self.models: list[ModelInfo] = []
        self._details: dict[str, ModelDetails] = {}

    def compose(self) -> ComposeResult:
        with (
            Vertical(classes="dialog-box models-box"),
            TabbedContent(initial=f"{self.section}-models", id="models-sections"),
        ):
            with TabPane("Ollama models", id="ollama-models"):
                with Horizontal(id="models-main"):
                    yield OptionList(id="models-list")
                    with VerticalScroll(id="model-details", can_focus=True):
                        yield Static("", id="model-details-text")
                with Horizontal(id="pull-form"):
                    if self.lp.hosts.multi:
                        names = self.lp.hosts.names
                        yield Select(
                            [(f"onto {visible(n)}", n) for n in names],
                            value=self.pull_host if self.pull_host in names else names[0],
                            allow_blank=False,
                            compact=True,
                            id="pull-host",
                            tooltip="The server a pull goes to",
                        )
                    yield Input(placeholder="Model to pull, e.g. llama3.2:1b", id="pull-name")
                    yield Button("Pull", id="pull-button", variant="primary")
                yield PullView(id="pull-view")
                yield Label(
                    "P pull · D delete · R refresh · Esc stops a pull, or closes",
                    classes="dialog-hint",
                )
            with TabPane("Image models", id="image-models"):
                yield ImageModelsPane()
        yield AppFooter()

    def on_mount(self) -> None:
        self.query_one(PullView).display = False
        self.watch(self.lp, "models", self._models_changed)
        self.watch(self.lp, "ollama", lambda _: self._models_changed(self.lp.models), init=False)
        if self.section == "ollama":  # else when its tab is shown: no Ollama error over images
            self.refresh_models()
        if self.initial_pull:
            self.query_one("#pull-name", Input).value = visible(self.initial_pull)
            self.start_pull(self.initial_pull)
        elif self.section == "image":
            self.query_one("#image-models-list", OptionList).focus()
        else:
            self.query_one("#models-list", OptionList).focus()

    @on(TabbedContent.TabActivated, "#models-sections")
    def _section_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "ollama-models" and self.section != "ollama":
            self.section = "ollama"
            self.refresh_models()

    # -- the list and the details ------------------------------------------------------

    def _models_changed(self, models: list[ModelInfo]) -> None:
        self.models = list(models)
        listing = self.query_one("#models-list", OptionList)
        current = self.highlighted()
        listing.clear_options()
        multi = self.lp.hosts.multi
        listing.add_options(
            [
                Option(
                    Text.assemble((visible(m.host), "bold"), " › ", list_label(m))
                    if multi
                    else list_label(m),
                    id=model_key(m.host, m.name) if multi else m.name,
                )
                for m in self.models
            ]
        )
        names = [model_key(m.host, m.name) if multi else m.name for m in self.models]
        if not names:
            status = self.lp.ollama
            if status is None:
                empty = "Asking Ollama for its models…"
            elif not status.online:
                empty = (
                    f"Ollama is unreachable, so its models cannot be listed: "
                    f"{visible(status.error)}\nThe list fills in once it answers "
                    "(R reads it again)."
                )
            else:
                empty = (
                    "No models yet: type a name below (P) and press Enter to pull one.\n"
                    "The library is at https://ollama.com/library"
                )
            self.query_one("#model-details-text", Static).update(Text(empty, style="dim"))
            return
        listing.highlighted = names.index(current) if current in names else 0

    def _highlight(self, name: str, host: str = "") -> None:
        names = [(m.host if host else "", m.name) for m in self.models]
        for candidate in ((host, name), (host, f"{name}:latest")):
            if candidate in names:
                self.query_one("#models-list", OptionList).highlighted = names.index(candidate)
                return

    def highlighted_key(self) -> str | None:
        """The highlighted entry: the model's name, or with several servers its
        :func:`~engines.hosts.model_key`."""
        listing = self.query_one("#models-list", OptionList)
        if listing.highlighted is None or listing.option_count == 0:
            return None
        return listing.get_option_at_index(listing.highlighted).id

    def highlighted(self) -> str | None:
        """The highlighted model's name."""
        key = self.highlighted_key()
        return None if key is None else split_key(key)[1]

    def _engine(self, host: str) -> ChatEngine:
        """The engine of server ``host`` (the first, or only, for none)."""
        found = self.lp.hosts.find(host) if host else None
        return found.engine if found else self.lp.chat

    def _info(self, key: str) -> ModelInfo | None:
        host, name = split_key(key)
        return next(
            (m for m in self.models if m.name == name and (m.host == host or not host)), None
        )

    @on(OptionList.OptionHighlighted, "#models-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self.show_details(event.option.id)

    @work(exclusive=True, group="model-details", exit_on_error=False)
    async def show_details(self, key: str) -> None:
        label = self.query_one("#model-details-text", Static)
        host, name = split_key(key)
        details = self._details.get(key)
        if details is None:
            label.update(Text(f"Reading {visible(name)}…", style="dim"))
            try:
                details = await self._engine(host).show(name)
            except ChatError as exc:
                label.update(Text(visible(str(exc)), style="red"))
                return
            self._details[key] = details
        label.update(details_text(details, self._info(key), host))
        self.query_one("#model-details", VerticalScroll).scroll_home(animate=False)

    @work(exclusive=True, group="models-list", exit_on_error=False)
    async def refresh_models(self) -> None:
        await self._reload()

    async def _reload(self) -> None:
        """Read the list again; the app's list (and the chat's picker with it) follows."""
        try:
            models = await self.lp.refresh_models()
        except ChatError as exc:
            self.notify(str(exc), title="Models not listed", severity="error")
            self.lp.check_ollama_soon()
            return
        self.lp.models = models

    def action_refresh(self) -> None:
        self._details.clear()
        self.refresh_models()

    # -- pulling ----------------------------------------------------------------------------

    def action_focus_pull(self) -> None:
        self.query_one("#pull-name", Input).focus()

    @on(Input.Submitted, "#pull-name")
    @on(Button.Pressed, "#pull-button")
    def _pull_asked(self) -> None:
        self.start_pull(self.query_one("#pull-name", Input).value.strip())

    def start_pull(self, name: str) -> None:
        if not name:
            self.notify("Type the name of a model to pull, e.g. llama3.2:1b.", severity="warning")
            self.action_focus_pull()
            return
        if self.pulling:
            self.notify(
                f"{visible(self.pulling)} is still being pulled: Esc stops it.", severity="warning"
            )
            return
        self.pulling = name
        self.pull(name)

    def pull_target(self) -> str:
        """The server a pull goes to: the pull form's choice (several servers), else none."""
        if not self.lp.hosts.multi:
            return ""
        value = self.query_one("#pull-host", Select).value
        return value if isinstance(value, str) else self.lp.hosts.names[0]

    @work(exclusive=True, group="model-pull", exit_on_error=False)
    async def pull(self, name: str) -> None:
        view = self.query_one(PullView)
        host = self.pull_target()
        await view.begin(f"{name} onto {host}" if host else name)
        self.pulling = name
        try:
            async with contextlib.aclosing(self._engine(host).pull(name)) as progress:
                async for p in progress:
                    await view.show(p)
        except ChatError as exc:
            view.finish(str(exc), ok=False)
            if isinstance(exc, OllamaUnavailable):
                self.lp.check_ollama_soon()
            return
        except asyncio.CancelledError:  # Esc: the stream is closed by now
            view.finish(f"Stopped pulling {name}; pulling it again resumes it.", ok=False)
            raise
        finally:
            self.pulling = None
        view.finish(f"Pulled {name}.", ok=True)
        self._details.pop(model_key(host, name), None)
        await self._reload()
        self._highlight(name, host)
        self.notify(f"Pulled {visible(name)}.", title="Models")
        if self.close_when_pulled:
            self.dismiss(name)

    def action_close(self) -> None:
        if self.pulling:
            self.workers.cancel_group(self, "model-pull")
            return
        self.dismiss(None)

    # -- deleting ---------------------------------------------------------------------------

    def action_delete_model(self) -> None:
        key = self.highlighted_key()
        if key is None:
            self.notify("There is no model to delete.", severity="warning")
            return
        host, name = split_key(key)
        if self.pulling == name:
            self.notify(f"{visible(name)} is being pulled: Esc stops it first.", severity="warning")
            return
        info = self._info(key)
        size = f" ({human_bytes(info.size)})" if info and info.size else ""
        where = host or "Ollama"

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.delete_model(key)

        self.app.push_screen(
            ConfirmDialog(
                f"Delete {name}{size} from {where}? Its files go with it.",
                kept=f"Kept {visible(name)}.",
            ),
            confirmed,
        )

    @work(exclusive=True, group="model-delete", exit_on_error=False)
    async def delete_model(self, key: str) -> None:
        host, name = split_key(key)
        try:
            await self._engine(host).delete(name)
        except ChatError as exc:
            self.notify(str(exc), title="Not deleted", severity="error")
            await self._reload()
            return
        self._details.pop(key, None)
        view = self.query_one(PullView)
        if not self.pulling:  # "Pulled X." is over, and may be untrue now
            view.display = False
        await self._reload()
        self.notify(f"Deleted {visible(name)}{f' from {host}' if host else ''}.", title="Models")
