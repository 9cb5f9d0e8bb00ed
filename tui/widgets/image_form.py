"""The generation form: every field reachable with Tab, read into a request."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Input, Label, Select, TextArea

from engines.config import DiffusionSettings
from engines.diffusion import SCHEDULERS, GenerationRequest
from engines.images import ImageParameters
from engines.limits import IMAGE_COUNT, IMAGE_GUIDANCE, IMAGE_SEED, IMAGE_STEPS, image_side_help
from tui.text import visible


class FormError(ValueError):
    """A field cannot be read; the message names it and what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ImageForm(Vertical):
    """Prompt, negative prompt, size, steps, guidance, seed, sampler and count."""

    def __init__(self, defaults: DiffusionSettings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.defaults = defaults

    def compose(self) -> ComposeResult:
        d = self.defaults
        yield Label("Prompt", classes="field-label")
        yield TextArea(
            id="image-prompt", soft_wrap=True, tab_behavior="focus", placeholder="What to draw"
        )
        yield Label("Negative prompt", classes="field-label")
        yield TextArea(
            d.negative_prompt,
            id="image-negative",
            soft_wrap=True,
            tab_behavior="focus",
            placeholder="What to avoid",
        )
        with Grid(id="image-fields"):
            yield Label("Width")
            yield Input(str(d.width), id="image-width", type="integer", compact=True)
            yield Label("Height")
            yield Input(str(d.height), id="image-height", type="integer", compact=True)
            yield Label("Steps")
            yield Input(str(d.steps), id="image-steps", type="integer", compact=True)
            yield Label("Guidance")
            yield Input(f"{d.guidance:g}", id="image-guidance", type="number", compact=True)
            yield Label("Seed")
            yield Input(
                "",
                id="image-seed",
                type="integer",
                placeholder="random",
                valid_empty=True,  # empty is a random seed, not an error
                compact=True,
            )
            yield Label("Count")
            yield Input("1", id="image-count", type="integer", compact=True)
        yield Label("Sampler", classes="field-label")
        yield Select(
            [(name, name) for name in SCHEDULERS],
            value=d.scheduler,
            allow_blank=False,
            id="image-scheduler",
            compact=True,
        )

    def _text(self, field: str) -> str:
        return self.query_one(f"#image-{field}", Input).value.strip()

    def _int(self, field: str, label: str, allowed: str) -> int:
        raw = self._text(field)
        try:
            return int(raw)
        except ValueError:
            raise FormError(field, f"{label}: {raw!r} is not a whole number; {allowed}") from None

    def request(self) -> GenerationRequest:
        """The form as a request (values still to be checked against the model's limits)."""
        prompt = self.query_one("#image-prompt", TextArea).text
        negative = self.query_one("#image-negative", TextArea).text
        guidance_raw = self._text("guidance")
        try:
            guidance = float(guidance_raw)
        except ValueError:
            raise FormError(
                "guidance",
                f"Guidance: {guidance_raw!r} is not a number; use {IMAGE_GUIDANCE.span()}",
            ) from None
        seed_raw = self._text("seed")
        seed = (
            None
            if not seed_raw
            else self._int("seed", "Seed", f"use {IMAGE_SEED.span()}, or leave it empty")
        )
        scheduler = self.query_one("#image-scheduler", Select).value
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            width=self._int("width", "Width", f"use {image_side_help()}"),
            height=self._int("height", "Height", f"use {image_side_help()}"),
            steps=self._int("steps", "Steps", f"use {IMAGE_STEPS.span()}"),
            guidance=guidance,
            seed=seed,
            scheduler=str(scheduler),
            count=self._int("count", "Count", f"use {IMAGE_COUNT.span()}"),
        )

    def fill(self, p: ImageParameters) -> None:
        """Fill the form from an image's own parameters ("reuse settings"). The PNG's text is
        outside text: its control characters are loaded as visible stand-ins, which the
        TextArea can draw without the terminal acting on them."""
        self.query_one("#image-prompt", TextArea).load_text(visible(p.prompt))
        self.query_one("#image-negative", TextArea).load_text(visible(p.negative_prompt))
        for field, value in (
            ("width", p.width),
            ("height", p.height),
            ("steps", p.steps),
            ("guidance", f"{p.guidance:g}"),
            ("seed", p.seed),
            ("count", 1),
        ):
            self.query_one(f"#image-{field}", Input).value = str(value)
        if p.scheduler in SCHEDULERS:
            self.query_one("#image-scheduler", Select).value = p.scheduler

    def focus_field(self, field: str) -> None:
        widget = {"prompt": "#image-prompt", "negative_prompt": "#image-negative"}.get(
            field, f"#image-{field}"
        )
        self.query_one(widget).focus()
