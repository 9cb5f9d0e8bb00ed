"""The Chat screen: conversations with Ollama models, streamed as Markdown."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as replaced
from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Select, Static

from engines.attachments import Attachment
from engines.chat_options import defaults_from_settings
from engines.chat_types import ChatError, ChatOptions, ModelInfo, ServerStatus
from engines.conversations import (
    ConversationError,
    Reply,
    ReplyEvent,
    ReplyFinished,
    ReplySaveFailed,
    ReplyStarted,
    ReplyText,
    ReplyThinking,
    ReplyWaiting,
)
from engines.files import slugify, write_private_text
from engines.hosts import HostState, split_key
from engines.store import (
    Conversation,
    StoredMessage,
    StoreError,
    export_markdown,
)
from tui.screens.base import styles
from tui.screens.chat_images import ChatImages
from tui.text import shown, visible
from tui.widgets.attachments import PendingAttachments
from tui.widgets.context_meter import ContextMeter
from tui.widgets.conversation import (
    ConversationView,
    PromptTurn,
    ReplyTurn,
    ReplyWriter,
    Turn,
    Versions,
)
from tui.widgets.footer import AppFooter
from tui.widgets.hosts import (
    picker_options,
    reachable_names,
    status_line,
    status_tooltip,
)
from tui.widgets.prompt import PromptInput
from tui.widgets.sidebar import PAGE, ConversationList, Sidebar

SEARCH_DELAY_S = 0.15
NARROW = 80
"""Below this width the sidebar hides unless asked for."""


SEND_CLEARED_S = 0.5
"""How long after a send the prompt it emptied may wait to be drawn while a reply is read
in a burst (``ChatScreen.holds_frames``); later, an emptied prompt (the last character
deleted) is drawn at once, as any key."""
MOUNTING_HOLD_S = 0.05
"""How long after a send frames may wait for the reply's new turn to be mounted
(``ChatScreen.holds_frames``)."""
LIST_AFTER_S = 0.25
"""The longest the conversation list waits for the frame of a reply's last words (a
reply done before its first words' time was up), should that frame not come."""


@dataclass
class LiveReply:
    """A reply drawn as it streams: its turn, and the writer that feeds it."""

    turn: ReplyTurn
    writer: ReplyWriter


@dataclass
class ReplyEventPosted(Message):
    """A reply's event (other than its text, which goes straight to its writer)."""

    event: ReplyEvent


