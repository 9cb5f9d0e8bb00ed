"""Prompts as AUTOMATIC1111 writes them, turned into text embeddings through compel.

The syntax (AUTOMATIC1111's "attention/emphasis"):

- ``(word)`` multiplies the attention to ``word`` by 1.1, ``((word))`` by 1.21;
- ``(word:1.3)`` sets a factor; ``[word]`` divides by 1.1;
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the characters themselves;
- ``BREAK`` (in capitals, a word of its own) ends a 75-token chunk early;
- an unclosed bracket weighs the rest of the prompt;
- ``<lora:name:weight>`` names a LoRA (taken out here; ``engines/loras.py`` applies it).

The text is cut into weighted fragments here; compel (a maintained library) tokenizes them,
splits prompts longer than 75 tokens into chunks of 75 each wrapped in start/end tokens and
padded to 77 (a full chunk ends after its last comma when that is at most 20 tokens back, as
in AUTOMATIC1111), encodes each chunk and joins them, and applies the weights. compel's own prompt syntax (``word+``, ``(word)1.3``) differs, so its parser is not
used: the fragments are handed to its embeddings provider directly.

The weights are applied compel's way: a token's embedding moves from the empty prompt's by
its factor (AUTOMATIC1111 multiplies the embedding, then restores the chunk's mean).

No torch at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

COMMA_BACKTRACK = 20
"""A chunk that fills up ends after its last comma when that comma is at most this many
tokens back, and the words after it start the next chunk (AUTOMATIC1111's default)."""

ROUND = 1.1
"""What one pair of round brackets multiplies the attention by (square ones divide by it)."""

BREAK = "BREAK"

LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
"""``<lora:name>``, ``<lora:name:0.8>``, ``<lora:name:0.8:0.5>`` (the text-encoder weight,
as AUTOMATIC1111 reads it, is the first number; a second one is ignored)."""

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]            # an escaped bracket or backslash
    | \\                    # a lone backslash
    | \(                    # open round
    | \[                    # open square
    | :\s*([+-]?[.\d]+)\s*\)  # ":1.3)" closes a round bracket with a factor
    | \)                    # close round
    | \]                    # close square
    | [^\\()\[\]:]+         # plain text
    | :                     # a colon that sets no factor
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class LoraUse:
    """One ``<lora:name:weight>`` in a prompt."""

    name: str
    weight: float


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as written, cut into BREAK-separated segments of weighted fragments."""

    segments: list[list[tuple[str, float]]] = field(default_factory=list)
    loras: list[LoraUse] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The words without syntax (what the pooled SDXL embedding reads)."""
        return " ".join("".join(t for t, _ in segment) for segment in self.segments)


class PromptError(ValueError):
    """A prompt that cannot be read; the message says where."""


def take_loras(prompt: str) -> tuple[str, list[LoraUse]]:
    """The prompt without its ``<lora:...>`` tags, and the LoRAs they name (the last weight
    wins when one is named twice)."""
    found: dict[str, float] = {}
    problems: list[str] = []
    for match in LORA_TAG.finditer(prompt):
        name, weight = match[2].strip(), (match[3] or "1").strip()
        try:
            value = float(weight)
        except ValueError:
            problems.append(f"{match[0]}: the weight {weight!r} is not a number")
            continue
        if not name:
            problems.append(f"{match[0]}: no LoRA name")
            continue
        found[name] = value
    if problems:
        raise PromptError("; ".join(problems))
    text = LORA_TAG.sub("", prompt)
    return text, [LoraUse(n, w) for n, w in found.items()]


def parse_attention(text: str) -> list[tuple[str, float]]:
    """AUTOMATIC1111's emphasis syntax read into (text, weight) fragments, with
    ``(BREAK, -1)`` between segments; neighbours of equal weight are merged."""
    out: list[list[Any]] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] *= factor

    for match in _TOKEN.finditer(text):
        piece, factor = match[0], match[1]
        if piece.startswith("\\") and len(piece) == 2:
            out.append([piece[1], 1.0])
        elif piece == "(":
            rounds.append(len(out))
        elif piece == "[":
            squares.append(len(out))
        elif factor is not None and rounds:
            try:
                scale(rounds.pop(), float(factor))
            except ValueError:  # "1.2.3": kept as text, as AUTOMATIC1111 would fail to read it
                out.append([piece, 1.0])
        elif piece == ")" and rounds:
            scale(rounds.pop(), ROUND)
        elif piece == "]" and squares:
            scale(squares.pop(), 1 / ROUND)
        else:
            for index, part in enumerate(_BREAK_SPLIT.split(piece)):
                if index:
                    out.append([BREAK, -1.0])
                out.append([part, 1.0])
    for start in rounds:
        scale(start, ROUND)
    for start in squares:
        scale(start, 1 / ROUND)
    merged: list[list[Any]] = []
    for item in out:
        if merged and merged[-1][1] == item[1] and item[1] != -1:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, float(w)) for t, w in merged if t or w == -1] or [("", 1.0)]


def parse_prompt(prompt: str) -> ParsedPrompt:
    """A prompt as written: its LoRAs taken out, the rest cut at BREAK into segments."""
    text, loras = take_loras(prompt)
    segments: list[list[tuple[str, float]]] = [[]]
    for piece, weight in parse_attention(text):
        if weight == -1:
            segments.append([])
        else:
            segments[-1].append((piece, weight))
    return ParsedPrompt([s or [("", 1.0)] for s in segments], loras)


