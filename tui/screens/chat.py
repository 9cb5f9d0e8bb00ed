"""The Chat screen: conversations with Ollama models, streamed as Markdown."""

from __future__ import annotations

import time
from datetime import datetime

from markdown_it import MarkdownIt
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.timer import Timer
from textual.widgets import Input, Select, Static

from engines.chat_types import ChatError, ChatMessage, ChatOptions, ModelInfo, ServerStatus
from engines.files import slugify, write_private_text
from engines.store import Conversation, Status, StoreError, export_markdown, title_from
from tui.screens.base import AppScreen
from tui.text import shown, visible
from tui.widgets.conversation import ConversationView, ReplyTurn
from tui.widgets.dialogs import ConfirmDialog, OptionsDialog, PickDialog, TextDialog
from tui.widgets.footer import AppFooter
from tui.widgets.prompt import PromptInput
from tui.widgets.sidebar import ConversationList, Sidebar

SEARCH_DELAY_S = 0.15
NARROW = 80
"""Below this width the sidebar hides unless asked for."""


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of every code block of a Markdown text."""
    tokens = MarkdownIt("gfm-like").parse(markdown)
    return [(t.info.strip(), t.content) for t in tokens if t.type in ("fence", "code_block")]


class ChatScreen(AppScreen[None]):
    """Talk to a model; every conversation is saved as it happens."""

    AUTO_FOCUS = "#prompt"
    """The prompt has the keys from the first frame: a key typed while the app starts is
    never lost to another widget (Textual would focus the first focusable one)."""

    BINDINGS = [
        Binding(
            "escape",
            "cancel_reply",
            "Cancel reply",
            tooltip="Stop the reply being written",
            id="chat.cancel",
        ),
        Binding(
            "ctrl+n", "new_conversation", "New", tooltip="Start a new conversation", id="chat.new"
        ),
        Binding("ctrl+t", "pick_model", "Model", tooltip="Choose the model", id="chat.model"),
        Binding(
            "ctrl+o",
            "options",
            "Options",
            tooltip="System prompt, temperature, context, max tokens, seed",
            id="chat.options",
        ),
        Binding(
            "ctrl+r", "copy_reply", "Copy", tooltip="Copy the last reply", id="chat.copy_reply"
        ),
        Binding(
            "ctrl+g",
            "copy_code",
            "Copy code",
            show=False,
            tooltip="Copy a code block of the last reply",
            id="chat.copy_code",
        ),
        Binding(
            "ctrl+s",
            "export",
            "Export .md",
            show=False,
            tooltip="Export the conversation to Markdown",
            id="chat.export",
        ),
        Binding(
            "ctrl+f",
            "search",
            "Search",
            show=False,
            tooltip="Search the conversations",
            id="chat.search",
        ),
        Binding(
            "ctrl+b",
            "toggle_sidebar",
            "Sidebar",
            show=False,
            tooltip="Show or hide the conversation list",
            id="chat.sidebar",
        ),
        Binding(
            "ctrl+l",
            "focus_prompt",
            "Prompt",
            show=False,
            tooltip="Back to the prompt",
            id="chat.prompt",
        ),
        Binding(
            "f5",
            "models",
            "Models",
            show=False,
            tooltip="Ollama's models: details, pull one, delete one",
            id="chat.models",
        ),
    ]

    conversation: Conversation | None = None
    streaming = var(False, bindings=True)
    """A reply is being written (Esc stops it)."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[ModelInfo] = []
        self._search_timer: Timer | None = None

    # -- layout ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-top"):
            yield Select[str]([], prompt="Choose a model (Ctrl+T)", id="model", compact=True)
            yield Static("", id="ollama-status")
        with Horizontal(id="chat-body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat-main"):
                yield ConversationView(id="conversation")
                yield PromptInput(id="prompt")
        yield AppFooter()

    def on_mount(self) -> None:
        settings = self.lp.settings
        self.new_model = settings.ollama.default_model
        self.new_options = ChatOptions(
            system_prompt=settings.chat.system_prompt,
            temperature=settings.chat.temperature,
            context_length=settings.chat.context_length,
            max_tokens=settings.ollama.max_tokens,
            seed=settings.chat.seed,
        )
        self._show_models()
        self.watch(self.lp, "ollama", self._ollama_changed)
        self.watch(self.lp, "models", self._models_changed)
        conversations = self._conversations()
        if conversations:
            self.open_conversation(conversations[0].id)
        else:
            self._show_new()
            self._refresh_list()
        self.query_one(PromptInput).focus()

    def _show_new(self) -> None:
        """An empty conversation, saying which model it will use."""
        model = self.new_model
        with_model = (
            f"A new conversation with {visible(model)}."
            if model
            else "A new conversation: choose a model first (Ctrl+T)."
        )
        self.query_one(ConversationView).show_messages([], hint=with_model)

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW, "-narrow")

    # -- Ollama status and models -----------------------------------------------

    def _ollama_changed(self, status: ServerStatus | None) -> None:
        label = self.query_one("#ollama-status", Static)
        if status is None:
            label.update(Text("◌ Ollama: checking…", style="dim"))
        elif status.online:
            label.update(Text.assemble(("● ", "green"), "Ollama ", shown(status.version)))
            label.tooltip = shown(status.host)
        else:
            label.update(Text.assemble(("● ", "red"), ("Ollama unreachable · retrying", "")))
            label.tooltip = shown(status.error)
        self.set_class(status is not None and not status.online, "-offline")

    def _models_changed(self, models: list[ModelInfo]) -> None:
        self.models = models
        self._show_models()

    def current_model(self) -> str:
        return self.conversation.model if self.conversation else self.new_model

    def _show_models(self) -> None:
        select = self.query_one("#model", Select)
        current = self.current_model()
        names = [m.name for m in self.models]
        options = [(shown(m.label()), m.name) for m in self.models]
        if current and current not in names:
            note = "not installed" if self.models else "offline"
            options.insert(0, (shown(f"{current}  ({note})"), current))
        with self.prevent(Select.Changed):
            select.set_options(options)
            if current:
                select.value = current

    @on(Select.Changed, "#model")
    def _model_chosen(self, event: Select.Changed) -> None:
        if not isinstance(event.value, str) or event.value == self.current_model():
            return
        self.query_one(PromptInput).focus()
        if self.conversation is None:
            self.new_model = event.value
            self._show_new()
            return
        try:
            self.lp.store.update_settings(
                self.conversation.id, event.value, self.conversation.options
            )
        except StoreError as exc:
            self.notify(str(exc), title="Not saved", severity="error")
            return
        self.conversation = self.lp.store.conversation(self.conversation.id)
        self.notify(f"This conversation now uses {event.value}.")

    # -- conversations ---------------------------------------------------------

    def _conversations(self, search: str = "") -> list[Conversation]:
        try:
            return self.lp.store.conversations(search)
        except StoreError as exc:
            self.notify(str(exc), title="Database", severity="error")
            return []

    def _refresh_list(self) -> None:
        search = self.query_one("#search", Input).value
        current = self.conversation.id if self.conversation else None
        self.query_one(ConversationList).show(self._conversations(search), current)

    def open_conversation(self, conversation_id: int) -> None:
        if self.streaming:
            self.notify(
                "A reply is still streaming: press Esc to stop it first.", severity="warning"
            )
            return
        try:
            conversation = self.lp.store.conversation(conversation_id)
            messages = self.lp.store.messages(conversation_id) if conversation else []
        except StoreError as exc:
            self.notify(str(exc), title="Database", severity="error")
            return
        if conversation is None:
            return
        self.conversation = conversation
        self.query_one(ConversationView).show_messages(messages)
        self._show_models()
        self._refresh_list()

    @on(ConversationList.OptionSelected)
    def _conversation_chosen(self, event: ConversationList.OptionSelected) -> None:
        if event.option_id:
            self.open_conversation(int(event.option_id))
            self.query_one(PromptInput).focus()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        # search as the user types, once a pause in typing says the word is there
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY_S, self._refresh_list)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.query_one(ConversationList).focus()

    def action_new_conversation(self) -> None:
        if self.streaming:
            self.notify(
                "A reply is still streaming: press Esc to stop it first.", severity="warning"
            )
            return
        # a new conversation starts with [ollama] default_model, as the README says
        self.new_model = self.lp.settings.ollama.default_model
        self.conversation = None
        self._show_new()
        self._show_models()
        self._refresh_list()
        self.query_one(PromptInput).focus()
        if self.new_model:
            self.notify(
                f"New conversation with {visible(self.new_model)} ([ollama] default_model); "
                "Ctrl+T chooses another.",
                markup=False,
            )

    @on(ConversationList.RenameRequested)
    def _rename(self, event: ConversationList.RenameRequested) -> None:
        conversation = self.lp.store.conversation(event.conversation_id)
        if conversation is None:
            return

        def renamed(title: str | None) -> None:
            if title is None:
                return
            try:
                self.lp.store.rename(conversation.id, title)
            except StoreError as exc:
                self.notify(str(exc), title="Not renamed", severity="error")
                return
            if self.conversation and self.conversation.id == conversation.id:
                self.conversation = self.lp.store.conversation(conversation.id)
            self._refresh_list()

        self.app.push_screen(TextDialog("Rename conversation", conversation.title), renamed)

    @on(ConversationList.DeleteRequested)
    def _delete(self, event: ConversationList.DeleteRequested) -> None:
        conversation = self.lp.store.conversation(event.conversation_id)
        if conversation is None:
            return
        if self.streaming and self.conversation and self.conversation.id == conversation.id:
            self.notify(
                "A reply is still streaming: press Esc to stop it first.", severity="warning"
            )
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.lp.store.delete(conversation.id)
            except StoreError as exc:
                self.notify(str(exc), title="Not deleted", severity="error")
                return
            if self.conversation and self.conversation.id == conversation.id:
                self.action_new_conversation()
            self._refresh_list()
            self.notify(f"Deleted “{visible(conversation.title)}”.")

        self.app.push_screen(
            ConfirmDialog(
                f"Delete “{conversation.title}” and all its messages?",
                kept=f"Kept “{visible(conversation.title)}”.",
            ),
            confirmed,
        )

    # -- sending and streaming ----------------------------------------------------

    def _refusal(self, text: str) -> str | None:
        """Why ``text`` cannot be sent now, or None."""
        if not text.strip():
            return "Nothing to send: write a message first."
        if self.streaming:
            return "A reply is still streaming: press Esc to stop it, then send."
        model = self.current_model()
        if not model:
            return "Choose a model first (Ctrl+T)."
        status = self.lp.ollama
        if status is not None and not status.online:
            reason = status.error or f"Ollama is unreachable at {status.host}"
            return f"{reason[:1].upper()}{reason[1:]}. Your message is kept."
        return None

    def _installed(self, model: str) -> bool:
        names = {m.name for m in self.models}
        return model in names or (":" not in model and f"{model}:latest" in names)

    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        text = event.text
        refusal = self._refusal(text)
        if refusal:
            self.notify(visible(refusal), title="Not sent", severity="warning")
            return
        model = self.current_model()
        status = self.lp.ollama
        if status is not None and status.online and not self._installed(model):
            self.check_model(model)  # the list may be stale: ask the server before offering
            return
        self._send(text)

    def _send_prompt(self) -> None:
        """Send what the prompt holds now (after a check or a pull), if it still may be."""
        text = self.query_one(PromptInput).text
        refusal = self._refusal(text)
        if refusal:
            self.notify(visible(refusal), title="Not sent", severity="warning")
            return
        self._send(text)

    @work(exclusive=True, group="model-check", exit_on_error=False)
    async def check_model(self, model: str) -> None:
        """The chat's model is not in the list: read the list again, then send, or offer
        to pull the model. If the list cannot be read, send: the reply says what failed."""
        try:
            self.lp.models = await self.lp.chat.list_models()
        except ChatError:
            self._send_prompt()
            return
        if self._installed(model):
            self._send_prompt()
        else:
            self._offer_pull(model)

    def _offer_pull(self, model: str) -> None:
        from tui.screens.models import ModelsDialog

        keys = getattr(self.app, "keymap", {}).get("chat.models", "f5").split(",")[0]
        kept = (
            f"{visible(model)} is not installed: your message is kept. Pull it later with "
            f"{keys.upper()} (or: ollama pull {visible(model)}), or choose another model (Ctrl+T)."
        )

        def pulled(name: str | None) -> None:
            if name:
                self._send_prompt()
            else:
                self.notify(kept, title="Not sent", severity="warning")

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.push_screen(ModelsDialog(model, close_when_pulled=True), pulled)

        self.app.push_screen(
            ConfirmDialog(
                f"{model} is not installed. Pull it now?", yes="Pull", variant="primary", kept=kept
            ),
            answered,
        )

    def _send(self, text: str) -> None:
        store = self.lp.store
        try:
            if self.conversation is None:
                self.conversation = store.create_conversation(
                    self.new_model, self.new_options, title_from(text)
                )
            conversation = self.conversation
            store.add_message(conversation.id, "user", text)
            history = [
                m.as_chat()
                for m in store.messages(conversation.id)
                if m.role == "user" or m.status == "done"
            ]
            reply_id = store.add_message(
                conversation.id, "assistant", "", status="streaming", model=conversation.model
            )
        except StoreError as exc:
            self.notify(str(exc), title="Not sent", severity="error")
            return
        self.query_one(PromptInput).clear()
        view = self.query_one(ConversationView)
        view.add_prompt(text)
        reply = view.add_reply(conversation.model)
        self.streaming = True
        self._refresh_list()
        self.stream_reply(conversation, history, reply, reply_id)

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def stream_reply(
        self,
        conversation: Conversation,
        history: list[ChatMessage],
        reply: ReplyTurn,
        reply_id: int,
    ) -> None:
        """Stream the reply into its widget, saving it as it grows."""
        store, engine = self.lp.store, self.lp.chat
        interval = self.lp.settings.chat.save_interval
        parts: list[str] = []
        status: Status = "interrupted"
        stats = None
        error: str | None = None
        stream = reply.writer()
        saved_at = time.monotonic()
        save_failed = False
        try:
            thought = 0
            first_at: float | None = None
            async for chunk in engine.stream(conversation.model, history, conversation.options):
                if chunk.thinking and not parts:
                    thought += len(chunk.thinking)
                    reply.thinking(thought)
                if chunk.text:
                    if not parts and thought:
                        reply.thinking(thought, done=True)
                    parts.append(chunk.text)
                    stream.write(visible(chunk.text))
                    now_t = time.monotonic()
                    if first_at is None:
                        first_at = now_t
                    elif now_t > first_at:
                        self.lp.live.reply_tokens_per_s = (len(parts) - 1) / (now_t - first_at)
                if chunk.stats is not None:
                    stats = chunk.stats
                now = time.monotonic()
                if now - saved_at >= interval and not save_failed:
                    saved_at = now
                    try:
                        store.update_message(reply_id, "".join(parts), status="streaming")
                    except StoreError as exc:
                        save_failed = True
                        self.notify(str(exc), title="Reply not saved", severity="error")
            status = "done"
        except ChatError as exc:
            status = "interrupted" if parts else "error"
            error = str(exc)
        finally:
            self.lp.live.reply_tokens_per_s = None
            await stream.close()
            content = "".join(parts)
            try:
                store.update_message(reply_id, content, status=status, stats=stats, error=error)
            except StoreError as exc:
                self.notify(str(exc), title="Reply not saved", severity="error")
            reply.finish(content, status, stats, error)
            self.streaming = False
            if error:
                self.lp.check_ollama_soon()
            self.lp.reply_finished(conversation.title, status, self)

    def action_cancel_reply(self) -> None:
        if self.streaming:
            self.workers.cancel_group(self, "chat")
            self.notify("Reply stopped.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_reply":
            return self.streaming
        return True

    # -- other actions -------------------------------------------------------------

    def action_pick_model(self) -> None:
        select = self.query_one("#model", Select)
        select.focus()
        select.expanded = True

    def action_focus_prompt(self) -> None:
        self.query_one(PromptInput).focus()

    def action_models(self) -> None:
        from tui.screens.models import ModelsDialog

        self.app.push_screen(ModelsDialog())

    def action_search(self) -> None:
        self.remove_class("-sidebar-hidden")
        self.add_class("-sidebar-shown")
        self.query_one("#search", Input).focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        visible_now = sidebar.display
        self.set_class(visible_now, "-sidebar-hidden")
        self.set_class(not visible_now, "-sidebar-shown")
        if not visible_now:
            self.query_one(ConversationList).focus()
        else:
            self.query_one(PromptInput).focus()

    def action_options(self) -> None:
        options = self.conversation.options if self.conversation else self.new_options

        def saved(new: ChatOptions | None) -> None:
            if new is None:
                return
            if self.conversation is None:
                self.new_options = new
            else:
                try:
                    self.lp.store.update_settings(
                        self.conversation.id, self.conversation.model, new
                    )
                except StoreError as exc:
                    self.notify(str(exc), title="Not saved", severity="error")
                    return
                self.conversation = self.lp.store.conversation(self.conversation.id)
            self.notify("Options saved; they apply from the next reply.")

        self.app.push_screen(OptionsDialog(options), saved)

    def _last_reply_text(self) -> str | None:
        reply = self.query_one(ConversationView).last_reply()
        if reply is None or not reply.content:
            self.notify("There is no reply to copy yet.", severity="warning")
            return None
        return reply.content

    def action_copy_reply(self) -> None:
        text = self._last_reply_text()
        if text is not None:
            self.app.copy_to_clipboard(text)
            self.notify(f"Copied the last reply ({len(text):,} characters).")

    def action_copy_code(self) -> None:
        text = self._last_reply_text()
        if text is None:
            return
        blocks = code_blocks(text)
        if not blocks:
            self.notify("The last reply has no code block.", severity="warning")
            return

        def copy(index: int | None) -> None:
            if index is not None:
                lang, code = blocks[index]
                self.app.copy_to_clipboard(code)
                lines = len(code.splitlines())
                self.notify(
                    f"Copied the {visible(lang) or 'code'} block "
                    f"({lines} line{'s' if lines != 1 else ''}).",
                    markup=False,
                )

        if len(blocks) == 1:
            copy(0)
            return
        items = [
            f"{lang or 'text'}: {(code.strip().splitlines() or [''])[0][:60]}"
            for lang, code in blocks
        ]
        self.app.push_screen(PickDialog("Copy which code block?", items), copy)

    def action_export(self) -> None:
        if self.conversation is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        try:
            messages = self.lp.store.messages(self.conversation.id)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{stamp}-{slugify(self.conversation.title)}.md"
            path = write_private_text(
                self.lp.settings.paths.exports / name,
                export_markdown(self.conversation, messages),
            )
        except (OSError, StoreError) as exc:
            self.notify(f"Export failed: {exc}", severity="error")
            return
        self.notify(f"Exported to {path}", title="Exported")
