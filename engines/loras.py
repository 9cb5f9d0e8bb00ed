"""LoRAs and textual-inversion embeddings from the user's folders, applied to a pipeline.

LoRAs go through diffusers' LoRA API (peft): ``load_lora_weights`` once per file, then
``set_adapters`` with the weights the prompt asks for. A LoRA the prompt no longer names is
deleted; when none is left the UNet and text encoders get their own layers back
(``unload_lora_weights``), so a prompt without a LoRA makes the base model's image exactly.

Embeddings (AUTOMATIC1111's ``.pt``/``.safetensors``, diffusers' ``.bin``, SDXL's pairs with
``clip_l``/``clip_g``) are loaded with ``load_textual_inversion`` the first time a prompt
uses their name; they change only prompts that hold that name, so they stay loaded.

Hashes are AUTOMATIC1111's short hashes (the first 12 hex digits of a SHA-256): a LoRA in
safetensors is hashed without its header (the "addnet" hash), anything else whole. They are
what the PNG records as ``Lora hashes`` and ``TI hashes``.

No torch at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.prompts import LoraUse

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


class NetworkError(Exception):
    """A LoRA or embedding cannot be used; the message names it and says why."""


def files_by_name(folder: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Every file in ``folder`` (and below) with one of ``suffixes``, by its name without
    the suffix, as AUTOMATIC1111 names them (the first found wins a clash)."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


_HASHES: dict[tuple[Path, int, int, bool], str] = {}


def short_hash(path: Path, *, addnet: bool = False) -> str:
    """AUTOMATIC1111's short hash of a file (cached by path, size and time)."""
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime_ns, addnet)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            if addnet and path.suffix == ".safetensors":
                (length,) = struct.unpack("<Q", f.read(8))
                f.seek(8 + length)
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()[:12]
    return _HASHES[key]


def _version(path: Path) -> tuple[Path, int, int]:
    stat = path.stat()
    return path, stat.st_size, stat.st_mtime_ns


def _adapter_name(name: str) -> str:
    """A peft adapter name (no dots: they name modules) for a LoRA's file name."""
    return "lora_" + re.sub(r"\W", "_", name)


@dataclass(frozen=True)
class Applied:
    """What the prompt used: names with their short hashes, for the PNG."""

    loras: tuple[tuple[str, str], ...] = ()
    embeddings: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def _text(pairs: tuple[tuple[str, str], ...]) -> str:
        return ", ".join(f"{name}: {digest}" for name, digest in pairs)

    @property
    def lora_hashes(self) -> str:
        return self._text(self.loras)

    @property
    def ti_hashes(self) -> str:
        return self._text(self.embeddings)