class PromptEncoder:
    """Text embeddings for a loaded SD 1.x/2.x or SDXL pipeline, from prompts in
    AUTOMATIC1111's syntax, as the pipeline's ``prompt_embeds`` arguments."""

    def __init__(self, pipe: Any, inversions: dict[str, str] | None = None) -> None:
        from compel.embeddings_provider import ReturnedEmbeddingsType, SplitLongTextMode

        self.pipe = pipe
        self.inversions = inversions if inversions is not None else {}
        """Textual-inversion embeddings loaded into the pipeline: name -> its token."""
        self.xl = getattr(pipe, "text_encoder_2", None) is not None
        # SD 1/2 read the text encoder's last, normalized layer; SDXL the penultimate layer
        # of both, not normalized (as each pipeline's encode_prompt does)
        kind = (
            ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            if self.xl
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
        )
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if self.xl:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        provider = _chunks_class()
        self.providers = [
            provider(
                tokenizer=tokenizer,
                text_encoder=encoder,
                textual_inversion_manager=_Inversions(tokenizer, self.inversions),
                truncate=False,
                returned_embeddings_type=kind,
                # 75-token chunks; _chunks_class backs off to a comma as AUTOMATIC1111 does
                split_long_text_mode=SplitLongTextMode.BRUTAL,
            )
            for tokenizer, encoder in pairs
        ]

    def encode(self, prompt: str, negative: str) -> dict[str, Any]:
        """``prompt_embeds`` and ``negative_prompt_embeds`` (and SDXL's pooled ones), the
        two padded to the same number of chunks with the empty prompt's."""
        import torch

        with torch.no_grad():
            positive = self._encode(parse_prompt(prompt))
            if self.xl and not negative and self.pipe.config.get("force_zeros_for_empty_prompt"):
                # SDXL's own rule for an empty negative prompt
                negative_out = tuple(torch.zeros_like(t) for t in positive)
            else:
                negative_out = self._encode(parse_prompt(negative))
            embeds, negative_embeds = self._pad(positive[0], negative_out[0])
        out = {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}
        if self.xl:
            out["pooled_prompt_embeds"] = positive[1]
            out["negative_pooled_prompt_embeds"] = negative_out[1]
        return out

    def _encode(self, parsed: ParsedPrompt) -> tuple[Any, ...]:
        import torch

        chunks = []
        names = self._names()
        for segment in parsed.segments:
            texts = [t for t, _ in segment]
            if names is not None:
                texts = [names.sub(lambda m: self.inversions[m[0]], t) for t in texts]
            weights = [w for _, w in segment]
            per_encoder = [
                p.get_embeddings_for_weighted_prompt_fragments(
                    text_batch=[texts], fragment_weights_batch=[weights], device=p.device
                )
                for p in self.providers
            ]
            chunks.append(torch.cat(per_encoder, dim=-1))
        embeds = torch.cat(chunks, dim=1)
        if not self.xl:
            return (embeds,)
        # the pooled text comes from the first chunk, as AUTOMATIC1111's does
        first = "".join(t for t, _ in parsed.segments[0])
        pooled = self.providers[1].get_pooled_embeddings([first], device=self.providers[1].device)
        return embeds, pooled.to(embeds.dtype)

    def _names(self) -> re.Pattern[str] | None:
        """The embeddings' names as whole words, to be replaced by their tokens."""
        if not self.inversions:
            return None
        alternatives = "|".join(
            re.escape(n) for n in sorted(self.inversions, key=len, reverse=True)
        )
        return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")

    def _pad(self, a: Any, b: Any) -> tuple[Any, Any]:
        import torch

        if a.shape[1] == b.shape[1]:
            return a, b
        empty = self._encode(ParsedPrompt([[("", 1.0)]]))[0]
        while a.shape[1] < b.shape[1]:
            a = torch.cat([a, empty], dim=1)
        while b.shape[1] < a.shape[1]:
            b = torch.cat([b, empty], dim=1)
        return a, b

    def token_count(self, prompt: str) -> int:
        """Tokens in the prompt, without syntax, start and end markers."""
        parsed = parse_prompt(prompt)
        tokenizer = self.pipe.tokenizer
        return sum(
            len(tokenizer(t, add_special_tokens=False).input_ids)
            for segment in parsed.segments
            for t, _ in segment
        )


def _chunks_class() -> Any:
    """compel's embeddings provider, cutting long prompts where AUTOMATIC1111 does: at 75
    tokens, or after the last comma when it is at most COMMA_BACKTRACK tokens back."""
    from compel.embeddings_provider import EmbeddingsProvider

    class A1111Chunks(EmbeddingsProvider):  # type: ignore[misc]
        def _find_next_best_split_point(
            self, token_ids: list[int], max_length: int, *args: Any, **kwargs: Any
        ) -> int:
            if len(token_ids) <= max_length:
                return max_length
            comma = self.tokenizer.convert_tokens_to_ids(",</w>")
            for index in range(max_length - 1, max_length - 1 - COMMA_BACKTRACK, -1):
                if index >= 0 and token_ids[index] == comma:
                    return index + 1
            return max_length

    return A1111Chunks


class _Inversions:
    """compel's hook for textual-inversion tokens of several vectors: the one token of
    ``name`` becomes the tokens ``name name_1 ...`` that diffusers added for it."""

    def __init__(self, tokenizer: Any, names: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.names = names
        """The embeddings loaded, name -> token (shared with whoever loads them)."""

    def expand_textual_inversion_token_ids_if_necessary(self, token_ids: list[int]) -> list[int]:
        if not self.names:
            return token_ids
        vocab = self.tokenizer.get_vocab()
        expand: dict[int, list[int]] = {}
        for name in self.names.values():
            if name not in vocab:
                continue
            ids = [vocab[name]]
            while f"{name}_{len(ids)}" in vocab:
                ids.append(vocab[f"{name}_{len(ids)}"])
            expand[ids[0]] = ids
        out: list[int] = []
        for token in token_ids:
            out.extend(expand.get(token, (token,)))
        return out
