"""What the Chat screen adds for issue 11, kept out of ``chat.py``: attachments (images
for vision models, text files and ``@path`` words as context), presets, and the context
meter with its warning. :class:`ChatScreen` is a :class:`ChatExtras`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.widgets import TextArea

from engines.attachments import (
    CHARS_PER_TOKEN,
    Attachment,
    AttachmentError,
    VisionRequired,
    at_paths,
    estimate_tokens,
    load_image,
    read_text_file,
    require_vision,
    vision_models,
    with_files,
)
from engines.chat_types import ChatError, ChatOptions
from engines.store import Conversation
from tui.screens.base import AppScreen
from tui.text import visible
from tui.widgets.attachments import PendingAttachments
from tui.widgets.context_meter import ContextMeter, ContextUse
from tui.widgets.conversation import ConversationView
from tui.widgets.prompt import PromptInput

if TYPE_CHECKING:
    from engines.ollama_client import ChatEngine
    from engines.presets import Preset

OLLAMA_DEFAULT_NUM_CTX = 4096
"""The window Ollama gives a model that is not loaded yet when num_ctx is not set."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class ChatExtras(AppScreen[None]):
    """Attachments, presets and the context meter of the Chat screen."""

    BINDINGS = [
        Binding(
            "alt+a",
            "attach",
            "Attach",
            show=False,
            tooltip="Attach an image (for a vision model) or a text file (as context)",
            id="chat.attach",
        ),
        Binding(
            "alt+x",
            "clear_attachments",
            "Remove attachments",
            show=False,
            tooltip="Remove the files waiting to be sent with the next message",
            id="chat.clear_attachments",
        ),
        Binding(
            "alt+p",
            "presets",
            "Presets",
            show=False,
            tooltip="Presets: start a new conversation with one, save this one as one, edit, "
            "export, import",
            id="chat.presets",
        ),
    ]

    conversation: Conversation | None = None
    new_model: str = ""
    new_options: ChatOptions = ChatOptions()

    def __init__(self) -> None:
        super().__init__()
        self._windows: dict[str, tuple[int, str]] = {}  # by model: its window, and whence
        self._warned: set[int] = set()  # conversations warned of a full context
        self._stale: set[str] = set()  # models whose window to read again (a reply loaded it)
        self._window_wanted = False  # the window to read once Ollama has first answered

    def current_model(self) -> str:
        raise NotImplementedError

    def current_options(self) -> ChatOptions:
        return self.conversation.options if self.conversation else self.new_options

    # -- attachments ------------------------------------------------------------------

    @property
    def pending(self) -> PendingAttachments:
        return self.query_one(PendingAttachments)

    def load_attachment(self, raw: str) -> Attachment:
        """Check a file (an image is copied into the data folder): slow for a large
        photo, so it runs in a thread."""
        settings = self.lp.settings
        is_image = Path(raw.strip()).suffix.lower() in IMAGE_SUFFIXES
        if is_image:
            attachment = load_image(
                raw, settings.paths.attachments, settings.chat.image_max_mb * 1_000_000
            )
        else:
            attachment = read_text_file(raw, settings.chat.file_max_kb * 1000)
        return attachment

    @work(thread=True, group="attach", exit_on_error=False)
    def attach_path(self, raw: str, *, ask_again: bool = True) -> None:
        """Check a file in a thread and add it to the next message; a refused one is
        asked again (the path as typed, with why), or told."""
        try:
            attachment = self.load_attachment(raw)
        except AttachmentError as exc:
            if ask_again:
                self.app.call_from_thread(self.action_attach, raw, f"{exc}.")
            else:
                self.app.call_from_thread(
                    self.notify,
                    visible(str(exc)),
                    title="Not attached",
                    severity="error",
                    markup=False,
                )
            return
        self.app.call_from_thread(self._attached, attachment)

    def _attached(self, attachment: Attachment) -> None:
        self.pending.add(attachment)
        self.notify(f"Attached {visible(attachment.label())}.", markup=False)

    def action_attach(self, value: str = "", error: str = "") -> None:
        def chosen(raw: str | None) -> None:
            if raw is not None:
                self.query_one(PromptInput).focus()
                self.attach_path(raw)

        from tui.widgets.attachments import AttachDialog

        self.app.push_screen(AttachDialog(value, error), chosen)

    def action_clear_attachments(self) -> None:
        if not self.pending.items:
            self.notify("Nothing is attached.", severity="warning")
            return
        count = len(self.pending.items)
        self.pending.clear()
        self.notify(f"Removed {count} attachment{'s' if count > 1 else ''}.")

    def ask_about(self, image: Path) -> None:
        """The gallery's "Ask about this image": a new conversation with it attached."""
        self.start_new()
        self.attach_path(str(image), ask_again=False)
        self.choose_vision_model()
        prompt = self.query_one(PromptInput)
        if not prompt.text.strip():
            prompt.text = "What is in this image?"
            prompt.move_cursor(prompt.document.end)
        prompt.focus()

    def start_new(self) -> None:
        raise NotImplementedError

    def current_host(self) -> str:
        raise NotImplementedError

    def model_engine(self, model: str) -> ChatEngine:
        """The engine of the server a reply with ``model`` goes to (several servers: the
        conversation's, else the registry's rule); the first server's when none fits."""
        hosts = self.lp.hosts
        if not hosts.multi:
            return self.lp.chat
        try:
            return hosts.route(model, self.current_host() or None).engine
        except ChatError:
            return self.lp.chat

    @work(exclusive=True, group="vision-model", exit_on_error=False)
    async def choose_vision_model(self) -> None:
        """A new conversation about an image: a model that can see it, if one is installed
        and the default cannot."""
        configured = self.lp.settings.chat.vision_model
        if configured and self.conversation is None:  # [chat] vision_model
            self.new_model = configured
            self.model_changed()
            return
        model = self.current_model()
        try:
            if "vision" in (await self.model_engine(model).show(model)).capabilities:
                return
            found = await vision_models(self.model_engine(model))
        except ChatError:
            return  # sending will say what is wrong
        if found and self.conversation is None and self.current_model() == model:
            self.new_model = found[0]
            self.model_changed()
            self.notify(
                f"{visible(model)} cannot read images: this conversation uses "
                f"{visible(found[0])} (Ctrl+T chooses another).",
                markup=False,
            )

    def send_with_attachments(self, text: str) -> None:
        """Send ``text`` with what is attached and the files its ``@path`` words name;
        a refusal (a bad file, a model without vision) keeps the text and the files."""
        settings = self.lp.settings
        files = list(self.pending.files)
        try:
            for word in at_paths(text):
                if not any(a.name == Path(word).name and str(a.path).endswith(word) for a in files):
                    files.append(read_text_file(word, settings.chat.file_max_kb * 1000))
        except AttachmentError as exc:
            self.notify(
                f"{visible(str(exc))}. Your message is kept.",
                title="Not sent",
                severity="error",
                markup=False,
            )
            return
        images = list(self.pending.images)
        message = with_files(text, files)
        if images:
            self.check_vision_then_send(message, images)
        else:
            self.send_message(message, [])

    @work(exclusive=True, group="vision-check", exit_on_error=False)
    async def check_vision_then_send(self, message: str, images: list[Attachment]) -> None:
        model = self.current_model()
        try:
            await require_vision(self.model_engine(model), model)
        except VisionRequired as exc:
            self.notify(
                f"{visible(str(exc))} Your message is kept.",
                title="Not sent",
                severity="error",
                markup=False,
                timeout=10,
            )
            return
        except ChatError:
            pass  # the reply will say what is wrong
        self.send_message(message, images)

    def send_message(self, message: str, images: list[Attachment]) -> None:
        raise NotImplementedError

    def attachments_sent(self) -> None:
        self.pending.clear()

    # -- presets ----------------------------------------------------------------------

    def action_presets(self) -> None:
        current = (self.current_options(), self.current_model())

        def picked(preset: Preset | None) -> None:
            if preset is not None:
                self.use_preset(preset)

        from tui.widgets.presets import PresetsDialog

        self.app.push_screen(PresetsDialog(current), picked)

    def use_preset(self, preset: Preset) -> None:
        """A new conversation with the preset's system prompt, options and model."""
        self.start_new()
        self.new_options = preset.options
        if preset.model:
            self.new_model = preset.model
        self.model_changed()
        self.notify(
            f"New conversation with the preset “{visible(preset.name)}”"
            f" ({visible(self.new_model)}).",
            markup=False,
        )

    def model_changed(self) -> None:
        raise NotImplementedError

    # -- the context meter ------------------------------------------------------------

    def refresh_context(self, *, read_window: bool = False) -> None:
        """Redraw the meter; with ``read_window``, ask Ollama the model's window first."""
        meter = self.query_one(ContextMeter)
        meter.warn_at = self.lp.settings.chat.context_warn
        model = self.current_model()
        if read_window and model and self.lp.ollama is None:
            self._window_wanted = True  # asked once Ollama has answered, after the first frame
        elif read_window and model:
            self.read_context_window(model, loaded=model in self._stale)
            self._stale.discard(model)
        reply = self.query_one(ConversationView).last_reply()
        stats = reply.stats if reply is not None else None
        used = (stats.prompt_tokens + stats.eval_tokens) if stats else 0
        text = self.query_one(PromptInput).text
        pending = estimate_tokens(text) + sum(a.tokens for a in self.pending.files)
        for word in at_paths(text):  # the files the message will carry, by their size
            with contextlib.suppress(OSError):
                pending += Path(word).expanduser().stat().st_size // CHARS_PER_TOKEN
        num_ctx = self.current_options().context_length
        window, source = (num_ctx, "num_ctx") if num_ctx else self._windows.get(model, (0, ""))
        use = ContextUse(used, pending, window, source)
        meter.show(use)
        cid = self.conversation.id if self.conversation else None
        if window and use.percent >= meter.warn_at and cid is not None and cid not in self._warned:
            self._warned.add(cid)
            self.notify(
                f"The context is {use.percent}% full ({use.total:,} of {window:,} tokens). "
                "Once it is full, Ollama drops the oldest messages without a word: raise "
                "num_ctx (Ctrl+O) or start a new conversation (Ctrl+N).",
                title="Context nearly full",
                severity="warning",
                timeout=12,
            )

    @work(exclusive=True, group="context-window", exit_on_error=False)
    async def read_context_window(self, model: str, *, loaded: bool = False) -> None:
        """The window Ollama uses: once a reply has loaded the model, the loaded model's
        (``/api/ps``); before, Ollama's default within the model's own length."""
        window: tuple[int, str] | None = None
        try:
            for running in await self.model_engine(model).loaded() if loaded else []:
                if running.name in (model, f"{model}:latest") and running.context_length:
                    window = (running.context_length, "loaded")
            if window is None and model not in self._windows:
                details = await self.model_engine(model).show(model)
                if details.context_length:
                    window = (min(details.context_length, OLLAMA_DEFAULT_NUM_CTX), "default")
        except ChatError:
            return
        if window is not None:
            self._windows[model] = window
            self.refresh_context()

    def reply_finished(self) -> None:
        """A reply loaded the model: its window is read again once the next prompt is
        being written (the request goes then, not while the reply's figures are read)."""
        self._stale.add(self.current_model())
        self.refresh_context()

    @on(TextArea.Changed, "#prompt")
    def _prompt_changed(self, event: TextArea.Changed) -> None:
        model = self.current_model()
        written = bool(event.text_area.text.strip())
        self.refresh_context(read_window=model in self._stale and written)
        if written:  # the reply will not wait for a connection to its server, nor its turns
            self.model_engine(model).keep_connection()
            view = self.query_one(ConversationView)
            if not view.has_ready():  # after the key's frame: what is typed echoes first
                self.after_next_frame(view.make_ready, within=0.1)

    @on(PendingAttachments.Changed)
    def _attachments_changed(self) -> None:
        self.refresh_context()


def ask_about(app: App[object], image: Path) -> None:
    """From the gallery: to the Chat screen, a new conversation with ``image`` attached."""

    def attach() -> None:
        if isinstance(app.screen, ChatExtras):
            app.screen.ask_about(image)

    app.switch_mode("chat")
    app.call_after_refresh(attach)
