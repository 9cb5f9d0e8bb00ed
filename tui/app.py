"""The Textual app: three screens switched by keys, and the services they share."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import WorkerCancelled, WorkerFailed

from engines.chat_types import ChatError, ModelInfo, ServerStatus
from engines.config import Settings
from engines.conversations import (
    ConversationService,
    Reply,
    ReplyEvent,
    ReplyFigures,
    ReplyFinished,
    ReplyStarted,
)
from engines.ollama_client import ChatEngine
from engines.state import State
from engines.store import Store, StoreError
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen
from tui.text import visible
from tui.widgets.conversation import ConversationView
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.prompt import PromptInput
from tui.widgets.sidebar import ConversationList

if TYPE_CHECKING:
    from engines.diffusion import DiffusionEngine, GeneratedImage
    from tui.widgets.picture import Renderer

log = logging.getLogger(__name__)

ONLINE_RECHECK_S = 15.0


def _import_client() -> None:
    """The Ollama client and the async HTTP machinery its first request pulls in,
    imported in a thread so the event loop never waits on them."""
    for module in ("ollama", "httpcore._async.connection_pool", "anyio._backends._asyncio"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _class(module: str, name: str) -> type:
    """A class from a module imported on first use (the Image and Monitor screens, and
    what they bring, are not needed for the first frame)."""
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def _screen(module: str, name: str) -> Screen[None]:
    screen: Screen[None] = _class(module, name)()
    return screen


@dataclass
class LiveFigures:
    """The app's own work as it happens, for the Monitor: None when idle."""

    reply_tokens_per_s: float | None = None
    image_steps_per_s: float | None = None
    image_progress: str = ""


