"""The generation form: every field reachable with Tab, read into a request."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Input, Label, Select, TextArea

from engines.config import DiffusionSettings
from engines.diffusion import (
    HIRES_UPSCALERS,
    MAX_HIRES_SCALE,
    MAX_STEPS,
    MAX_STRENGTH,
    MIN_HIRES_SCALE,
    MIN_STRENGTH,
    SCHEDULERS,
    GenerationRequest,
)
from engines.images import ImageParameters
from engines.limits import IMAGE_COUNT, IMAGE_GUIDANCE, IMAGE_SEED, IMAGE_STEPS, image_side_help
from tui.text import visible

STRENGTHS = f"use {MIN_STRENGTH:g} to {MAX_STRENGTH:g}"


class FormError(ValueError):
    """A field cannot be read; the message names it and what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ImageForm(Vertical):
    """Prompt, negative prompt, size, steps, guidance, seed, count, img2img (init image and
    strength), hires fix (factor, denoise, steps, upscaler) and sampler."""

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
            yield Label("Strength")
            yield Input(
                "0.75",
                id="image-strength",
                type="number",
                compact=True,
                tooltip=f"img2img: how much of the init image is redrawn ({STRENGTHS})",
            )
            yield Label("Hires ×")
            yield Input(
                "1",
                id="image-hires",
                type="number",
                compact=True,
                tooltip=f"Hires fix: upscale by this factor and redraw; 1 is off "
                f"({MIN_HIRES_SCALE:g} to {MAX_HIRES_SCALE:g})",
            )
            yield Label("Denoise")
            yield Input(
                "0.5",
                id="image-hires-strength",
                type="number",
                compact=True,
                tooltip=f"Hires fix: denoising strength of the second pass ({STRENGTHS})",
            )
            yield Label("Hi steps")
            yield Input(
                "",
                id="image-hires-steps",
                type="integer",
                placeholder="as steps",
                compact=True,
                tooltip="Hires fix: steps of the second pass (empty: as Steps)",
            )
        with Horizontal(id="image-init-row"):
            yield Label("Init")
            yield Input(
                "",
                id="image-init",
                placeholder="image to start from (img2img)",
                compact=True,
                tooltip="A PNG or JPEG to start from; empty makes the image from noise",
            )
        yield Label("Sampler · hires upscaler", classes="field-label")
        with Horizontal(id="image-sampler-row"):
            yield Select(
                [(name, name) for name in SCHEDULERS],
                value=d.scheduler,
                allow_blank=False,
                id="image-scheduler",
                compact=True,
            )
            yield Select(
                [(name, name) for name in HIRES_UPSCALERS],
                value=HIRES_UPSCALERS[0],
                allow_blank=False,
                id="image-upscaler",
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

    def _float(self, field: str, label: str, allowed: str) -> float:
        raw = self._text(field)
        try:
            return float(raw)
        except ValueError:
            raise FormError(field, f"{label}: {raw!r} is not a number; {allowed}") from None

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
            init_image=self._text("init"),
            strength=self._float("strength", "Strength", STRENGTHS),
            hires_scale=self._float(
                "hires", "Hires ×", f"use {MIN_HIRES_SCALE:g} (off) to {MAX_HIRES_SCALE:g}"
            ),
            hires_strength=self._float("hires-strength", "Denoise", STRENGTHS),
            hires_steps=(
                self._int("hires-steps", "Hi steps", f"use 0 to {MAX_STEPS}, or leave it empty")
                if self._text("hires-steps")
                else 0
            ),
            hires_upscaler=str(self.query_one("#image-upscaler", Select).value),
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
            ("seed", p.seed if p.seed >= 0 else ""),
            ("count", 1),
        ):
            self.query_one(f"#image-{field}", Input).value = str(value)
        if p.scheduler in SCHEDULERS:
            self.query_one("#image-scheduler", Select).value = p.scheduler
        hires = p.hires_upscale is not None and p.hires_upscale > 1
        self._set("hires", f"{p.hires_upscale:g}" if hires and p.hires_upscale else "1")
        if hires and p.denoising_strength is not None:
            self._set("hires-strength", f"{p.denoising_strength:g}")
        elif p.denoising_strength is not None:
            self._set("strength", f"{p.denoising_strength:g}")
        self._set("hires-steps", str(p.hires_steps) if p.hires_steps else "")
        if p.hires_upscaler in HIRES_UPSCALERS:
            self.query_one("#image-upscaler", Select).value = p.hires_upscaler

    def _set(self, field: str, value: str) -> None:
        self.query_one(f"#image-{field}", Input).value = value

    def set_init_image(self, path: str) -> None:
        """Start the next image from ``path`` (img2img)."""
        self._set("init", path)

    def insert_in_prompt(self, text: str) -> None:
        """Insert ``text`` at the prompt's cursor and give the prompt the focus."""
        prompt = self.query_one("#image-prompt", TextArea)
        prompt.insert(text)
        prompt.focus()

    def unknown_sampler(self, p: ImageParameters) -> str | None:
        """The image's sampler when the app has none of that name (shown, not used)."""
        return visible(p.scheduler) if p.scheduler and p.scheduler not in SCHEDULERS else None

    def focus_field(self, field: str) -> None:
        widget = {"prompt": "#image-prompt", "negative_prompt": "#image-negative"}.get(
            field, f"#image-{field}"
        )
        self.query_one(widget).focus()