class Networks:
    """The LoRAs and embeddings of one loaded pipeline."""

    def __init__(self, pipe: Any, loras: Path | None, embeddings: Path | None) -> None:
        self.pipe = pipe
        self.lora_folder = loras
        self.embedding_folder = embeddings
        self.loaded: dict[str, str] = {}
        """LoRA name -> its adapter name, for those loaded into the pipeline now."""
        self._versions: dict[str, tuple[Path, int, int]] = {}
        """LoRA name -> (file, size, mtime) as loaded: a file replaced on disk is reloaded."""
        self.inversions: dict[str, str] = {}
        """Embedding name -> the token it was loaded as (``<name>``: a name may be a word
        the tokenizer already has); the prompt encoder reads this."""
        self._inversion_hashes: dict[str, str] = {}

    # -- LoRAs ------------------------------------------------------------------------

    def lora_names(self) -> list[str]:
        return sorted(files_by_name(self.lora_folder, LORA_SUFFIXES))

    def use_loras(self, uses: list[LoraUse]) -> tuple[tuple[str, str], ...]:
        """Make the pipeline's LoRAs exactly ``uses`` (with their weights); returns their
        names and hashes. NetworkError names a LoRA that is missing or does not fit."""
        files = files_by_name(self.lora_folder, LORA_SUFFIXES)
        missing = [u.name for u in uses if u.name not in files]
        if missing:
            where = self.lora_folder or "[paths] loras"
            known = ", ".join(sorted(files)) or "none"
            raise NetworkError(
                f"LoRA {', '.join(repr(m) for m in missing)} not found in {where} "
                f"(LoRAs there: {known})"
            )
        wanted = {u.name for u in uses}

        def replaced(name: str) -> bool:
            return name not in files or self._versions.get(name) != _version(files[name])

        stale = [name for name in self.loaded if name not in wanted or replaced(name)]
        if stale and len(stale) == len(self.loaded):
            self.pipe.unload_lora_weights()  # the model's own layers back, exactly
            self.loaded.clear()
        elif stale:
            self.pipe.delete_adapters([self.loaded.pop(name) for name in stale])
        for use in uses:
            if use.name not in self.loaded:
                self._load_lora(use.name, files[use.name])
        if uses:
            self.pipe.set_adapters(
                [self.loaded[u.name] for u in uses], adapter_weights=[u.weight for u in uses]
            )
        return tuple((u.name, short_hash(files[u.name], addnet=True)) for u in uses)

    def _load_lora(self, name: str, path: Path) -> None:
        adapter = _adapter_name(name)
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=adapter)
        except Exception as exc:
            with contextlib.suppress(Exception):  # nothing of it may have been loaded
                self.pipe.delete_adapters([adapter])
            if not self.loaded:
                try:
                    self.pipe.unload_lora_weights()
                except Exception:
                    log.debug("nothing to unload after a failed LoRA", exc_info=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NetworkError(
                f"LoRA {name!r} ({path.name}) does not fit this model: {first[:300]}"
            ) from exc
        self.loaded[name] = adapter
        self._versions[name] = _version(path)
        log.info("LoRA loaded", extra={"lora": name})

    # -- embeddings -------------------------------------------------------------------

    def embedding_names(self) -> list[str]:
        return sorted(files_by_name(self.embedding_folder, EMBEDDING_SUFFIXES))

    def use_embeddings(self, *texts: str) -> tuple[tuple[str, str], ...]:
        """Load the embeddings whose names the texts use; returns those used, hashed."""
        files = files_by_name(self.embedding_folder, EMBEDDING_SUFFIXES)
        used: list[tuple[str, str]] = []
        for name, path in files.items():
            pattern = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
            if not any(pattern.search(text) for text in texts):
                continue
            if name not in self.inversions:
                self._load_embedding(name, path)
            used.append((name, self._inversion_hashes[name]))
        return tuple(used)

    def _load_embedding(self, name: str, path: Path) -> None:
        pipe = self.pipe
        token = f"<{name}>"
        try:
            state = _read_weights(path)
            xl = getattr(pipe, "text_encoder_2", None) is not None
            if xl:
                if "clip_l" not in state or "clip_g" not in state:
                    raise NetworkError(
                        f"embedding {name!r} is for SD 1.x/2.x (no clip_l and clip_g vectors); "
                        "this model is SDXL"
                    )
                pipe.load_textual_inversion(
                    state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                    tokenizer=pipe.tokenizer,
                )  # fmt: skip
                pipe.load_textual_inversion(
                    state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                    tokenizer=pipe.tokenizer_2,
                )  # fmt: skip
            else:
                if "clip_l" in state:
                    raise NetworkError(
                        f"embedding {name!r} is for SDXL (clip_l and clip_g vectors); "
                        "this model is not"
                    )
                pipe.load_textual_inversion(state, token=token)
        except NetworkError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NetworkError(
                f"embedding {name!r} ({path.name}) does not fit this model: {first[:300]}"
            ) from exc
        self.inversions[name] = token
        self._inversion_hashes[name] = short_hash(path)
        log.info("embedding loaded", extra={"embedding": name})


def _read_weights(path: Path) -> dict[str, Any]:
    """An embedding file's tensors (safetensors, or a weights-only torch pickle)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise NetworkError(f"{path.name} holds no embedding")
    return data
