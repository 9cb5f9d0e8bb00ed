"""The Textual app: three screens switched by keys, and the services they share."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, work
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import Worker, WorkerCancelled, WorkerState
from textual.worker import WorkerFailed as WorkerError

from engines.chat_types import ChatError, ModelInfo, OllamaUnavailable, ServerStatus
from engines.config import Settings
from engines.conversations import (
    ConversationService,
    Reply,
    ReplyEvent,
    ReplyFigures,
    ReplyFinished,
    ReplyStarted,
    ReplyText,
    ReplyThinking,
)
from engines.hosts import HostRegistry, HostState
from engines.state import State
from engines.store import Store, StoreError
from tui import compositor, keys
from tui.heap import freeze_start_up
from tui.no_color import use_greys
from tui.screens.base import WorkerFailed
from tui.screens.chat import ChatScreen
from tui.sixteen import use_sixteen
from tui.stylesheet import CachedStylesheet
from tui.text import visible
from tui.widgets.conversation import warm_up_markdown

if TYPE_CHECKING:
    from rich.console import RenderableType
    from textual.driver import Driver

    from engines.diffusion import DiffusionEngine, GeneratedImage
    from engines.image_tool import ImageTool
    from engines.queue import ImageQueue
    from tui.widgets.picture import Renderer

log = logging.getLogger(__name__)

QUIET_AFTER_REPLY_S = 2.0
"""The start-up's heap freezes (tui/heap.py) wait this long after a reply ends: due while
it streamed, the first try after its end came 0.12-0.18 s after the server's last token,
a 36-56 ms full collection as the last words are drawn."""
FIRST_WORDS_S = 0.3
"""The Markdown warm-up gives way for this long after a reply is sent (its request and
first words), between two languages: a reply sent while it loads (a prompt typed and sent
within a second of start, as ``bench/stream.py`` does) takes turns with it. The footer's
keys wait as long (see ``AppFooter``)."""
QUICK_SWITCH_S = 0.001
"""Python's switch interval from a reply's send to its first words (see ``start_reply``)."""
WARM_UP_AFTER_S = 1.0
"""After start, while the app is idle: when what replies draw with is loaded."""


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


@dataclass(frozen=True)
class Notice:
    """A toast the app showed, as shown."""

    title: str
    message: str
    severity: SeverityLevel


NOTICES_KEPT = 50
"""How many of the latest notices ``LlmPessoalApp.notices`` keeps."""


@dataclass
class LiveFigures:
    """The app's own work as it happens, for the Monitor: None when idle."""

    reply_tokens_per_s: float | None = None
    image_steps_per_s: float | None = None
    image_progress: str = ""
    image_cancel: threading.Event | None = None
    """Set while an image is being generated: setting it stops the generation."""