class LlmPessoalApp(App[int]):
    """llm-pessoal: chat, images and the machine, in one terminal."""

    TITLE = "llm-pessoal"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, str | object]] = {  # type: ignore[assignment]
        "chat": ChatScreen,
        "image": lambda: _screen("tui.screens.image", "ImageScreen"),
        "monitor": lambda: _screen("tui.screens.monitor", "MonitorScreen"),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", id="app.help"),
        Binding("f2", "switch_mode('chat')", "Chat", id="app.chat"),
        Binding("f3", "switch_mode('image')", "Image", id="app.image"),
        Binding("f4", "switch_mode('monitor')", "Monitor", id="app.monitor"),
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False, id="app.quit"),
    ]

    ollama: reactive[ServerStatus | None] = reactive(None, init=False)
    models: reactive[list[ModelInfo]] = reactive(list, init=False, always_update=True)

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        start_screen: str | None = None,
        warnings: Iterable[str] = (),
        image_renderer: Renderer = "halfblock",
    ) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.chat = ChatEngine(
            settings.ollama.host, settings.ollama.timeout, settings.ollama.keep_alive
        )
        self.conversations = ConversationService(
            store,
            self.chat,
            save_interval=settings.chat.save_interval,
            max_parallel=settings.chat.max_parallel,
        )
        self.conversations.subscribe(self._reply_event)
        self.unseen: set[int] = set()
        """Conversations with a reply that finished while another one was on screen."""
        self.start_screen = start_screen or settings.ui.screen
        self.image_renderer: Renderer = image_renderer
        self._diffusion: DiffusionEngine | None = None
        self.live = LiveFigures()
        self.startup_warnings = list(warnings)
        self._recheck = asyncio.Event()
        self.keymap = dict(settings.keys)
        if self.keymap:
            self.set_keymap(self.keymap)
        self.state = State(settings.paths.database.parent / "state.json")
        theme = self.state.get("theme") or settings.ui.theme
        if theme in self.available_themes:
            self.theme = theme

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.switch_mode(self.start_screen)
        for warning in self.startup_warnings:
            self.notify(warning, severity="error", timeout=30)
        self.watch_ollama_status()
        if self.settings.diffusion.preload:
            self.preload_pipeline()

    # -- the diffusion pipeline ------------------------------------------------------

    @property
    def diffusion(self) -> DiffusionEngine:
        """The Stable Diffusion engine (cheap to make: torch loads with the model)."""
        if self._diffusion is None:
            from engines.diffusion import DiffusionEngine

            self._diffusion = DiffusionEngine(
                self.settings.diffusion,
                self.settings.paths.outputs,
                self.settings.paths.cache,
                make_room=self._make_room,
                on_image=self._index_image,
            )
        return self._diffusion

    def _index_image(self, image: GeneratedImage) -> None:
        try:
            self.store.add_image(image.path, image.parameters, image.seconds)
        except StoreError as exc:
            log.error("image not indexed: %s", exc)

    def _make_room(self) -> list[str]:
        """From the diffusion thread: ask Ollama to unload its models."""

        async def unload_all() -> list[str]:
            try:
                names = [m.name for m in await self.chat.loaded()]
                for name in names:
                    await self.chat.unload(name)
            except ChatError as exc:
                log.warning("could not unload Ollama's models: %s", exc)
                return []
            return names

        result: list[str] = self.call_from_thread(unload_all)
        return result

    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
    def preload_pipeline(self) -> None:
        from engines.diffusion import DiffusionError

        try:
            self.diffusion.load()
        except DiffusionError as exc:
            self.call_from_thread(
                self.notify, str(exc), title="Model not loaded", severity="error", timeout=15
            )

    def image_finished(self, saved: int, screen: Screen[None]) -> None:
        if self.screen is not screen and saved:
            self.notify(f"{saved} image{'s' if saved > 1 else ''} ready.", title="Image")
            if self.settings.ui.bell:
                self.bell()

    def _remember_theme(self, theme: Theme) -> None:
        """A theme chosen in the palette is the theme of the next start too."""
        self.state.set("theme", theme.name)

    # -- Ollama reachability ---------------------------------------------------

    @work(exclusive=True, group="ollama-status", exit_on_error=False)
    async def watch_ollama_status(self) -> None:
        """Check the server now and then, forever: faster while it is down, so the
        app recovers on its own once it comes back."""
        # The ollama client (httpx, pydantic) imports in a thread, off the event loop.
        await asyncio.to_thread(_import_client)
        while True:
            status = await self.chat.status()
            came_up = status.online and (self.ollama is None or not self.ollama.online)
            if self.ollama != status:
                if status.online != (self.ollama.online if self.ollama else None):
                    log.info(
                        "ollama %s",
                        "online" if status.online else "offline",
                        extra={"host": status.host},
                    )
                self.ollama = status
            if came_up:
                try:
                    self.models = await self.chat.list_models()
                except ChatError as exc:
                    log.warning("listing models failed: %s", exc)
            wait = ONLINE_RECHECK_S if status.online else self.settings.ollama.retry_interval
            self._recheck.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), timeout=wait)

    def check_ollama_soon(self) -> None:
        """Re-check the server now (after a failed request, say)."""
        self._recheck.set()

    # -- app-wide actions ----------------------------------------------------------

    # -- chat replies: the service owns them; each runs in a worker of its conversation ---

    @staticmethod
    def reply_group(conversation_id: int) -> str:
        return f"reply-{conversation_id}"

    def start_reply(self, reply: Reply) -> None:
        """Run a prepared reply in a worker of its own: cancelling it stops the reply."""
        self.run_worker(
            self.conversations.run(reply),
            name=f"reply {reply.reply_id}",
            group=self.reply_group(reply.conversation_id),
            exit_on_error=False,
        )

    async def stop_reply(self, conversation_id: int) -> bool:
        """Stop the reply of a conversation and wait until it is kept (interrupted);
        False when none was running."""
        reply = self.conversations.reply_in(conversation_id)
        if reply is None:
            return False
        group = self.reply_group(conversation_id)
        workers = [w for w in self.workers if w.group == group]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()
        # a worker cancelled before its first step never ran the reply: keep it anyway
        self.conversations.abandon(reply)
        return True

    def visible_conversation(self) -> int | None:
        """The conversation on screen now, if the Chat screen is shown."""
        try:
            stack = self.screen_stack  # the Chat screen, perhaps under a dialog
        except (KeyError, ScreenStackError):  # closing down
            return None
        chat = next((s for s in stack if isinstance(s, ChatScreen)), None)
        return chat.conversation.id if chat and chat.conversation else None

    def _reply_event(self, event: ReplyEvent) -> None:
        """Every reply's events (on the event loop): the figures for the Monitor, and a
        notice when a reply finishes out of sight."""
        if isinstance(event, ReplyFigures):
            self.live.reply_tokens_per_s = event.tokens_per_s
        elif isinstance(event, ReplyStarted):
            self.unseen.discard(event.conversation_id)
        elif isinstance(event, ReplyFinished):
            if not self.conversations.busy.keys() - {event.conversation_id}:
                self.live.reply_tokens_per_s = None
            if event.error:
                self.check_ollama_soon()
            if self.return_code is None and self.visible_conversation() != event.conversation_id:
                self.unseen.add(event.conversation_id)
                what = {"done": "Reply ready", "interrupted": "Reply interrupted"}.get(
                    event.status, "Reply failed"
                )
                self.notify(
                    f"{what} in “{visible(event.title)}”.",
                    title="Chat",
                    severity="information" if event.status == "done" else "warning",
                )
                if self.settings.ui.bell:
                    self.bell()

    async def action_quit(self) -> None:
        """Quit; with replies streaming, ask first, then keep each one, interrupted."""
        busy = self.conversations.busy
        if not busy:
            self.exit()
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                for conversation_id in list(self.conversations.busy):
                    await self.stop_reply(conversation_id)
                self.exit()

        n = len(busy)
        await self.push_screen(
            ConfirmDialog(
                f"{n} repl{'ies are' if n > 1 else 'y is'} still being written. Quit anyway? "
                f"{'Each is' if n > 1 else 'It is'} kept, marked interrupted.",
                yes="Quit",
            ),
            answered,
        )

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(self.help_groups()))

    def help_groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        groups: list[tuple[str, list[tuple[str, str]]]] = []
        sources: list[tuple[str, object]] = [
            ("Everywhere", self),
            ("Chat", ChatScreen),
            ("Prompt", PromptInput),
            ("Conversation list (Ctrl+B, Ctrl+F)", ConversationList),
            (
                "Earlier prompts (Ctrl+R in the prompt)",
                _class("tui.widgets.history", "HistoryDialog"),
            ),
            ("Models (F5 on the Chat screen)", _class("tui.screens.models", "ModelsDialog")),
            ("Image", _class("tui.screens.image", "ImageScreen")),
            ("Gallery (Ctrl+B on the Image screen)", _class("tui.widgets.gallery", "Gallery")),
            ("Monitor", _class("tui.screens.monitor", "MonitorScreen")),
            (
                "Loaded models (M on the Monitor screen)",
                _class("tui.screens.monitor", "LoadedModels"),
            ),
        ]
        for title, source in sources:
            rows = []
            for binding in getattr(source, "BINDINGS", []):
                if not isinstance(binding, Binding) or not binding.description:
                    continue
                key_list = self.keymap.get(binding.id or "", binding.key)
                keys = ", ".join(
                    self.get_key_display(Binding(key, binding.action))
                    for key in key_list.split(",")
                )
                rows.append((keys, binding.tooltip or binding.description))
            groups.append((title, rows))
        palette = self.get_key_display(Binding(self.COMMAND_PALETTE_BINDING, "command_palette"))
        groups[0][1].append((palette, "Command palette: every action by name"))
        groups.append(
            (
                "Conversation",
                [
                    ("↑ ↓ PgUp PgDn", "Scroll the conversation (when it has the focus)"),
                    ("tab, shift+tab", "Move between the parts of the screen"),
                ],
            )
        )
        return groups

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Chat", "Go to the Chat screen (F2)", lambda: self.switch_mode("chat"))
        yield SystemCommand(
            "Image", "Go to the Image screen (F3)", lambda: self.switch_mode("image")
        )
        yield SystemCommand(
            "Monitor", "Go to the Monitor screen (F4)", lambda: self.switch_mode("monitor")
        )
        yield SystemCommand("Help", "Show every key (F1)", self.action_help)
        if isinstance(screen, ChatScreen):
            for binding in ChatScreen.BINDINGS:
                assert isinstance(binding, Binding)
                if binding.action == "cancel_reply":
                    continue
                first = self.keymap.get(binding.id or "", binding.key).split(",")[0]
                key = self.get_key_display(Binding(first, binding.action))
                yield SystemCommand(
                    f"Chat: {binding.tooltip or binding.description}",
                    f"{binding.description} ({key})",
                    lambda action=binding.action: screen.run_action(action),
                )
        for conversation_id, reply in self.conversations.busy.items():
            yield SystemCommand(
                f"Stop the reply in “{visible(reply.conversation.title)}”",
                "Stop a reply being written (or waiting); what it wrote is kept",
                lambda cid=conversation_id: self.run_worker(self.stop_reply(cid)),
            )

    async def on_unmount(self) -> None:
        await self.chat.aclose()


def open_store(settings: Settings) -> tuple[Store, list[str]]:
    """The database, or a throw-away one with a warning saying why."""
    try:
        return Store.open(settings.paths.database), []
    except StoreError as exc:
        log.error("database unusable: %s", exc)
        return Store.memory(), [f"{exc}. Conversations will not be saved this session."]


__all__ = ["ConversationView", "LlmPessoalApp", "open_store"]
