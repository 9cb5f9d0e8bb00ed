"""What the Chat screen does with images (issue 14), kept out of ``chat.py``: from the chat
to an image (Alt+I, ``/image``: the model writes the prompt, the user edits it, the job
goes to the image queue), the finished images inline in the conversation, and the
``generate_image`` tool's calls drawn as they happen. :class:`ChatScreen` is a
:class:`ChatImages`."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ScreenStackError
from textual.binding import Binding
from textual.message import Message

from engines.chat_types import ChatError
from engines.conversations import ReplyEvent, ReplyToolUsed, ToolRequest
from engines.store import StoredMessage, StoreError
from tui.screens.chat_extras import ChatExtras
from tui.text import visible
from tui.widgets.chat_image import ChatImage
from tui.widgets.conversation import ConversationView, ReplyTurn, Turn
from tui.widgets.prompt import PromptInput

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.app import App

    from engines.diffusion import GenerationRequest
    from engines.queue import QueueEvent
    from engines.store import StoredImage
    from tui.widgets.image_prompt import EditedPrompt

IMAGE_COMMAND = "/image"


@dataclass
class ChatImageSaved(Message):
    """The queue saved an image (posted from its worker thread)."""

    job_id: int
    path: Path


@dataclass
class ChatJobFailed(Message):
    job_id: int
    error: str


@dataclass(frozen=True)
class ImageSource:
    """What an image is asked of: its text, and the message it is linked to."""

    text: str
    message_id: int | None
    what: str
    """How the notices name it: "the last reply", "the selected turn", "your text"."""
    typed: bool = False
    """The text came from the prompt (cleared once the job is queued)."""


class ChatImages(ChatExtras):
    """Images from the chat, and in it."""

    BINDINGS = [
        Binding(
            "alt+i",
            "image_from_chat",
            "Image",
            show=False,
            tooltip="An image of the typed text, the selected turn or the last reply; the "
            "model writes its prompt (also: /image)",
            id="chat.image",
        ),
    ]

    _watching = False

    def on_mount(self) -> None:
        self._unsubscribe_tools: Callable[[], None] = self.lp.conversations.subscribe(
            self._tool_event
        )
        self._watch_queue(made_only=True)

    def on_screen_resume(self) -> None:
        self._watch_queue(made_only=True)  # the Image screen may have made the queue

    def on_unmount(self) -> None:
        if self._watching:
            self.lp.image_queue.unsubscribe(self._chat_queue_event)
        self._unsubscribe_tools()

    def _watch_queue(self, *, made_only: bool = False) -> None:
        """Hear the image queue (its images of this chat are shown here). The queue (and
        torch's side of the app) is not made for this at start: it is watched once it
        exists, or once the chat queues a job."""
        if self._watching or (made_only and self.lp._image_queue is None):
            return
        self._watching = True
        self.lp.image_queue.subscribe(self._chat_queue_event)

    # -- from the chat to an image ---------------------------------------------------

    def image_command(self, text: str) -> bool:
        """``/image [TEXT]`` at the start of a prompt: an image of TEXT (or of the selected
        turn, or the last reply); True when it was one."""
        stripped = text.lstrip()
        if not stripped.startswith(IMAGE_COMMAND):
            return False
        rest = stripped[len(IMAGE_COMMAND) :]
        if rest and not rest[0].isspace():
            return False  # "/images are..." is a message
        self.action_image_from_chat(rest.strip(), from_command=True)
        return True

    def _source(self, typed: str, from_command: bool) -> ImageSource | None:
        view = self.query_one(ConversationView)
        turns = view.turns()
        leaf = turns[-1].message_id if turns else None
        if typed.strip():
            return ImageSource(typed, leaf, "your text", typed=True)
        selected = view.selected
        if selected is not None and selected.content.strip():
            what = (
                "the selected prompt"
                if not isinstance(selected, ReplyTurn)
                else "the selected reply"
            )
            return ImageSource(selected.content, selected.message_id, what, typed=from_command)
        last = view.last_reply()
        if last is not None and last.content.strip() and last.status != "streaming":
            return ImageSource(last.content, last.message_id, "the last reply", typed=from_command)
        return None

    def action_image_from_chat(self, typed: str | None = None, from_command: bool = False) -> None:
        if typed is None:
            typed = self.query_one(PromptInput).text
        source = self._source(typed, from_command)
        if source is None:
            self.notify(
                "Nothing to make an image of yet: type a description (or /image and one), "
                "select a turn (Alt+↑), or wait for a reply.",
                title="No image",
                severity="warning",
            )
            return
        model = self.current_model()
        if not model:
            self.notify(
                "Choose a model first (Ctrl+T): it writes the image prompt.", severity="warning"
            )
            return
        self.write_image_prompt(source, model)

    @work(exclusive=True, group="image-prompt", exit_on_error=False)
    async def write_image_prompt(self, source: ImageSource, model: str) -> None:
        from engines.image_requests import ImagePromptError, instruction_for, write_prompt

        options = self.current_options()
        instruction = instruction_for(options, self.lp.settings.chat.image_instruction)
        self.notify(
            f"{visible(model)} is writing an image prompt of {source.what}…",
            title="Image",
            markup=False,
        )
        try:
            written = await write_prompt(
                self.model_engine(model), model, instruction, source.text, options
            )
        except (ChatError, ImagePromptError) as exc:
            self.notify(
                f"No image prompt: {visible(str(exc))}. Nothing was queued; your text is kept.",
                title="No image",
                severity="error",
                markup=False,
                timeout=12,
            )
            return
        if written.note:
            self.notify(
                visible(written.note), title="Image prompt", severity="warning", markup=False
            )
        conversation_id = self.conversation.id if self.conversation else None
        if self.lp.settings.chat.image_queue_at_once:
            self.queue_chat_image(written.prompt, "", source, conversation_id)
            return

        def edited(result: EditedPrompt | None) -> None:
            if result is None:
                self.notify("Nothing was queued.", title="Image")
                return
            self.queue_chat_image(result.prompt, result.negative_prompt, source, conversation_id)

        from tui.widgets.image_prompt import ImagePromptDialog

        self.app.push_screen(
            ImagePromptDialog(
                written.prompt,
                title=f"Image prompt by {model}, of {source.what}: edit it, then queue it",
                note=written.note,
                negative=self.lp.settings.diffusion.negative_prompt,
            ),
            edited,
        )

    def queue_chat_image(
        self, prompt: str, negative: str, source: ImageSource, conversation_id: int | None
    ) -> None:
        """Queue the image with the Image screen's defaults, linked to where it came from."""
        from engines.diffusion import RequestError
        from engines.image_requests import request_from_prompt

        diffusion = self.lp.diffusion
        self._watch_queue()
        try:
            request = request_from_prompt(
                prompt, negative, self.lp.settings.diffusion, diffusion.limits
            )
            job = self.lp.image_queue.add(
                request,
                diffusion.model,
                origin=(conversation_id, source.message_id if conversation_id else None),
            )
        except (RequestError, StoreError) as exc:
            self.notify(
                f"Not queued: {visible(str(exc))}", title="No image", severity="error", markup=False
            )
            return
        self.lp.image_queue.claim()
        self.lp.run_image_queue()
        if source.typed:
            self.query_one(PromptInput).clear()
        where = (
            "it will appear in this conversation"
            if conversation_id is not None
            else "it will be in the gallery (F3, Ctrl+B)"
        )
        self.notify(
            f"Job #{job.id} queued: {where} once made (F3 shows its progress).", title="Image"
        )

    # -- images in the conversation ------------------------------------------------

    def _chat_queue_event(self, event: QueueEvent) -> None:
        """From the queue's worker thread: what concerns the chat, as messages."""
        from engines.queue import JobEnded, JobImageSaved

        if isinstance(event, JobImageSaved):
            self.post_message(ChatImageSaved(event.job_id, event.image.path))
        elif isinstance(event, JobEnded) and event.error:
            self.post_message(ChatJobFailed(event.job.id, event.error))

    @on(ChatImageSaved)
    def _chat_image_saved(self, event: ChatImageSaved) -> None:
        from engines.image_links import linked_image

        try:
            found = linked_image(self.lp.store, str(event.path))
        except StoreError:
            return
        if found is None:
            return
        image, origin = found
        if origin is None or self.conversation is None:
            return
        if origin.conversation_id != self.conversation.id:
            return
        view = self.query_one(ConversationView)
        turn = view.turn(origin.message_id) if origin.message_id is not None else None
        self._show_image(view, turn, image)

    @on(ChatJobFailed)
    def _chat_job_failed(self, event: ChatJobFailed) -> None:
        from engines.image_links import job_origin

        try:
            origin = job_origin(self.lp.store, event.job_id)
        except StoreError:
            return
        if origin is None:
            return
        self.notify(
            f"The image asked for in “{visible(origin.title)}” was not made: "
            f"{visible(event.error)}",
            title=f"Job #{event.job_id} failed",
            severity="error",
            markup=False,
            timeout=15,
        )

    def _show_image(self, view: ConversationView, turn: Turn | None, image: StoredImage) -> None:
        widget = ChatImage(image, self.lp.image_renderer)
        if turn is not None:
            turn.mount(widget)
        else:
            view.add(widget)
        view.anchor()

    def show_inline_images(self, messages: list[StoredMessage]) -> None:
        """The images the conversation's messages produced, under each (once the turns
        are mounted)."""
        from engines.image_links import images_of_messages

        if not messages:
            return
        try:
            found = images_of_messages(self.lp.store, [m.id for m in messages])
        except StoreError:
            return
        if not found:
            return

        def mount() -> None:
            view = self.query_one(ConversationView)
            for message_id, images in found.items():
                turn = view.turn(message_id)
                if turn is None:
                    continue
                pictures = [ChatImage(image, self.lp.image_renderer) for image in images]
                if turn.is_mounted:
                    turn.mount_all(pictures)
                else:  # below its text, once it is mounted (the turns above the last ones,
                    # or those of a conversation shown after the first frame, come later)
                    turn.call_after_refresh(turn.mount_all, pictures)

        # the app's queue: after the turns of a conversation shown after the first frame
        self.app.call_after_refresh(mount)

    @on(ChatImage.Opened)
    def _open_chat_image(self, event: ChatImage.Opened) -> None:
        from tui.widgets.image_viewer import ImageViewer

        self.app.push_screen(ImageViewer(event.image, self.lp.image_renderer))

    @on(ChatImage.AskedAbout)
    def _ask_about_chat_image(self, event: ChatImage.AskedAbout) -> None:
        self.ask_about(event.image.path)

    # -- the generate_image tool, as it is used --------------------------------------

    def _tool_event(self, event: ReplyEvent) -> None:
        """On the event loop: a reply's tool calls, drawn in its turn."""
        if not isinstance(event, ReplyToolUsed):
            return
        self._watch_queue()  # the tool queues its job through the app's queue
        if self.conversation is None or self.conversation.id != event.conversation_id:
            return
        turn = self.query_one(ConversationView).turn(event.reply_id)
        if isinstance(turn, ReplyTurn):
            turn.show_tools(event.uses)


async def ask_to_queue(app: App[Any], request: GenerationRequest, tool: ToolRequest) -> bool:
    """Ask the user whether to queue the image a model asked for through its tool."""
    from tui.widgets.dialogs import ConfirmDialog

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def answered(yes: bool | None) -> None:
        if not answer.done():
            answer.set_result(bool(yes))

    seed = f", seed {request.seed}" if request.seed is not None else ""
    dialog = ConfirmDialog(
        f"{tool.model} asks for an image: “{request.prompt}” "
        f"({request.width}×{request.height}, {request.steps} steps{seed}). Queue it?",
        yes="Queue",
        variant="primary",
        kept="Not queued: the model is told you declined.",
    )
    app.push_screen(dialog, answered)
    try:
        return await answer
    except asyncio.CancelledError:  # the reply was stopped while the question was open
        if dialog.is_attached and not answer.done():
            with contextlib.suppress(ScreenStackError):  # another dialog is above it
                dialog.dismiss(False)
        raise


def open_in_chat(app: App[Any], conversation_id: int, message_id: int | None) -> None:
    """To the Chat screen, the conversation open at the turn ``message_id`` (the gallery's
    "its chat")."""

    def show() -> None:
        screen = app.screen
        if not isinstance(screen, ChatImages):
            return
        open_conversation = getattr(screen, "open_conversation", None)
        if open_conversation is None or not open_conversation(conversation_id):
            app.notify("That conversation is not there any more.", severity="warning")
            return
        view = screen.query_one(ConversationView)
        turn = view.turn(message_id) if message_id is not None else None
        if turn is not None:
            view.call_after_refresh(view.select, turn)

    app.switch_mode("chat")
    app.call_after_refresh(show)