class LlmPessoalApp(App[int]):
    """llm-pessoal: chat, images and the machine, in one terminal."""

    TITLE = "llm-pessoal"
    CSS_PATH = ["app.tcss", "chat.tcss"]
    """What all screens share, and the Chat screen's own (its CSS_PATH too): that screen is
    composed with the app (DEFAULT_MODE), and its file read here spares Textual one full
    re-parse of every style before the first frame. The other screens' and the dialogs'
    files are read when they are first shown."""
    DEFAULT_MODE = "chat"
    """The screen composed with the app, so the first frame is the Chat screen itself (not
    a blank default screen switched away from); another start screen is switched to."""
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "chat": ChatScreen,
        "image": lambda: _screen("tui.screens.image", "ImageScreen"),
        "monitor": lambda: _screen("tui.screens.monitor", "MonitorScreen"),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", tooltip="Show every key", id="app.help"),
        Binding(
            "f2", "switch_mode('chat')", "Chat", tooltip="Go to the Chat screen", id="app.chat"
        ),
        Binding(
            "f3", "switch_mode('image')", "Image", tooltip="Go to the Image screen", id="app.image"
        ),
        Binding(
            "f4",
            "switch_mode('monitor')",
            "Monitor",
            tooltip="Go to the Monitor screen",
            id="app.monitor",
        ),
        Binding(
            "f6",
            "search_all",
            "Search all",
            priority=True,  # before the text areas' own F6 (select the line)
            show=False,
            tooltip="Search every conversation, message, image and preset",
            id="app.search",
        ),
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False, tooltip="Quit", id="app.quit"),
        Binding(
            "ctrl+p",
            "command_palette",
            "Palette",
            priority=True,
            show=False,
            tooltip="Every action by name",
            id="app.palette",
        ),
    ]

    freeze_heap = False
    """Freeze what start-up made out of the cycle collector's sight (tui/heap.py): set by
    ``main()`` for the one app of a process; not in tests, which run many apps in one."""

    ollama: reactive[ServerStatus | None] = reactive(None, init=False)
    models: reactive[list[ModelInfo]] = reactive(list, init=False, always_update=True)
    """Every reachable server's models, each with its server's name (``ModelInfo.host``)."""
    host_states: reactive[tuple[HostState, ...]] = reactive(tuple, init=False)
    """Each Ollama server of ``[ollama] hosts`` as last checked, in the list's order."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        start_screen: str | None = None,
        warnings: Iterable[str] = (),
        image_renderer: Renderer = "halfblock",
        typed_at_start: str = "",
    ) -> None:
        super().__init__()
        use_greys(self._filters)  # NO_COLOR: greys as light as the colours (tui/no_color.py)
        self._sixteen = use_sixteen(self._filters, self.console.color_system)  # tui/sixteen.py
        compositor.install()  # a frame renders only the widgets it changes (tui/compositor.py)
        self.typed_at_start = typed_at_start
        """Keys read with the terminal's answers before the app ran (tui/graphics.py)."""
        self._warmed_up = False
        """Whether the Markdown warm-up has started (on the first key or click)."""
        self._held_frames: list[tuple[Screen[Any], RenderableType]] = []
        """Frames made during a batch update, written as it ends (``_display``)."""
        self._reply_sent_at = -FIRST_WORDS_S  # time.monotonic() of the last reply started
        self._switch_interval: float | None = None  # Python's, while QUICK_SWITCH_S holds
        self._reply_finished_at = -QUIET_AFTER_REPLY_S  # time.monotonic(): the last ended
        self.notices: deque[Notice] = deque(maxlen=NOTICES_KEPT)
        """The latest toasts, newest last, as they were shown."""
        self.settings = settings
        self.store = store
        self.hosts = HostRegistry.from_settings(settings)
        """Every Ollama server, each with its engine and state (engines/hosts.py)."""
        self.chat = self.hosts.first.engine
        """The first (or only) server's engine."""
        self.hosts.subscribe(self._host_changed)
        self.conversations = ConversationService(
            store,
            self.chat,
            save_interval=settings.chat.save_interval,
            max_parallel=settings.chat.max_parallel,
            hosts=self.hosts if self.hosts.multi else None,
            tools=self._image_tool(settings),
        )
        self.conversations.subscribe(self._reply_event)
        self.unseen: set[int] = set()
        """Conversations with a reply that finished while another one was on screen."""
        self.start_screen = start_screen or settings.ui.screen
        self.image_renderer: Renderer = image_renderer
        self._diffusion: DiffusionEngine | None = None
        self._image_queue: ImageQueue | None = None
        self.live = LiveFigures()
        self.startup_warnings = list(warnings)
        self.keymap = dict(settings.keys)
        if self.keymap:
            self.set_keymap(self.keymap)
        self.state = State(settings.paths.database.parent / "state.json")
        theme = self.state.get("theme") or settings.ui.theme
        if theme in self.available_themes:
            self.theme = theme
        CachedStylesheet.install(self)  # each CSS source parsed once (tui/stylesheet.py)

    def _image_tool(self, settings: Settings) -> ImageTool:
        """The image engine as the models' ``generate_image`` tool (issue 14)."""
        from engines.image_tool import ImageTool
        from tui.screens.chat_images import ask_to_queue

        return ImageTool(
            lambda: self.image_queue,
            settings.diffusion,
            lambda: self.diffusion.model,
            self.run_image_queue,
            limits=lambda: self.diffusion.limits,
            approve=(lambda r, t: ask_to_queue(self, r, t))
            if settings.chat.image_tool_ask
            else None,
            enabled=settings.chat.image_tool,
        )

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver, writing only what changed on screen (``tui/output.py``)."""
        from tui.output import with_output_filter

        return with_output_filter(super().get_driver_class())

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every toast, from any screen or widget, goes through here. Its text often holds
        outside text (a model name, a server's error, a file name): it is shown, never
        interpreted, neither as markup nor by the terminal (DESIGN decision 9)."""
        notice = Notice(visible(title), visible(message), severity)
        self.notices.append(notice)
        super().notify(
            notice.message, title=notice.title, severity=severity, timeout=timeout, markup=False
        )

    def on_load(self) -> None:
        """Keys typed while the terminal was asked what it draws, before the driver read
        any: queued first, as the terminal would have sent them, so none is lost."""
        if not self.typed_at_start:
            return
        from textual._xterm_parser import XTermParser

        parser = XTermParser()
        try:
            events_typed = [*parser.feed(self.typed_at_start), *parser.feed("")]
        except Exception as exc:  # a key lost is better than no app
            log.warning("keys typed at start not replayed: %s", exc)
            events_typed = []
        for event in events_typed:
            event.set_sender(self)
            self.post_message(event)
        self.typed_at_start = ""

    def _display(self, screen: Screen[Any], renderable: RenderableType | None) -> None:
        """Textual's, except that a frame made during a batch update waits for its end.

        Textual 8 can make a frame while a batch update is open (the whole start is
        one): it takes the screen's changes for it, then drops it unwritten. The first
        frame the terminal got was only what changed after (the conversation, without
        the header, the list or the prompt), made whole 25-60 ms later by whatever
        redrew next. Held, the frames are written in order as the batch ends."""
        if renderable is not None and self._batch_count and not self.is_headless:
            self._held_frames.append((screen, renderable))
            return
        super()._display(screen, renderable)

    def _end_batch(self) -> None:
        super()._end_batch()
        if self._batch_count or not self._held_frames:
            return
        frames, self._held_frames = self._held_frames, []
        for screen, frame in frames:
            if screen is self.screen:
                super()._display(screen, frame)

    async def on_event(self, event: events.Event) -> None:
        """A paste is outside text too: its escapes and controls are made visible before any
        widget holds it, so a pasted OSC 52 or cursor move never reaches the terminal
        (DESIGN decision 9). Line ends are kept as new lines. The first key, click or paste
        also starts loading what the first reply draws with."""
        if isinstance(event, events.Paste) and not event.is_forwarded:
            text = event.text.replace("\r\n", "\n").replace("\r", "\n")
            if visible(text) != event.text:
                event.stop()
                clean = events.Paste(visible(text))
                clean.set_sender(self)
                event = clean
        if not self._warmed_up and isinstance(event, events.Key | events.MouseDown | events.Paste):
            self.warm_up()  # the user is here: loaded while they type, if not already
        await super().on_event(event)

    def warm_up(self) -> None:
        """Load what the first reply draws with (Markdown, the common highlighters) in a
        thread, once: a second after start, or at the first key if that comes first. Loaded
        at the first key alone, it took turns with the first reply's drawing (Enter to the
        first words 111 ms instead of 52); it costs about 3 MiB."""
        if self._warmed_up:
            return
        self._warmed_up = True
        self.run_worker(
            lambda: warm_up_markdown(self._giving_way),
            thread=True,
            group="markdown-warm-up",
            exit_on_error=False,
        )
        self.call_after_refresh(self.preload_styles)

    def preload_styles(self) -> None:
        """Add the CSS of the widgets a first reply mounts, which nothing on screen has
        used yet (a reply's Markdown, the turn's label), to the stylesheet now, while the
        app is idle: added by their first mount, they were parsed with every source again,
        and the rules mapped anew, between Enter and the first words (some 4 ms)."""
        from textual.widgets import Label

        from tui.widgets.markdown_text import MarkdownText

        stylesheet = self.stylesheet
        for widget in (Label(), MarkdownText()):
            for read_from, css, tie_breaker, scope in widget._get_default_css():
                stylesheet.add_source(
                    css,
                    read_from=read_from,
                    is_default_css=True,
                    tie_breaker=tie_breaker,
                    scope=scope,
                )
        stylesheet.rules_map  # noqa: B018 (parsed and mapped now)

    def _replying(self) -> bool:
        """A reply streams, or ended within ``QUIET_AFTER_REPLY_S``: a full collection now
        would hold up its drawing (tui/heap.py)."""
        if self.conversations.busy:
            return True
        return time.monotonic() - self._reply_finished_at < QUIET_AFTER_REPLY_S

    def _giving_way(self) -> bool:
        """Whether a reply has just been sent (read from the warm-up's thread)."""
        return self.first_words_due() > 0

    def first_words_due(self) -> float:
        """The seconds left of ``FIRST_WORDS_S`` after a reply was sent (0: none is due):
        work that can wait (the footer's keys, the Markdown warm-up) waits that long."""
        return max(0.0, self._reply_sent_at + FIRST_WORDS_S - time.monotonic())

    def on_mount(self) -> None:
        if self._sixteen is not None and self.is_headless:
            self._sixteen.enabled = False  # a headless app's screenshots are true colour
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.set_timer(WARM_UP_AFTER_S, self.warm_up)
        if self.start_screen != self.current_mode:
            self.switch_mode(self.start_screen)
        for warning in self.startup_warnings:
            self.notify(warning, severity="error", timeout=30)
        # once the first frame is drawn: its thread would take turns with the drawing
        self.call_after_refresh(self.watch_ollama_status)
        self.call_after_refresh(gc.enable)  # held by the start (tui/cli.py run_tui)
        if self.freeze_heap and not self.is_headless:  # tui/heap.py
            freeze_start_up(self, self._import_gallery, self._replying)
        if self.settings.diffusion.preload:
            self.preload_pipeline()

    async def _import_gallery(self) -> None:
        """The gallery's code, imported in a thread while the app is idle: its first
        opening waited a twentieth of a second on it."""
        try:
            await asyncio.to_thread(importlib.import_module, "tui.screens.gallery")
        except Exception as exc:  # it fails again, and says so, when the gallery opens
            log.warning("the gallery's code not imported ahead: %s", exc)

    # -- the diffusion pipeline ------------------------------------------------------

    @property
    def diffusion(self) -> DiffusionEngine:
        """The Stable Diffusion engine (cheap to make: torch loads with the model)."""
        if self._diffusion is None:
            from engines.diffusion import DiffusionEngine
            from engines.hub import default_model
            from engines.state import IMAGE_MODEL

            model = default_model(self.settings.diffusion.model, self.state.get(IMAGE_MODEL))
            self._diffusion = DiffusionEngine(
                replace(self.settings.diffusion, model=model),
                self.settings.paths.outputs,
                self.settings.paths.cache,
                make_room=self._make_room,
                on_image=self._index_image,
                loras=self.settings.paths.loras,
                embeddings=self.settings.paths.embeddings,
            )
        return self._diffusion

    # -- the image queue (engines/queue.py): one worker runs its jobs one at a time ------

    @property
    def image_queue(self) -> ImageQueue:
        """The persistent image queue; jobs an earlier process left are recovered (paused,
        or stopped if they ran) the first time it is used."""
        if self._image_queue is None:
            from engines.queue import ImageQueue

            self._image_queue = ImageQueue(self.store)
            try:
                self._image_queue.recover()
            except StoreError as exc:
                log.error("image queue not recovered: %s", exc)
        return self._image_queue

    def run_image_queue(self) -> None:
        """Make sure a worker runs the queued jobs (one worker, whatever calls this)."""
        if self.image_queue.want_worker():
            self._run_image_queue()

    @work(thread=True, group="image-queue", exit_on_error=False)
    def _run_image_queue(self) -> None:
        self.image_queue.run(self.diffusion)

    def _index_image(self, image: GeneratedImage) -> None:
        try:
            self.store.add_image(image.path, image.parameters, image.seconds)
        except StoreError as exc:
            log.error("image not indexed: %s", exc)

    def _make_room(self) -> list[str]:
        """From the diffusion thread: ask Ollama to unload its models."""

        async def unload_all() -> list[str]:
            try:
                names = []
                for engine in self.hosts.local_engines():  # those sharing this GPU
                    loaded = [m.name for m in await engine.loaded()]
                    for name in loaded:
                        await engine.unload(name)
                    names += loaded
            except ChatError as exc:
                log.warning("could not unload Ollama's models: %s", exc)
                return []
            return names

        result: list[str] = self.call_from_thread(unload_all)
        return result

    @work(thread=True, exclusive=True, group="pipeline-preload", exit_on_error=False)
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
        """Check every server now and then, each in a worker of its own (a server that
        hangs delays no other): faster while one is down, so the app recovers on its own
        once it comes back. Models and states arrive as each server answers."""
        # The ollama client (httpx, pydantic) imports in a thread, off the event loop.
        await asyncio.to_thread(_import_client)
        for host in self.hosts.hosts:
            self.run_worker(
                self.hosts.watch(host),
                name=f"watch {host.name}",
                group=f"ollama-status-{host.name}",
                exclusive=True,
                exit_on_error=False,
            )

    def _host_changed(self, state: HostState) -> None:
        """A server's state changed (on the event loop): the app's view of them follows."""
        self.host_states = self.hosts.states
        summary = self.hosts.summary()
        if summary is not None and self.ollama != summary:
            self.ollama = summary
        models = self.hosts.catalog()
        if models != self.models:
            self.models = models

    def check_ollama_soon(self, host: str | None = None) -> None:
        """Re-check a server (by default every one) now, after a failed request, say."""
        self.hosts.wake(host)

    async def refresh_models(self) -> list[ModelInfo]:
        """Check every server again now (each within its timeout) and return the list of
        their models; raises when none answers (the first server's error, with one)."""
        states = await self.hosts.check_all()
        if not any(s.online for s in states):
            summary = self.hosts.summary()
            raise OllamaUnavailable(summary.error if summary else "no Ollama server answers")
        return self.hosts.catalog()

    # -- app-wide actions ----------------------------------------------------------

    # -- chat replies: the service owns them; each runs in a worker of its conversation ---

    @staticmethod
    def reply_group(conversation_id: int) -> str:
        return f"reply-{conversation_id}"

    def start_reply(self, reply: Reply) -> None:
        """Run a prepared reply in a worker of its own: cancelling it stops the reply."""
        self._reply_sent_at = time.monotonic()
        self._quick_switch()
        self.run_worker(
            self.conversations.run(reply),
            name=f"reply {reply.reply_id}",
            group=self.reply_group(reply.conversation_id),
            exit_on_error=False,
        )

    def _quick_switch(self) -> None:
        """Until the reply's first words come (or ``FIRST_WORDS_S``), a thread waiting for
        the interpreter gets it from the event loop within ``QUICK_SWITCH_S``, not
        Python's 5 ms. The request is made in the reply's thread while the loop mounts
        and lays out the new turns; it takes a dozen turns of the GIL, and with 5 ms
        each it went out 30-40 ms after Enter instead of 8-14. Kept on after the first
        words, the reader of a reply that comes at full speed took the GIL from the
        loop's frames that often, and the last words showed 20 ms later."""
        if self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(QUICK_SWITCH_S)
        self.set_timer(FIRST_WORDS_S, self._usual_switch)

    def _usual_switch(self, *, words: bool = False) -> None:
        """Python's switch interval again: the first words are in (``words``), or none
        came within ``FIRST_WORDS_S`` of the last send (a model loading: its request is
        long out)."""
        if self._switch_interval is not None and (words or not self.first_words_due()):
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

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
            with contextlib.suppress(WorkerCancelled, WorkerError):
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
        if self._switch_interval is not None and isinstance(
            event, (ReplyText, ReplyThinking, ReplyFinished)
        ):
            self._usual_switch(words=True)
        if isinstance(event, ReplyFigures):
            self.live.reply_tokens_per_s = event.tokens_per_s
        elif isinstance(event, ReplyStarted):
            self.unseen.discard(event.conversation_id)
        elif isinstance(event, ReplyFinished):
            self._reply_finished_at = time.monotonic()
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
                await self._quit_keeping_replies()

        from tui.widgets.dialogs import ConfirmDialog

        n = len(busy)
        await self.push_screen(
            ConfirmDialog(
                f"{n} repl{'ies are' if n > 1 else 'y is'} still being written. Quit anyway? "
                f"{'Each is' if n > 1 else 'It is'} kept, marked interrupted.",
                yes="Quit",
            ),
            answered,
        )

    async def hung_up(self) -> None:
        """The terminal is gone (``tui.output.watch_hangup``): nobody can answer the quit's
        question, so it is taken as yes."""
        await self._quit_keeping_replies()

    async def _quit_keeping_replies(self) -> None:
        """Each reply streaming kept, marked interrupted; then the app ends."""
        for conversation_id in list(self.conversations.busy):
            await self.stop_reply(conversation_id)
        self.exit()

    def action_search_all(self) -> None:
        """One search over everything (tui/widgets/search.py); a result opens where it lives."""
        from tui.widgets.search import SearchDialog, open_hit

        if isinstance(self.screen, SearchDialog):
            self.screen.query_one("#search-text").focus()
            return

        def chosen(hit: Any) -> None:
            if hit is not None:
                self.run_worker(
                    open_hit(self, hit), name="open a search result", exit_on_error=False
                )

        self.push_screen(SearchDialog(), chosen)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(self.help_groups()))

    def key_display(self, binding: Binding) -> str:
        """The keys of ``binding`` as the footer shows them, ``[keys]`` applied."""
        shown = [
            # a binding's own key_display names its first key only (^j, not shift+enter)
            self.get_key_display(Binding(key, binding.action, key_display=display))
            for key, display in zip(
                keys.keys_of(binding, self.keymap),
                [binding.key_display] + [None] * 99,
                strict=False,
            )
        ]
        return ", ".join(shown)

    def _rows(self, bindings: Iterable[Binding]) -> list[tuple[str, str]]:
        return [(self.key_display(b), b.tooltip or b.description) for b in bindings]

    def help_groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The help's groups of (keys, what they do): the keys of the screen (or dialog)
        it opens over first, then everywhere, then the other screens and dialogs; all
        read from the bindings themselves."""
        screen = self.screen
        groups: list[tuple[str, list[tuple[str, str]]]] = []
        here: set[str] = {"Everywhere"}
        for node in keys.nodes_of(screen):
            place = keys.place_of(node)
            if place not in here:
                here.add(place)
                groups.append((f"{place} (here)", self._rows(keys.own_bindings(node))))
        everywhere = self._rows(keys.declared(type(self)))
        groups.append(("Everywhere", everywhere))
        for source in keys.SOURCES:
            if source.place in here:
                continue
            here.add(source.place)
            cls = keys.source_class(source)
            rows = self._rows(b for b in keys.declared(cls) if b.description)
            if rows:
                groups.append((source.place, rows))
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

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's own commands, then one for every binding of the app, of the screen
        (or dialog) the palette opened over, and of the widgets in it."""
        yield from super().get_system_commands(screen)
        for node in (self, *keys.nodes_of(screen)):
            place = keys.place_of(node)
            for binding in keys.own_bindings(node):
                if binding.action in ("command_palette", "quit"):
                    continue  # the palette itself; Textual's own "Quit" is listed above
                action_name = binding.action.split("(", 1)[0].rsplit(".", 1)[-1]
                if node.check_action(action_name, ()) is False:
                    continue  # not possible now (no reply to cancel, say)
                yield SystemCommand(
                    f"{place}: {binding.description}",
                    f"{binding.tooltip or binding.description} ({self.key_display(binding)})",
                    lambda node=node, action=binding.action: node.run_action(action),
                )
        for conversation_id, reply in self.conversations.busy.items():
            yield SystemCommand(
                f"Stop the reply in “{visible(reply.conversation.title)}”",
                "Stop a reply being written (or waiting); what it wrote is kept",
                lambda cid=conversation_id: self.run_worker(self.stop_reply(cid)),
            )

    # -- failures nobody caught --------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The app's own workers."""
        if event.state is WorkerState.ERROR:
            self._worker_failed(event.worker)

    def on_worker_failed(self, event: WorkerFailed) -> None:
        """The workers of screens and dialogs (``tui.screens.base``)."""
        self._worker_failed(event.worker)

    def _worker_failed(self, worker: Worker[Any]) -> None:
        error = worker.error
        if error is None:
            return
        log.error(
            "unexpected error in %s: %s: %s",
            worker.name,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__),
            extra={"worker": worker.name, "group": worker.group},
        )
        where = self.settings.paths.logs / "app.jsonl"
        first = visible(str(error).splitlines()[0] if str(error) else "")
        self.notify(
            f"{worker.name} failed ({type(error).__name__}: {first}); details in {where}",
            title="Unexpected error",
            severity="error",
            timeout=15,
            markup=False,
        )

    async def on_unmount(self) -> None:
        self._usual_switch(words=True)
        if self._image_queue is not None:  # the job being made waits for the next start
            self._image_queue.pause_running()
        await self.hosts.aclose()


OPEN_TIMEOUT_S = 0.25
"""How long the start waits for a database another program holds locked (a write of
another llm-pessoal takes milliseconds) before it goes on with a throw-away one."""


def open_store(settings: Settings) -> tuple[Store, list[str]]:
    """The database, or a throw-away one with a warning saying why."""
    try:
        return Store.open(settings.paths.database, open_timeout_s=OPEN_TIMEOUT_S), []
    except StoreError as exc:
        log.error("database unusable: %s", exc)
        return Store.memory(), [f"{exc}. Conversations will not be saved this session."]
