""" "Improve this prompt" on the Image screen (issue 14), kept out of ``image.py``: a chat
model rewrites the prompt (seeing the image, when it is a vision model); the user edits
the new one, and it goes into the form to queue. :class:`ImageScreen` is one."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from textual import work
from textual.binding import Binding
from textual.widgets import TextArea

from engines.chat_types import ChatError
from tui.screens.base import AppScreen
from tui.text import visible


class ImagePromptActions(AppScreen[None]):
    """The Image screen's "Improve this prompt"."""

    BINDINGS = [
        Binding(
            "alt+i",
            "improve_prompt",
            "Improve",
            show=False,
            tooltip="Improve this prompt: a chat model rewrites the form's prompt (seeing the "
            "image shown, if it is a vision model); you edit it, it goes into the form",
            id="image.improve",
        ),
    ]

    shown_batch: list[Path]

    def action_improve_prompt(self) -> None:
        prompt = self.query_one("#image-prompt", TextArea).text
        shown = self.shown_batch[-1] if self.shown_batch else None
        self.improve(prompt, shown, check_image=True)

    @work(exclusive=True, group="improve-prompt", exit_on_error=False)
    async def improve(self, prompt: str, image: Path | None, *, check_image: bool = False) -> None:
        """Ask for a better ``prompt``; ``image`` (the one it made) goes along to a vision
        model. With ``check_image``, only if the image was made from this very prompt."""
        from engines.image_requests import ImagePromptError, improve_prompt, improver
        from engines.images import read_parameters

        settings = self.lp.settings
        engine = self.lp.chat
        if not prompt.strip():
            self.notify(
                "The prompt is empty: write one first, then improve it (Alt+I).",
                title="Improve",
                severity="warning",
            )
            return
        try:
            model, sees = await improver(
                engine, settings.chat.vision_model, settings.ollama.default_model
            )
            if image is not None and check_image:
                with contextlib.suppress(OSError, ValueError):
                    made_from = (await asyncio.to_thread(read_parameters, image)).prompt
                    image = image if made_from.strip() == prompt.strip() else None
            image = image if sees else None
            self.notify(
                f"{visible(model)} is improving the prompt"
                + (" (it sees the image)…" if image else "…"),
                title="Improve",
                markup=False,
            )
            written = await improve_prompt(engine, model, prompt, image)
        except (ChatError, ImagePromptError) as exc:
            self.notify(
                f"Not improved: {visible(str(exc))}. The form is as it was.",
                title="Improve",
                severity="error",
                markup=False,
                timeout=12,
            )
            return

        def chosen(result: object) -> None:
            from tui.widgets.image_prompt import EditedPrompt

            if not isinstance(result, EditedPrompt):
                self.notify("The form is as it was.", title="Improve")
                return
            self.query_one("#image-prompt", TextArea).load_text(result.prompt)
            if result.negative_prompt:
                self.query_one("#image-negative", TextArea).load_text(result.negative_prompt)
            self.query_one("#image-prompt", TextArea).focus()
            self.notify("The form holds the improved prompt: Ctrl+G queues it.", title="Improve")

        from tui.widgets.image_prompt import ImagePromptDialog

        negative = self.query_one("#image-negative", TextArea).text
        self.app.push_screen(
            ImagePromptDialog(
                written.prompt,
                title=f"Improved by {model}: edit it; it goes into the form",
                note=written.note,
                negative=negative,
                accept="Use",
            ),
            chosen,
        )