def versions_of(messages: list[StoredMessage]) -> Versions:
    """Which version of its turn each message is: the messages that share a parent and a
    role are the versions of one turn, oldest first."""
    turns: dict[tuple[int | None, str], list[int]] = defaultdict(list)
    for m in messages:
        turns[(m.parent_id, m.role)].append(m.id)
    return {i: (n + 1, len(ids)) for ids in turns.values() for n, i in enumerate(ids)}


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of every code block of a Markdown text."""
    from markdown_it import MarkdownIt  # on first use: not needed for the first frame

    tokens = MarkdownIt("gfm-like").parse(markdown)
    return [(t.info.strip(), t.content) for t in tokens if t.type in ("fence", "code_block")]


class ChatScreen(ChatImages):
    """Talk to a model; every conversation is saved as it happens."""

    CSS_PATH = styles("chat.tcss")
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
            tooltip="Every generation option: system prompt, temperature, top p/k, stop, think, "
            "format...",
            id="chat.options",
        ),
        Binding(
            "alt+c",
            "copy_reply",
            "Copy",
            tooltip="Copy the selected turn (or the last reply)",
            id="chat.copy_reply",
        ),
        Binding(
            "alt+r",
            "regenerate",
            "Regenerate",
            tooltip="Write the selected reply (or the last) again; every version is kept",
            id="chat.regenerate",
        ),
        Binding(
            "alt+e",
            "edit",
            "Edit",
            show=False,
            tooltip="Edit the selected prompt (or the last) and send it again as a new branch",
            id="chat.edit",
        ),
        Binding(
            "alt+g",
            "continue_reply",
            "Continue",
            show=False,
            tooltip="Go on with the last reply (interrupted, or cut at the length limit)",
            id="chat.continue",
        ),
        Binding(
            "alt+up",
            "select_turn(-1)",
            "Turn up",
            show=False,
            tooltip="Select the turn above (the turn cursor)",
            id="chat.turn_up",
        ),
        Binding(
            "alt+down",
            "select_turn(1)",
            "Turn down",
            show=False,
            tooltip="Select the turn below (the turn cursor)",
            id="chat.turn_down",
        ),
        Binding(
            "alt+left",
            "flip_version(-1)",
            "Earlier version",
            show=False,
            tooltip="Show the earlier version of the selected turn (or the last reply)",
            id="chat.version_previous",
        ),
        Binding(
            "alt+right",
            "flip_version(1)",
            "Later version",
            show=False,
            tooltip="Show the later version of the selected turn (or the last reply)",
            id="chat.version_next",
        ),
        Binding(
            "alt+d",
            "delete_from",
            "Delete from here",
            show=False,
            tooltip="Delete the selected turn and all that follows it (asks first)",
            id="chat.delete_from",
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

    def __init__(self) -> None:
        super().__init__()
        self.models: list[ModelInfo] = []
        self._search_timer: Timer | None = None
        self._live: dict[int, LiveReply] = {}  # by reply id: the replies drawn as they stream
        self._unsubscribe: Callable[[], None] | None = None
        self.editing: int | None = None
        """The prompt being edited (its message id), or None."""
        self._draft = ""  # what the prompt held before an edit began
        self._sent_at = -1.0  # when the prompt was last emptied by a send (holds_frames)
        self._list_due = False  # the list waits for a reply's first words (a send)
        self._picker: tuple[object, ...] | None = None  # what the model picker shows

    @property
    def streaming(self) -> bool:
        """A reply of the conversation on screen is drawn as it streams (or waits)."""
        return bool(self._live)

    def holds_frames(self) -> bool:
        """A reply on screen is read in a burst: frames wait for it a moment (see
        ``DrawsSoon.holds_frames``). At full speed, 2,000 tokens come in some 30 ms. Not
        a frame that shows what is typed in the prompt: typing echoes at once. (The
        prompt emptied by a send a moment ago may wait: it is drawn with the new turns.)

        Frames also wait while the view awaits a turn (``ConversationView.awaiting``): the
        reply's turn of a message just sent (at most ``MOUNTING_HOLD_S``: its mounting
        takes a dozen turns of the event loop, and a frame drawn meanwhile held it back by
        as long), or the last turn of a conversation just opened."""
        if self.query_one(ConversationView).awaiting():
            return True
        busy = self.lp.conversations.busy.values()
        if not any(r.bursting.is_set() for r in busy if r.reply_id in self._live):
            return False
        if self.focused_changed() and isinstance(self.focused, PromptInput):
            return not self.focused.text and time.monotonic() - self._sent_at < SEND_CLEARED_S
        return True

    def _busy_here(self) -> Reply | None:
        if self.conversation is None:
            return None
        return self.lp.conversations.reply_in(self.conversation.id)

    # -- layout ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-top"):
            yield Select[str]([], prompt="Choose a model (Ctrl+T)", id="model", compact=True)
            yield Static("", id="ollama-status")
        with Horizontal(id="chat-body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat-main"):
                yield ConversationView(id="conversation")
                yield PendingAttachments(id="pending")
                yield ContextMeter(id="context-meter")
                yield PromptInput(id="prompt")
        yield AppFooter()

    def on_mount(self) -> None:
        self._unsubscribe = self.lp.conversations.subscribe(self._reply_event)
        self.query_one(PromptInput).recall = self._prompt_history
        settings = self.lp.settings
        self.new_model = settings.ollama.default_model
        self.new_options = defaults_from_settings(settings)
        self.new_host = ""
        """The Ollama server a new conversation will use (several servers; empty: the rule)."""
        self.models = self.lp.models
        self.watch(self.lp, "ollama", self._ollama_changed)
        self.watch(self.lp, "models", self._models_changed, init=False)
        if self.lp.hosts.multi:
            self.watch(self.lp, "host_states", self._hosts_changed)
        try:
            newest = self.lp.store.newest_conversation()
        except StoreError as exc:
            self.notify(str(exc), title="Database", severity="error")
            newest = None
        # the model list, the conversation and the list's first page, each drawn once
        if newest is None or not self.open_conversation(newest, after_frame=True):
            self._show_new()
            self._show_models()
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
        self.refresh_context(read_window=True)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def on_resize(self) -> None:
        # the sidebar's classes are its own: a class set on the screen restyles every
        # widget of every turn (Ctrl+B took 0.2 s beside a long conversation; issue 13)
        self.query_one(Sidebar).set_class(self.size.width < NARROW, "-narrow")

    def on_screen_resume(self) -> None:
        if self.conversation is not None and self.conversation.id in self.lp.unseen:
            self.lp.unseen.discard(self.conversation.id)
            self._mark()

    # -- Ollama status and models -----------------------------------------------

    def _ollama_changed(self, status: ServerStatus | None) -> None:
        label = self.query_one("#ollama-status", Static)
        if self.lp.hosts.multi:
            label.update(status_line(self.lp.hosts.states))
            label.tooltip = status_tooltip(self.lp.hosts.states)
        elif status is None:
            label.update(Text("◌ Ollama: checking…", style="dim"))
        elif status.online:
            label.update(Text.assemble(("● ", "green"), "Ollama ", shown(status.version)))
            label.tooltip = shown(status.host)
        else:
            label.update(Text.assemble(("● ", "red"), ("Ollama unreachable · retrying", "")))
            label.tooltip = shown(status.error)
        # on the label, not the screen: a screen's class restyles every turn's widgets
        label.set_class(status is not None and not status.online, "-offline")
        if status is not None and status.online and self._window_wanted:
            self._window_wanted = False
            self.refresh_context(read_window=True)

    def _hosts_changed(self, states: tuple[HostState, ...]) -> None:
        """Several servers: the status line shows each."""
        label = self.query_one("#ollama-status", Static)
        label.update(status_line(states or self.lp.hosts.states))
        label.tooltip = status_tooltip(states or self.lp.hosts.states)
        self._show_models()

    def _models_changed(self, models: list[ModelInfo]) -> None:
        self.models = models
        self._show_models()

    def current_model(self) -> str:
        return self.conversation.model if self.conversation else self.new_model

    def current_host(self) -> str:
        """The server chosen for the conversation (several servers); empty: the rule's."""
        host = self.conversation.host if self.conversation else self.new_host
        return host if self.lp.hosts.find(host) else ""

    def _show_models(self) -> None:
        """The model picker: the models installed, and the conversation's (as it is now)
        chosen. Not made again where both are as shown (opening a conversation with the
        same model: the picker's list was made anew, some 5 ms of the frame)."""
        select = self.query_one("#model", Select)
        current = self.current_model()
        value: str | None
        if self.lp.hosts.multi:
            entries, value = picker_options(
                self.lp.hosts, self.models, current, self.current_host()
            )
            options = list(entries)
        else:
            names = [m.name for m in self.models]
            options = [(shown(m.label()), m.name) for m in self.models]
            if current and current not in names:
                note = "not installed" if self.models else "offline"
                options.insert(0, (shown(f"{current}  ({note})"), current))
            value = current or None
        picker = (tuple(options), value)
        if picker == self._picker and (value is None or select.value == value):
            return
        self._picker = picker
        with self.prevent(Select.Changed):
            select.set_options(options)
            if value is not None:
                select.value = value

    @on(Select.Changed, "#model")
    def _model_chosen(self, event: Select.Changed) -> None:
        if not isinstance(event.value, str):
            return
        host, model = split_key(event.value)
        if model == self.current_model() and host == self.current_host():
            return
        self.query_one(PromptInput).focus()
        if self.conversation is None:
            self.new_model, self.new_host = model, host
            self._show_new()
            return
        self.refresh_context(read_window=True)
        try:
            self.lp.store.update_settings(self.conversation.id, model, self.conversation.options)
            if host:
                self.lp.store.set_host(self.conversation.id, host)
        except StoreError as exc:
            self.notify(str(exc), title="Not saved", severity="error")
            return
        self.conversation = self.lp.store.conversation(self.conversation.id)
        where = f" on {host}" if host else ""
        self.notify(f"This conversation now uses {model}{where}.")

    # -- conversations ---------------------------------------------------------

    def _conversations(
        self, search: str = "", limit: int | None = None, after: Conversation | None = None
    ) -> list[Conversation]:
        try:
            return self.lp.store.conversations(search, limit=limit, after=after)
        except StoreError as exc:
            self.notify(str(exc), title="Database", severity="error")
            return []

    def _refresh_list(self) -> None:
        """The list again, as many conversations as it had loaded (a page at least), and
        down to the open conversation if that is further down."""
        self._list_due = False
        search = self.query_one("#search", Input).value
        listing = self.query_one(ConversationList)
        current = self.conversation.id if self.conversation else None
        want = max(PAGE, listing.loaded if search == listing.search else 0)
        rows = self._conversations(search, limit=want + 1)
        if current is not None and len(rows) > want and all(c.id != current for c in rows):
            with contextlib.suppress(StoreError):
                above = self.lp.store.conversations_before(current, search)
                if above is not None:
                    want = above + PAGE
                    rows = self._conversations(search, limit=want + 1)
        listing.show(rows[:want], current, search=search, more=len(rows) > want)
        self._mark()

    def _refresh_list_after_first_words(self) -> None:
        """The list again once a reply just sent has had its time for its first words
        (``first_words_due``, at most 0.3 s), or its last words are drawn, whichever is
        first: drawn with the new turns, the list (the conversation gone to the top, or
        new) took 2-5 ms of their 14-22 ms frame, and the first words waited for it."""
        self._list_due = True
        self.set_timer(self.lp.first_words_due(), self._refresh_due_list)

    def _refresh_due_list(self) -> None:
        if self._list_due:
            self._refresh_list()

    @on(ConversationList.MoreWanted)
    def _more_wanted(self, event: ConversationList.MoreWanted) -> None:
        listing = self.query_one(ConversationList)
        if event.search != listing.search or event.after != listing.last:
            return  # asked for by a list shown again since (it asks again if need be)
        rows = self._conversations(event.search, limit=PAGE + 1, after=event.after)
        listing.extend(rows[:PAGE], more=len(rows) > PAGE)
        self._mark()

    def _mark(self) -> None:
        """The sidebar's marks: replies streaming or waiting, and replies not yet seen."""
        busy = self.lp.conversations.busy
        states = {c: "waiting" if r.status == "waiting" else "streaming" for c, r in busy.items()}
        self.query_one(ConversationList).mark(states, self.lp.unseen)

    def _forget_live(self) -> None:
        """The turns drawn live are leaving the screen: their writers stop, and their
        replies are read in batches (out of sight)."""
        for reply in self.lp.conversations.busy.values():
            if reply.reply_id in self._live:
                reply.in_sight = False
        for live in self._live.values():
            live.writer.abandon()
        self._live.clear()
        self._steady_cursor()

    def _steady_cursor(self) -> None:
        """The prompt's cursor holds still while a reply streams on screen, and blinks
        again once none does: each blink is a frame of its own (two a second), some 7%
        of the frames drawn for a reply at 200 tokens/s, while the reply's own frames
        show the app at work."""
        self.query_one(PromptInput).cursor_blink = not self._live

    def open_conversation(
        self, conversation_id: int, *, at_once: bool = False, after_frame: bool = False
    ) -> bool:
        """Show a conversation as it reads now; its reply live where it stands, if one is
        being written. ``at_once``: every turn in the first frame (one is to be scrolled
        to), not the last ones first. ``after_frame``: its turns are drawn once the app's
        next frame is (at start: the first frame, with the prompt and the list, does not
        wait for their Markdown; issue 13)."""
        try:
            conversation = self.lp.store.conversation(conversation_id)
            if conversation is None:
                return False
            messages = self.lp.store.messages(conversation_id)
            versions = versions_of(self.lp.store.all_messages(conversation_id))
        except StoreError as exc:
            self.notify(str(exc), title="Database", severity="error")
            return False
        self._stop_editing()
        self._forget_live()
        self.conversation = conversation
        reply = self.lp.conversations.reply_in(conversation_id)
        if reply is not None:  # the store holds the last save: the service holds the rest
            messages = [
                replaced(m, content=reply.text, status="streaming") if m.id == reply.reply_id else m
                for m in messages
            ]
        self.query_one(ConversationView).show_messages(
            messages, versions, at_once=at_once, after_frame=after_frame
        )
        self.show_inline_images(messages)
        if reply is not None:
            self._draw_live(reply)
        self.lp.unseen.discard(conversation_id)
        self._show_models()
        self._refresh_list()
        self.refresh_bindings()
        self.refresh_context(read_window=True)
        return True

    def open_at_message(self, conversation_id: int, message_id: int | None) -> bool:
        """Show a conversation with one of its messages selected and scrolled to (a search
        result). A message on an older version or another branch makes that branch the
        current one first, as flipping to it would (not while a reply is written there)."""
        if message_id is not None and self.lp.conversations.reply_in(conversation_id) is None:
            try:
                path = self.lp.store.messages(conversation_id)
                if all(m.id != message_id for m in path):
                    self.lp.store.switch_to(message_id)
            except StoreError as exc:
                self.notify(str(exc), title="Database", severity="error")
        if not self.open_conversation(conversation_id, at_once=message_id is not None):
            return False
        view = self.query_one(ConversationView)
        turn = view.turn(message_id) if message_id is not None else None
        if turn is not None:  # once it is laid out, so that it can be scrolled to
            view.call_after_refresh(view.select, turn)
        elif message_id is not None:
            self.notify(
                "A reply is being written in this conversation: the message found is on "
                "another version, shown once the reply ends.",
                severity="warning",
            )
        return True

    def _draw_live(self, reply: Reply) -> None:
        """Draw ``reply`` as it streams, in its turn on screen."""
        turn = self.query_one(ConversationView).turn(reply.reply_id)
        if not isinstance(turn, ReplyTurn):
            return
        reply.in_sight = True
        writer = turn.writer()

        def drawn_every(seconds: float) -> None:
            reply.drawn_every = seconds  # its reader hands text over as often

        writer.on_spacing = drawn_every
        self._live[reply.reply_id] = LiveReply(turn, writer)
        self._steady_cursor()
        position = self.lp.conversations.position(reply.conversation_id)
        if position is not None:
            turn.waiting(position)

    @on(ConversationList.OptionSelected)
    def _conversation_chosen(self, event: ConversationList.OptionSelected) -> None:
        if event.option_id:
            self.open_conversation(int(event.option_id))
            self.query_one(PromptInput).focus()

    @on(ConversationList.StopRequested)
    async def _stop_requested(self, event: ConversationList.StopRequested) -> None:
        await self.stop_reply(event.conversation_id)

    async def stop_reply(self, conversation_id: int) -> None:
        """Stop the reply being written in a conversation (kept, marked interrupted)."""
        reply = self.lp.conversations.reply_in(conversation_id)
        title = visible(reply.conversation.title) if reply else ""
        if not await self.lp.stop_reply(conversation_id):
            self.notify("No reply is being written in that conversation.", severity="warning")
            return
        self.notify(f"Stopped the reply in “{title}”; what it wrote is kept.")

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        # search as the user types, once a pause in typing says the word is there
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY_S, self._refresh_list)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.query_one(ConversationList).focus()

    def start_new(self) -> None:
        """An empty new conversation with the defaults (a preset changes them after)."""
        self.new_model = self.lp.settings.ollama.default_model
        self.new_options = defaults_from_settings(self.lp.settings)
        self.new_host = ""  # several servers: the rule chooses, until the picker does
        self._stop_editing()
        self._forget_live()
        self.conversation = None
        self._show_new()
        self._show_models()
        self._refresh_list()

    def model_changed(self) -> None:
        self._show_new()
        self._show_models()

    def action_new_conversation(self) -> None:
        # a new conversation starts with [ollama] default_model, as the README says
        self.start_new()
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

        from tui.widgets.dialogs import TextDialog

        self.app.push_screen(TextDialog("Rename conversation", conversation.title), renamed)

    @on(ConversationList.DeleteRequested)
    def _delete(self, event: ConversationList.DeleteRequested) -> None:
        conversation = self.lp.store.conversation(event.conversation_id)
        if conversation is None:
            return
        streaming = self.lp.conversations.reply_in(conversation.id) is not None

        async def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            await self.lp.stop_reply(conversation.id)
            try:
                self.lp.store.delete(conversation.id)
            except StoreError as exc:
                self.notify(str(exc), title="Not deleted", severity="error")
                return
            if self.conversation and self.conversation.id == conversation.id:
                self.action_new_conversation()
            self._refresh_list()
            self.notify(f"Deleted “{visible(conversation.title)}”.")

        question = f"Delete “{conversation.title}” and all its messages?"
        if streaming:
            question = (
                f"A reply is being written in “{conversation.title}”: it will be stopped first. "
                + question
            )
        from tui.widgets.dialogs import ConfirmDialog

        self.app.push_screen(
            ConfirmDialog(question, kept=f"Kept “{visible(conversation.title)}”."),
            confirmed,
        )

    # -- sending: the service prepares and runs each reply; the screen draws --------------

    def _refusal(self, text: str | None) -> str | None:
        """Why a reply cannot be asked for now (with ``text``, a message to send), or None."""
        if text is not None and not text.strip():
            return "Nothing to send: write a message first."
        if self._busy_here() is not None:
            return (
                "A reply is still being written in this conversation: wait for it, or press "
                "Esc to stop it. Other conversations can be used meanwhile."
            )
        model = self.current_model()
        if not model:
            return "Choose a model first (Ctrl+T)."
        status = self.lp.ollama
        if status is not None and not status.online:
            reason = status.error or f"Ollama is unreachable at {status.host}"
            return f"{reason[:1].upper()}{reason[1:]}. Your message is kept."
        return None

    def _installed(self, model: str) -> bool:
        host = self.current_host()
        if host and self.lp.hosts.get(host).state.online is False:
            return True  # its server is down: the reply says so, and offers another
        names = {m.name for m in self.models if m.host == host or not host}
        return model in names or (":" not in model and f"{model}:latest" in names)

    def _when_ready(self, text: str | None, then: Callable[[], None], kept: str) -> None:
        """Run ``then`` (which asks for a reply) unless it is refused now; a model not in
        the list is checked first (and offered for a pull)."""
        refusal = self._refusal(text)
        if refusal:
            self.notify(visible(refusal), title="Not sent", severity="warning")
            return
        model = self.current_model()
        status = self.lp.ollama
        if status is not None and status.online and not self._installed(model):
            self.check_model(model, then, kept)  # the list may be stale: ask the server first
            return
        then()

    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        if self.editing is not None:
            self._send_edit(event.text)
            return
        if self.image_command(event.text):  # /image: an image of it (chat_images.py)
            return
        self._when_ready(event.text, self._send_prompt, "your message is kept")

    def _send_prompt(self) -> None:
        """Send what the prompt holds now (after a check or a pull), if it still may be."""
        text = self.query_one(PromptInput).text
        refusal = self._refusal(text)
        if refusal:
            self.notify(visible(refusal), title="Not sent", severity="warning")
            return
        self.send_with_attachments(text)

    def send_message(self, message: str, images: list[Attachment]) -> None:
        self._send(message, images)

    @work(exclusive=True, group="model-list", exit_on_error=False)
    async def refresh_models(self) -> None:
        with contextlib.suppress(ChatError):
            self.lp.models = await self.lp.refresh_models()

    @work(exclusive=True, group="model-check", exit_on_error=False)
    async def check_model(self, model: str, then: Callable[[], None], kept: str) -> None:
        """The chat's model is not in the list: read the list again, then go on, or offer
        to pull the model. If the list cannot be read, go on: the reply says what failed."""
        try:
            self.lp.models = await self.lp.refresh_models()
        except ChatError:
            then()
            return
        if self._installed(model):
            then()
        else:
            self._offer_pull(model, then, kept)

    def _offer_pull(self, model: str, then: Callable[[], None], kept: str) -> None:
        from tui.screens.models import ModelsDialog

        keys = getattr(self.app, "keymap", {}).get("chat.models", "f5").split(",")[0]
        kept = (
            f"{visible(model)} is not installed: {kept}. Pull it later with "
            f"{keys.upper()} (or: ollama pull {visible(model)}), or choose another model (Ctrl+T)."
        )

        def pulled(name: str | None) -> None:
            if name:
                then()
            else:
                self.notify(kept, title="Not sent", severity="warning")

        def answered(yes: bool | None) -> None:
            if yes and self.lp.hosts.multi:
                self._ask_host(model, pulled)
            elif yes:
                self.app.push_screen(ModelsDialog(model, close_when_pulled=True), pulled)

        from tui.widgets.dialogs import ConfirmDialog

        self.app.push_screen(
            ConfirmDialog(
                f"{model} is not installed. Pull it now?", yes="Pull", variant="primary", kept=kept
            ),
            answered,
        )

    def _ask_host(self, model: str, pulled: Callable[[str | None], None]) -> None:
        """Several servers: which one to pull ``model`` onto; the conversation uses it then."""
        from tui.screens.models import ModelsDialog

        names = reachable_names(self.lp.hosts)
        if not names:
            self.notify("No Ollama server answers: nothing can be pulled now.", severity="error")
            pulled(None)
            return

        def chosen(index: int | None) -> None:
            if index is None:
                pulled(None)
                return
            host = names[index]
            if self.conversation is None:
                self.new_host = host
            else:
                with contextlib.suppress(StoreError):
                    self.lp.store.set_host(self.conversation.id, host)
                    self.conversation = self.lp.store.conversation(self.conversation.id)
            self.app.push_screen(ModelsDialog(model, close_when_pulled=True, host=host), pulled)

        from tui.widgets.dialogs import PickDialog

        self.app.push_screen(PickDialog(f"Pull {model} onto which server?", names), chosen)

    def _offer_resend(self, event: ReplyFinished, model: str) -> None:
        """A reply's server went away: offer the other servers that have its model."""
        others = [h.name for h in self.lp.hosts.with_model(model) if h.name != event.host]
        if not others:
            self.notify(
                f"{visible(event.error or '')}\nNo other server has {visible(model)}: the "
                "reply is kept; Alt+R writes it again once a server is back.",
                title="Server lost",
                severity="error",
            )
            return

        def chosen(index: int | None) -> None:
            if index is None or self.conversation is None:
                return
            try:
                self.lp.store.set_host(self.conversation.id, others[index])
            except StoreError as exc:
                self.notify(str(exc), title="Not resent", severity="error")
                return
            self.conversation = self.lp.store.conversation(self.conversation.id)
            service = self.lp.conversations
            self._redo(lambda c: service.regenerate(c), "resent")

        from tui.widgets.dialogs import PickDialog

        self.app.push_screen(
            PickDialog(
                (
                    f"{event.host} went away mid-reply; what it wrote is kept."
                    if event.content
                    else f"{event.host} cannot be reached."
                )
                + f" Resend to another server with {model}?",
                others,
            ),
            chosen,
        )

    def _send(self, text: str, images: list[Attachment] | None = None) -> None:
        service = self.lp.conversations
        images = images or []
        try:
            if self.conversation is None:
                self.conversation = service.new_conversation(
                    self.new_model, self.new_options, text, host=self.current_host()
                )
            reply = service.send(self.conversation, text, images)
            stored = self.lp.store.message(reply.reply_id)
        except (ConversationError, StoreError) as exc:
            self.notify(visible(str(exc)), title="Not sent", severity="error")
            return
        # started first, the reply's request goes out before the new turns are composed and
        # laid out (the worker's first step runs ahead of theirs); its events are only
        # handled after this method, once the turn below draws them
        self._start(reply)
        self.query_one(PromptInput).clear()
        self._sent_at = time.monotonic()
        self.attachments_sent()
        view = self.query_one(ConversationView)
        view.select(None)
        view.add_prompt(
            text, stored.parent_id if stored else None, tuple(str(a.path) for a in images)
        )
        view.await_turn(view.add_reply(reply.conversation.model, reply.reply_id), MOUNTING_HOLD_S)
        self._draw_live(reply)
        self._refresh_list_after_first_words()

    def _start(self, reply: Reply) -> None:
        self.lp.start_reply(reply)
        self.refresh_bindings()

    def _redo(self, prepare: Callable[[Conversation], Reply], what: str) -> None:
        """Prepare a reply another way (regenerate, continue, edit), show the conversation as
        it now reads and run the reply."""
        if self.conversation is None:
            return
        try:
            reply = prepare(self.conversation)
        except (ConversationError, StoreError) as exc:
            self.notify(visible(str(exc)), title=f"Not {what}", severity="warning")
            return
        self.open_conversation(reply.conversation_id)
        self._start(reply)

    # -- the reply's events: drawn, never decided here ---------------------------------

    def _reply_event(self, event: ReplyEvent) -> None:
        """Every reply's events, on the event loop. The text of the reply on screen goes
        straight to its writer (which draws it at most 5 times a second); the rest is
        posted, in order."""
        live = self._live.get(event.reply_id)
        if isinstance(event, ReplyText):
            if live is not None:
                live.writer.write(visible(event.text), more=event.more)
        elif isinstance(event, ReplyThinking):
            if live is not None:
                live.turn.thinking(event.chars, done=event.done)
        elif isinstance(event, (ReplyWaiting, ReplyStarted, ReplyFinished, ReplySaveFailed)):
            if isinstance(event, ReplyFinished) and live is not None:
                live.writer.flush()  # the last words now, before the message queue's turn
            self.post_message(ReplyEventPosted(event))

    @on(ReplyEventPosted)
    async def _reply_event_posted(self, message: ReplyEventPosted) -> None:
        event = message.event
        live = self._live.get(event.reply_id)
        if isinstance(event, ReplyWaiting) and live is not None:
            live.turn.waiting(event.position)
        elif isinstance(event, ReplyStarted) and live is not None:
            live.turn.started()
        elif isinstance(event, ReplySaveFailed):
            self.notify(visible(event.message), title="Reply not saved", severity="error")
        elif isinstance(event, ReplyFinished):
            if live is not None:
                await live.writer.close()
                live.turn.finish(event.content, event.status, event.stats, event.error)
                self._live.pop(event.reply_id, None)
                self._steady_cursor()
            if self.conversation and self.conversation.id == event.conversation_id:
                self.conversation = self.lp.store.conversation(event.conversation_id)
                self.reply_finished()
                # the turns of the next send, once the last words are drawn
                view = self.query_one(ConversationView)
                self.after_next_frame(view.make_ready, within=LIST_AFTER_S)
            # a reply done before its first words' time was up: the list after the frame
            # of its last words (drawn with them, it held them back by as long)
            self.after_next_frame(self._refresh_due_list, within=LIST_AFTER_S)
            here = self.conversation is not None and self.conversation.id == event.conversation_id
            if event.failure in ("unreachable", "lost") and event.host and here:
                self._offer_resend(event, self.current_model())
            elif event.failure == "model-missing":
                self.refresh_models()  # the list was stale: the next try offers a pull
                if live is not None:
                    self.notify(
                        f"{visible(live.turn.model)} is not installed: nothing else is lost "
                        "(Alt+← shows an earlier version). Pull it with F5, or choose another "
                        "model (Ctrl+T).",
                        title="Model missing",
                        severity="error",
                    )
        self._mark()
        self.refresh_bindings()

    async def action_cancel_reply(self) -> None:
        if self.editing is not None:
            self._stop_editing(restore=True)
            self.notify("Edit cancelled: the prompt is as it was.")
            return
        if self.conversation is not None and await self.lp.stop_reply(self.conversation.id):
            self.notify("Reply stopped.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_reply":
            # shown dimmed when there is nothing to stop (None), not hidden (False): the
            # footer's keys stay where they are, and a reply turns the key on in place
            return (self.editing is not None or self._busy_here() is not None) or None
        return True

    # -- the turn cursor, versions, regenerate, edit, continue, delete from here ----------

    def _target(self, kind: type[Turn] = Turn) -> Turn | None:
        """The selected turn, or else the last turn of that kind."""
        view = self.query_one(ConversationView)
        if view.selected is not None and isinstance(view.selected, kind):
            return view.selected
        turns = [t for t in view.turns() if isinstance(t, kind)]
        return turns[-1] if turns else None

    def action_select_turn(self, step: int) -> None:
        view = self.query_one(ConversationView)
        if view.move_selection(step) is None:
            self.notify("There is no turn to select yet.", severity="warning")

    def action_flip_version(self, step: int) -> None:
        turn = self._target(Turn) if self.query_one(ConversationView).selected else None
        turn = turn or self._target(ReplyTurn)
        if self.conversation is None or turn is None or turn.message_id is None:
            self.notify("There is nothing to flip through yet.", severity="warning")
            return
        if turn.versions < 2:
            self.notify("This turn has one version only.", severity="warning")
            return
        if self._busy_here() is not None:
            self.notify(
                "A reply is being written here: wait for it, or stop it (Esc), before "
                "showing another version.",
                severity="warning",
            )
            return
        try:
            siblings = self.lp.store.siblings(turn.message_id)
            index = siblings.index(turn.message_id) + step
            if not 0 <= index < len(siblings):
                first = index < 0
                self.notify(
                    f"This is the {'first' if first else 'last'} version.", severity="warning"
                )
                return
            self.lp.store.switch_to(siblings[index])
        except (StoreError, ValueError) as exc:
            self.notify(str(exc), title="Not switched", severity="error")
            return
        self.open_conversation(self.conversation.id)
        view = self.query_one(ConversationView)
        shown = view.turn(siblings[index])
        if shown is not None:  # once it is laid out, so that it can be scrolled to
            view.call_after_refresh(view.select, shown)

    def action_regenerate(self) -> None:
        turn = self._target(ReplyTurn)
        if self.conversation is None or turn is None:
            self.notify("There is no reply to regenerate yet: send a message.", severity="warning")
            return
        reply_id = turn.message_id
        service = self.lp.conversations
        self._when_ready(
            None,
            lambda: self._redo(lambda c: service.regenerate(c, reply_id), "regenerated"),
            "nothing was regenerated",
        )

    def action_continue_reply(self) -> None:
        turn = self._target(ReplyTurn)
        if self.conversation is None or not isinstance(turn, ReplyTurn):
            self.notify("There is no reply to continue yet.", severity="warning")
            return
        if not turn.can_continue:
            self.notify(
                "That reply is complete: only an interrupted reply, or one cut at the length "
                "limit, can be continued.",
                severity="warning",
            )
            return
        reply_id = turn.message_id
        service = self.lp.conversations
        self._when_ready(
            None,
            lambda: self._redo(lambda c: service.continue_reply(c, reply_id), "continued"),
            "the reply is kept as it was",
        )

    def action_edit(self) -> None:
        turn = self._target(PromptTurn)
        if self.conversation is None or turn is None or turn.message_id is None:
            self.notify("There is no prompt to edit yet.", severity="warning")
            return
        if self._busy_here() is not None:
            self.notify(
                "A reply is being written here: wait for it, or stop it (Esc), before editing.",
                severity="warning",
            )
            return
        prompt = self.query_one(PromptInput)
        if self.editing is None:
            self._draft = prompt.text
        self.editing = turn.message_id
        prompt.text = turn.content
        prompt.move_cursor(prompt.document.end)
        prompt.border_title = "Editing · Enter sends a new branch · Esc cancels"
        prompt.add_class("-editing")
        prompt.focus()
        self.refresh_bindings()

    def _stop_editing(self, *, restore: bool = False) -> None:
        if self.editing is None:
            return
        self.editing = None
        prompt = self.query_one(PromptInput)
        prompt.border_title = None
        prompt.remove_class("-editing")
        if restore:
            prompt.text = self._draft
            prompt.move_cursor(prompt.document.end)
        self._draft = ""
        self.refresh_bindings()

    def _send_edit(self, text: str) -> None:
        prompt_id = self.editing
        if prompt_id is None:
            return
        if not text.strip():
            self.notify(
                "The edited prompt is empty: type the new text, or press Esc to leave the "
                "prompt as it was. Nothing was changed.",
                title="Not sent",
                severity="warning",
            )
            return
        service = self.lp.conversations

        def send() -> None:
            if self.editing != prompt_id:
                return
            draft = self._draft
            self._redo(lambda c: service.edit(c, prompt_id, text), "sent")
            if self._busy_here() is not None:  # accepted: the prompt gets the draft back
                self._stop_editing()
                self.query_one(PromptInput).text = draft

        self._when_ready(text, send, "your edit is kept")

    def action_delete_from(self) -> None:
        view = self.query_one(ConversationView)
        turn = view.selected or self._target(Turn)
        if self.conversation is None or turn is None or turn.message_id is None:
            self.notify("There is no turn to delete.", severity="warning")
            return
        if self._busy_here() is not None:
            self.notify(
                "A reply is being written here: wait for it, or stop it (Esc), before deleting.",
                severity="warning",
            )
            return
        conversation_id, message_id = self.conversation.id, turn.message_id
        what = "prompt" if isinstance(turn, PromptTurn) else "reply"
        question = f"Delete this {what} and everything after it?"
        others = turn.versions - 1
        if others:
            question += (
                f" The other {others} version{'s' if others > 1 else ''} of this turn "
                f"{'are' if others > 1 else 'is'} kept; the conversation goes on from the newest."
            )

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.lp.store.delete_from(message_id)
            except StoreError as exc:
                self.notify(str(exc), title="Not deleted", severity="error")
                return
            self.open_conversation(conversation_id)
            self.notify(f"Deleted the {what} and what followed it.")

        from tui.widgets.dialogs import ConfirmDialog

        self.app.push_screen(ConfirmDialog(question), confirmed)

    # -- prompt history ------------------------------------------------------------

    def _prompt_history(self) -> list[str]:
        """Earlier prompts, newest first: this conversation's, then every other."""
        try:
            here = self.lp.store.prompts(self.conversation.id) if self.conversation else []
            everywhere = self.lp.store.prompts()
        except StoreError as exc:
            self.notify(str(exc), title="Database", severity="error")
            return []
        seen = set(here)
        return here + [p for p in everywhere if p not in seen]

    @on(PromptInput.SearchRequested)
    def _search_history(self) -> None:
        prompts = self._prompt_history()
        if not prompts:
            self.notify("No earlier prompts yet.", severity="warning")
            return

        def chosen(text: str | None) -> None:
            if text is not None:
                prompt = self.query_one(PromptInput)
                prompt.text = text
                prompt.move_cursor(prompt.document.end)
                prompt.focus()

        from tui.widgets.history import HistoryDialog

        self.app.push_screen(HistoryDialog(prompts), chosen)

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
        self.query_one(Sidebar).remove_class("-hidden").add_class("-shown")
        self.query_one("#search", Input).focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        visible_now = sidebar.display
        sidebar.set_class(visible_now, "-hidden").set_class(not visible_now, "-shown")
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

        from tui.widgets.dialogs import OptionsDialog

        model = self.current_model()
        self.app.push_screen(OptionsDialog(options, model, engine=self.model_engine(model)), saved)

    def _last_reply_text(self) -> str | None:
        reply = self.query_one(ConversationView).last_reply()
        if reply is None or not reply.content:
            self.notify("There is no reply to copy yet.", severity="warning")
            return None
        return reply.content

    def action_copy_reply(self) -> None:
        selected = self.query_one(ConversationView).selected
        if selected is not None and selected.content:
            what = "prompt" if isinstance(selected, PromptTurn) else "reply"
            self.app.copy_to_clipboard(selected.content)
            self.notify(f"Copied the selected {what} ({len(selected.content):,} characters).")
            return
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
        from tui.widgets.dialogs import PickDialog

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
                export_markdown(self.conversation, messages, self.lp.settings.paths.exports),
            )
        except (OSError, StoreError) as exc:
            self.notify(f"Export failed: {exc}", severity="error")
            return
        self.notify(f"Exported to {path}", title="Exported")
