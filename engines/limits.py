"""Every numeric limit of the app, defined once.

Config validation (``engines/config.py``), request validation (``engines/diffusion.py``), the
image form, the chat options dialog, the CLI's help and the README all read these, so they
can never disagree. Each :class:`Limit` knows how to say what it allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """An inclusive range of numbers, optionally whole and a multiple of a step."""

    lo: float
    hi: float
    whole: bool = True
    multiple_of: int | None = None

    def allows(self, value: float) -> bool:
        if isinstance(value, bool) or math.isnan(value):
            return False
        if self.whole and value != int(value):
            return False
        if not self.lo <= value <= self.hi:
            return False
        return not (self.multiple_of and value % self.multiple_of)

    def span(self, between: str = " to ") -> str:
        """``64 to 2048``, ``0 to 30``; ``between`` replaces the " to "."""
        return f"{_number(self.lo)}{between}{_number(self.hi)}"

    def describe(self) -> str:
        """What is allowed, for an error message: ``a multiple of 8 from 64 to 2048``."""
        if self.multiple_of:
            return f"a multiple of {self.multiple_of} from {self.span()}"
        noun = "a whole number" if self.whole else "a number"
        return f"{noun} from {self.span()}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


# -- images -----------------------------------------------------------------------------------

IMAGE_SIDE = Limit(64, 2048, multiple_of=8)
"""Width and height in pixels of SD 1.x/2.x models, of the form and of ``[diffusion]``."""
IMAGE_SIDE_XL = Limit(64, 3072, multiple_of=8)
"""Width and height an SDXL model takes."""
IMAGE_STEPS = Limit(1, 150)
"""Denoising steps."""
IMAGE_GUIDANCE = Limit(0, 30, whole=False)
"""Guidance (CFG) scale."""
IMAGE_COUNT = Limit(1, 16)
"""Images made by one request."""
IMAGE_SEED = Limit(0, 2**32 - 1)
"""An image seed (empty: a random one, always recorded)."""

# -- chat (a conversation's options and their [chat]/[ollama] defaults) -----------------------

CHAT_TEMPERATURE = Limit(0, 2, whole=False)
"""Sampling temperature."""
CHAT_CONTEXT_LENGTH = Limit(0, 1_048_576)
"""Context window in tokens (num_ctx); 0 keeps the model's own."""
CHAT_MAX_TOKENS = Limit(1, 1_048_576)
"""Most tokens one reply may have (num_predict)."""
CHAT_SEED = Limit(-1, 2**31 - 1)
"""Sampling seed; -1 picks a new one for every reply."""
CHAT_TOP_P = Limit(0, 1, whole=False)
"""Nucleus sampling: the smallest set of tokens whose probabilities add up to this."""
CHAT_TOP_K = Limit(0, 1000)
"""Sample from the k most likely tokens (0: no limit)."""
CHAT_MIN_P = Limit(0, 1, whole=False)
"""Drop tokens less likely than this fraction of the most likely one."""
CHAT_REPEAT_PENALTY = Limit(0, 5, whole=False)
"""How hard repeated tokens are penalised (1: not at all)."""
CHAT_REPEAT_LAST_N = Limit(0, 1_048_576)
"""How far back the repeat penalty looks, in tokens (0: off)."""
CHAT_STOP_COUNT = Limit(0, 16)
"""How many stop sequences a conversation may have."""
CHAT_FILE_KB = Limit(1, 10_240)
"""Largest text file attached as context, in kilobytes."""
CHAT_IMAGE_MB = Limit(1, 200)
"""Largest image file attached, in megabytes (it is scaled down before it is sent)."""
CHAT_IMAGE_SIDE = Limit(64, 8192)
"""Longest side, in pixels, of an image sent to a vision model."""
CHAT_CONTEXT_WARN = Limit(50, 99)
"""Percent of the context window at which the Chat screen warns that old messages will drop."""


def image_side_help() -> str:
    """What the CLI and the form say about a width or height."""
    return f"{IMAGE_SIDE.describe()} ({IMAGE_SIDE_XL.span()} with an SDXL model)"


# -- Ollama servers ---------------------------------------------------------------------------

OLLAMA_TIMEOUT = Limit(1, 3600, whole=False)
"""Seconds to wait for an Ollama server (``[ollama] timeout`` and each of ``[ollama] hosts``)."""
