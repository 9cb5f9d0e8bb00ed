"""Images asked for from the chat (issue 14): the chat model writes (or improves) an image
prompt, and the ``generate_image`` tool a model can call, with its arguments checked.

No Textual here: the Chat screen and the tool runner (``engines/image_tool.py``) use these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.chat_types import ChatMessage, ChatOptions
from engines.diffusion import GenerationRequest, RequestError, SizeLimits, validate
from engines.limits import IMAGE_SEED, IMAGE_SIDE, IMAGE_STEPS

if TYPE_CHECKING:
    from engines.config import DiffusionSettings
    from engines.ollama_client import ChatEngine

IMAGE_PROMPT_MAX = 1000
"""Characters an image prompt may have when a model writes it (a Stable Diffusion prompt
is read 77 tokens at a time: this is already several chunks)."""
SOURCE_MAX = 8000
"""Characters of the text (a reply, a turn) a model reads to write an image prompt from."""
TOOL_NAME = "generate_image"
IMPROVE_INSTRUCTION = (
    "Improve this Stable Diffusion prompt: keep its subject and intent, and make it more "
    "vivid and precise (subject, setting, style, lighting, composition), at most 60 words."
    "{image} Answer with the new prompt alone: no quotes, no explanation."
)
WRITER_OPTIONS = ChatOptions(temperature=0.7, max_tokens=512)
"""How a model writes a prompt: a little freedom, and a prompt-sized answer."""


class ImagePromptError(ValueError):
    """A prompt the model wrote cannot be used; ``str()`` says why and what to do."""


class ToolArgumentError(ValueError):
    """A tool call whose arguments are refused; ``str()`` is the reason the model gets."""


@dataclass(frozen=True)
class WrittenPrompt:
    prompt: str
    note: str = ""
    """What was done to it (cut to the limit), to tell the user; empty: nothing."""


# -- writing a prompt --------------------------------------------------------------------

_FENCE = re.compile(r"^```[\w-]*\s*|\s*```$")
_LABEL = re.compile(r"^\s*(image\s+)?prompt\s*:\s*", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_QUOTES = ('"', "'", "“", "”", "«", "»", "`")


def clean_prompt(text: str) -> str:
    """What a model answered, as a prompt: no reasoning, code fence, "Prompt:" label or
    surrounding quotes; its lines joined."""
    text = _THINK.sub("", text).strip()
    text = _FENCE.sub("", text).strip()
    text = _LABEL.sub("", text)
    text = " ".join(text.split())
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def check_written(text: str, limit: int = IMAGE_PROMPT_MAX) -> WrittenPrompt:
    """A model's answer as an image prompt: an empty one is refused, a huge one is cut at
    a word boundary within ``limit`` characters (the note says so)."""
    prompt = clean_prompt(text)
    if not prompt:
        raise ImagePromptError(
            "the model wrote an empty image prompt: ask again, choose another model "
            "(Ctrl+T), or write the prompt yourself"
        )
    if len(prompt) <= limit:
        return WrittenPrompt(prompt)
    cut = prompt[: limit + 1]
    space = cut.rfind(" ")
    cut = (cut[:space] if space > limit // 2 else cut[:limit]).rstrip(" ,;")
    return WrittenPrompt(
        cut,
        f"the model wrote {len(prompt):,} characters: the prompt was cut to {len(cut):,} "
        f"(an image prompt may have {limit:,} at most)",
    )


def instruction_for(options: ChatOptions, configured: str) -> str:
    """The instruction a conversation's model follows: its preset's, else the config's."""
    return options.image_instruction.strip() or configured


def source_text(text: str) -> str:
    """The text to write a prompt from, within ``SOURCE_MAX`` characters."""
    text = text.strip()
    return text if len(text) <= SOURCE_MAX else text[:SOURCE_MAX] + "…"


async def write_prompt(
    engine: ChatEngine,
    model: str,
    instruction: str,
    text: str,
    options: ChatOptions | None = None,
) -> WrittenPrompt:
    """Ask ``model`` for an image prompt of ``text``, following ``instruction``. Raises
    ChatError (Ollama failed) or ImagePromptError (the answer cannot be used)."""
    if not text.strip():
        raise ImagePromptError(
            "there is nothing to make an image of: type a description, select a turn "
            "(Alt+↑), or wait for a reply"
        )
    opts = WRITER_OPTIONS
    if options is not None and options.keep_alive:
        opts = ChatOptions(**{**WRITER_OPTIONS.to_dict(), "keep_alive": options.keep_alive})
    history = [ChatMessage("user", f"{instruction}\n\nThe text:\n{source_text(text)}")]
    answer, _ = await engine.reply(model, history, opts)
    return check_written(answer)


async def improve_prompt(
    engine: ChatEngine, model: str, prompt: str, image: Path | None = None
) -> WrittenPrompt:
    """Ask ``model`` for a better version of ``prompt``; with ``image`` (a vision model),
    the image it made goes along."""
    if not prompt.strip():
        raise ImagePromptError("the prompt is empty: write one first, then improve it")
    seen = " The image it made is attached: fix what it got wrong." if image else ""
    instruction = IMPROVE_INSTRUCTION.format(image=seen)
    images: Sequence[str] = (str(image),) if image else ()
    history = [ChatMessage("user", f"{instruction}\n\nThe prompt:\n{prompt}", tuple(images))]
    answer, _ = await engine.reply(model, history, WRITER_OPTIONS)
    return check_written(answer)


# -- the generate_image tool ------------------------------------------------------------

ARGUMENTS = ("prompt", "negative_prompt", "width", "height", "steps", "seed")


def tool_schema() -> dict[str, Any]:
    """The ``generate_image`` tool, as Ollama's ``tools`` take it."""
    side = f"pixels, {IMAGE_SIDE.describe()}"
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": (
                "Generate an image with the local Stable Diffusion engine. Answers with the "
                "saved file's path and the seed, or with why it could not."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "prompt": {
                        "type": "string",
                        "description": "What the image shows: subject, setting, style, "
                        f"lighting; at most {IMAGE_PROMPT_MAX} characters",
                    },
                    "negative_prompt": {
                        "type": "string",
                        "description": "What the image must not show (optional)",
                    },
                    "width": {"type": "integer", "description": f"Width in {side} (optional)"},
                    "height": {"type": "integer", "description": f"Height in {side} (optional)"},
                    "steps": {
                        "type": "integer",
                        "description": f"Denoising steps, {IMAGE_STEPS.span()} (optional)",
                    },
                    "seed": {
                        "type": "integer",
                        "description": f"Seed, {IMAGE_SEED.span()}, to make it again (optional)",
                    },
                },
                "required": ["prompt"],
            },
        },
    }


def _whole(name: str, value: object) -> int:
    """A whole number as models write them (``512``, ``512.0``, ``"512"``)."""
    if isinstance(value, bool):
        raise ToolArgumentError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ToolArgumentError(f"{name} must be a whole number, not {value!r}")


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ToolArgumentError(f"{name} must be a string, not {value!r}")
    text = value.strip()
    if len(text) > limit:
        raise ToolArgumentError(
            f"{name} has {len(text):,} characters; it may have {limit:,} at most: shorten it"
        )
    return text


def request_from_arguments(
    arguments: Mapping[str, Any], defaults: DiffusionSettings, limits: SizeLimits | None = None
) -> GenerationRequest:
    """The job a ``generate_image`` call asks for: missing arguments take the Image
    screen's defaults; a bad one raises ToolArgumentError naming it and what is allowed."""
    unknown = sorted(k for k in arguments if k not in ARGUMENTS)
    if unknown:
        raise ToolArgumentError(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"{TOOL_NAME} takes {', '.join(ARGUMENTS)}"
        )
    given = {k: v for k, v in arguments.items() if v is not None}
    if "prompt" not in given:
        raise ToolArgumentError("prompt is missing: describe the image to generate")
    prompt = _text("prompt", given["prompt"], IMAGE_PROMPT_MAX)
    if not prompt:
        raise ToolArgumentError("prompt is empty: describe the image to generate")
    negative = _text("negative_prompt", given.get("negative_prompt", ""), IMAGE_PROMPT_MAX)
    width = _whole("width", given.get("width", defaults.width))
    height = _whole("height", given.get("height", defaults.height))
    steps = _whole("steps", given.get("steps", defaults.steps))
    seed = _whole("seed", given["seed"]) if "seed" in given else None
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative or defaults.negative_prompt,
        width=width,
        height=height,
        steps=steps,
        guidance=defaults.guidance,
        seed=None if seed == -1 else seed,
        scheduler=defaults.scheduler,
    )
    try:
        return validate(request, limits or SizeLimits())
    except RequestError as exc:
        raise ToolArgumentError(str(exc)) from None


def request_from_prompt(
    prompt: str, negative: str, defaults: DiffusionSettings, limits: SizeLimits | None = None
) -> GenerationRequest:
    """A job of the Image screen's defaults for a prompt the user saw (and perhaps edited);
    RequestError says what is wrong."""
    if len(prompt) > IMAGE_PROMPT_MAX:
        raise RequestError(
            f"the prompt has {len(prompt):,} characters; it may have {IMAGE_PROMPT_MAX:,} "
            "at most: shorten it"
        )
    request = GenerationRequest(
        prompt=prompt.strip(),
        negative_prompt=negative.strip(),
        width=defaults.width,
        height=defaults.height,
        steps=defaults.steps,
        guidance=defaults.guidance,
        scheduler=defaults.scheduler,
    )
    return validate(request, limits or SizeLimits())


async def improver(engine: ChatEngine, vision_model: str, default_model: str) -> tuple[str, bool]:
    """The model that improves a prompt (``[chat] vision_model``, else the default one),
    and whether it can see images (then the image goes along)."""
    from engines.chat_types import ChatError

    model = vision_model or default_model
    try:
        capabilities = (await engine.show(model)).capabilities
    except ChatError:
        capabilities = ()
    return model, "vision" in capabilities
