"""A tiny Stable Diffusion 1.x pipeline with random weights, built locally for the tests.

No model weights can be downloaded on the machines these tests run on, so the tests build
their own pipeline: the same classes and the same layout as SD 1.x (``StableDiffusionPipeline``
with ``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, ``CLIPTokenizer`` and
``PNDMScheduler``), only tiny and with random weights drawn from a fixed seed, so every build
gives the same tensors and the same pixels.

Three forms, each what a user might point the app at:

- :func:`build_tiny_pipeline_folder`: a diffusers folder (``save_pretrained``, safetensors),
  what ``AutoPipelineForText2Image.from_pretrained(folder, local_files_only=True)`` loads.
- :func:`build_tiny_single_file`: one ``.safetensors`` checkpoint of the same weights in the
  original LDM/CompVis key layout (``model.diffusion_model.*``, ``first_stage_model.*``,
  ``cond_stage_model.transformer.text_model.*``), like the files people download from model
  sites.
- :func:`build_single_file_config`: a folder of configs and tokenizer files only (no
  weights), what ``StableDiffusionPipeline.from_single_file(path, config=<folder>,
  local_files_only=True)`` needs to load that checkpoint offline.

Sizes the tiny pipeline accepts: the VAE has two blocks, so ``pipe.vae_scale_factor`` is 2
(not SD's 8) and a 64x64 image has 32x32 latents. ``StableDiffusionPipeline.check_inputs``
still demands that height and width be multiples of 8 (hard-coded there), and the UNet copes
with any latent size, so any multiple of 8 works, 8x8 included. The default size (when the
caller passes none) is ``unet.config.sample_size * vae_scale_factor`` = 64x64.

Everything here runs on the CPU in about a second; no network, no environment variables.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    import torch

#: The seed every component's random weights are drawn from (one ``manual_seed`` per component,
#: so changing one component's shape leaves the others' weights as they were).
SEED: Final = 0

#: The image side the tiny pipeline makes by default (``sample_size`` 32 x VAE scale factor 2).
TINY_IMAGE_SIZE: Final = 64

#: Heights and widths must be multiples of this (``StableDiffusionPipeline.check_inputs``).
TINY_SIZE_MULTIPLE: Final = 8

#: The VAE's downscale: two blocks, one downsampler, so latents are half the image's side.
TINY_VAE_SCALE_FACTOR: Final = 2

#: The prompt length, as SD 1.x's CLIP tokenizer and text encoder have it.
MAX_PROMPT_TOKENS: Final = 77

#: The width of the text encoder's hidden states, and so the UNet's cross-attention width.
TEXT_HIDDEN_SIZE: Final = 32

#: Rows in the text encoder's token embedding; the tokenizer's vocabulary uses fewer ids.
TEXT_VOCAB_SIZE: Final = 1000

BOS_TOKEN: Final = "<|startoftext|>"
EOS_TOKEN: Final = "<|endoftext|>"

#: The checkpoint's file name in the ``tiny_sd_single_file`` fixture.
SINGLE_FILE_NAME: Final = "tiny-sd15.safetensors"

#: The folder components that hold weights (and whose ``config.json`` the config folder keeps).
WEIGHTED_COMPONENTS: Final = ("unet", "vae", "text_encoder")


class TinySingleFile(NamedTuple):
    """What the ``tiny_sd_single_file`` fixture gives: a checkpoint and its config folder."""

    checkpoint: Path
    """The LDM-layout ``.safetensors`` file (:func:`build_tiny_single_file`)."""
    config: Path
    """The configs-and-tokenizer folder to pass as ``config=`` (:func:`build_single_file_config`)."""


# Words whose BPE merges the tiny vocabulary holds, so that common prompts become a few
# multi-letter tokens rather than one token per letter (any text still tokenizes: every byte
# has a token of its own).
_MERGE_WORDS: Final = (
    *("a", "photo", "of", "the", "cat", "dog", "astronaut", "riding", "horse", "on", "mars"),
    *("painting", "portrait", "landscape", "in", "style", "oil", "city", "at", "night"),
    *("sunset", "mountain", "lake", "forest", "red", "blue", "green", "with", "and", "high"),
    *("quality", "detailed", "digital", "art", "by", "an", "old", "man", "woman", "house"),
    *("tree", "sky"),
)

# ---------------------------------------------------------------------------------------------
# The tokenizer: CLIP's byte-level BPE over a vocabulary small enough for a 1000-row embedding.
# ---------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's map from each of the 256 bytes to a printable character.

    Byte-level BPE first turns text into UTF-8 bytes and each byte into one of these characters,
    so a vocabulary holding all 256 of them (and their ``</w>`` end-of-word forms) can spell any
    text at all: nothing is ever unknown.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def tiny_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny tokenizer's vocabulary and merges, in CLIP's order.

    CLIP's own vocabulary is laid out as: the 256 byte characters, the same 256 with ``</w>``
    (a character that ends a word), then one token per merge, then ``<|startoftext|>`` and
    ``<|endoftext|>`` last. This one keeps that layout with merges that spell
    :data:`_MERGE_WORDS` letter by letter (``c a`` → ``ca``, ``ca t</w>`` → ``cat</w>``), about
    660 tokens in all, so every id fits the text encoder's 1000-row embedding.
    """
    byte_chars = bytes_to_unicode()
    base = list(byte_chars.values())
    tokens = base + [f"{char}</w>" for char in base]
    merges: list[tuple[str, str]] = []
    for word in _MERGE_WORDS:
        encoded = "".join(byte_chars[b] for b in word.encode("utf-8"))
        if len(encoded) < 2:
            continue
        head = encoded[0]
        for index, char in enumerate(encoded[1:], start=1):
            tail = f"{char}</w>" if index == len(encoded) - 1 else char
            pair = (head, tail)
            if pair not in merges:
                merges.append(pair)
                tokens.append(head + tail)
            head += tail
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    if len(vocab) > TEXT_VOCAB_SIZE:  # pragma: no cover - a guard for whoever edits the words
        raise ValueError(f"{len(vocab)} tokens do not fit a {TEXT_VOCAB_SIZE}-row embedding")
    return vocab, merges


def write_tiny_clip_tokenizer_files(dest: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's file formats) into ``dest``; return it."""
    vocab, merges = tiny_clip_vocab()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (dest / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


# ---------------------------------------------------------------------------------------------
# The pipeline in diffusers' folder layout.
# ---------------------------------------------------------------------------------------------


def build_tiny_pipeline(tokenizer_files: Path) -> Any:
    """A tiny SD 1.x ``StableDiffusionPipeline`` in memory, random weights from :data:`SEED`, on the CPU, fp32.

    The UNet is SD 1.x's in two levels instead of four, with two ResNets a level, conv (not
    linear) projections in the transformers and 8 heads. Its cross-attention sits in the lower
    level (``DownBlock2D, CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D, UpBlock2D``, as in
    diffusers' own fast tests), not the upper one as SD's would: self-attention over the 32x32
    latents of a 64x64 image costs five times the rest of a CPU step, over 16x16 it is cheap.
    ``tokenizer_files`` is a folder holding ``vocab.json`` and ``merges.txt`` (see
    :func:`write_tiny_clip_tokenizer_files`).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # A local folder: nothing is fetched. (``local_files_only=True`` here would be saved into
    # ``tokenizer_config.json`` by transformers 5, which keeps every load argument.)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_files, model_max_length=MAX_PROMPT_TOKENS)

    # The weights are drawn under a forked RNG: a fixed seed per component, and the caller's
    # global torch RNG state is left as it was (other tests may be relying on it).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            sample_size=TINY_IMAGE_SIZE // TINY_VAE_SCALE_FACTOR,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN_SIZE,
            attention_head_dim=8,  # a head count, despite the name (as in SD 1.x's config)
        )

        torch.manual_seed(SEED)
        vae = AutoencoderKL(  # type: ignore[no-untyped-call]
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            layers_per_block=2,
            sample_size=TINY_IMAGE_SIZE,
        )

        torch.manual_seed(SEED)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=TEXT_VOCAB_SIZE,
                hidden_size=TEXT_HIDDEN_SIZE,
                intermediate_size=64,
                projection_dim=TEXT_HIDDEN_SIZE,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=MAX_PROMPT_TOKENS,
                hidden_act="quick_gelu",
                layer_norm_eps=1e-5,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        ).eval()  # type: ignore[no-untyped-call]

    # SD 1.5's own scheduler config (PNDM, PLMS steps only).
    scheduler = PNDMScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )

    return StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_tiny_pipeline_folder(dest: Path) -> Path:
    """Save the tiny pipeline as a diffusers folder at ``dest`` (created) and return ``dest``.

    The layout is SD 1.5's repository's: ``model_index.json``, ``unet/``, ``vae/`` and
    ``text_encoder/`` (``config.json`` + ``*.safetensors``), ``scheduler/`` and ``tokenizer/``
    (which also keeps CLIP's ``vocab.json`` and ``merges.txt``). It loads offline with
    ``AutoPipelineForText2Image.from_pretrained(dest, local_files_only=True)`` or
    ``StableDiffusionPipeline.from_pretrained(...)``; ``safety_checker`` and
    ``feature_extractor`` are ``null`` in ``model_index.json`` and ``requires_safety_checker``
    is false, so loading neither needs nor warns about them.
    """
    dest.mkdir(parents=True, exist_ok=True)
    scratch = dest / "_tokenizer_files"
    write_tiny_clip_tokenizer_files(scratch)
    pipe = build_tiny_pipeline(scratch)
    pipe.save_pretrained(dest, safe_serialization=True)
    # transformers 5 writes tokenizer.json; keep CLIP's classic files beside it too, as SD
    # repositories have them (and older loaders read only those).
    for name in ("vocab.json", "merges.txt"):
        if not (dest / "tokenizer" / name).exists():
            shutil.copyfile(scratch / name, dest / "tokenizer" / name)
    shutil.rmtree(scratch)
    return dest


# ---------------------------------------------------------------------------------------------
# The same weights as one checkpoint in the original LDM/CompVis layout.
# ---------------------------------------------------------------------------------------------

LDM_UNET_PREFIX: Final = "model.diffusion_model."
LDM_VAE_PREFIX: Final = "first_stage_model."
LDM_TEXT_PREFIX: Final = "cond_stage_model.transformer.text_model."

# diffusers' ResNet parameter names → LDM's ResBlock names (the inverse of
# ``diffusers.loaders.single_file_utils.update_unet_resnet_ldm_to_diffusers``).
_UNET_RESNET_NAMES: Final = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

_UNET_TOP_LEVEL: Final = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

# diffusers' VAE attention names → LDM's AttnBlock names (``update_vae_attentions_ldm_to_diffusers``).
_VAE_ATTENTION_NAMES: Final = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _split_param(key: str) -> tuple[str, str]:
    """``"a.b.weight"`` → ``("a.b", "weight")``."""
    module, _, param = key.rpartition(".")
    return module, param


def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """One diffusers ``UNet2DConditionModel`` key → its key in LDM's ``UNetModel`` (no prefix).

    LDM numbers its blocks flat. ``input_blocks.0`` is ``conv_in``; then each level ``b`` holds
    ``layers_per_block`` (L) ``[ResBlock, SpatialTransformer?]`` entries and, except the last
    level, one ``[Downsample]`` entry, so level ``b``'s layer ``j`` is ``input_blocks.{1 +
    b(L+1) + j}`` and its downsampler ``input_blocks.{1 + b(L+1) + L}.0.op``. The middle is
    ``[ResBlock, SpatialTransformer, ResBlock]``. Going up, each level has L+1 entries,
    ``output_blocks.{b(L+1) + j}``, and the upsampler rides in the level's last entry after the
    ResBlock and the transformer, if any (``.2.conv`` with attention, ``.1.conv`` without).
    Transformer parameters keep their names. The inverse of diffusers'
    ``convert_ldm_unet_checkpoint``.
    """
    layers = int(config["layers_per_block"])
    module, param = _split_param(key)
    if module in _UNET_TOP_LEVEL:
        return f"{_UNET_TOP_LEVEL[module]}.{param}"

    def resnet(rest: str) -> str:
        name, _, tail = rest.partition(".")
        return f"{_UNET_RESNET_NAMES[name]}.{tail}"

    if match := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        block, layer, rest = int(match[1]), int(match[2]), match[3]
        return f"input_blocks.{1 + block * (layers + 1) + layer}.0.{resnet(rest)}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        block, layer, rest = int(match[1]), int(match[2]), match[3]
        return f"input_blocks.{1 + block * (layers + 1) + layer}.1.{rest}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        block, param = int(match[1]), match[2]
        return f"input_blocks.{1 + block * (layers + 1) + layers}.0.op.{param}"
    if match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(match[1])}.{resnet(match[2])}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{match[1]}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        block, layer, rest = int(match[1]), int(match[2]), match[3]
        return f"output_blocks.{block * (layers + 1) + layer}.0.{resnet(rest)}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        block, layer, rest = int(match[1]), int(match[2]), match[3]
        return f"output_blocks.{block * (layers + 1) + layer}.1.{rest}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        block, param = int(match[1]), match[2]
        has_attention = "CrossAttn" in config["up_block_types"][block]
        slot = 2 if has_attention else 1
        return f"output_blocks.{block * (layers + 1) + layers}.{slot}.conv.{param}"
    raise ValueError(f"no LDM key for the UNet's {key!r}")


def vae_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """One diffusers ``AutoencoderKL`` key → its key in LDM's ``AutoencoderKL`` (no prefix).

    The encoder's ``down_blocks.i`` is LDM's ``down.i`` but the decoder's ``up_blocks.i`` is
    LDM's ``up.{n-1-i}`` (LDM counts decoder levels from the bottom); ResNets are ``block.j``
    with ``nin_shortcut`` for ``conv_shortcut``; the middle is ``mid.block_1``, ``mid.attn_1``,
    ``mid.block_2``. The inverse of diffusers' ``convert_ldm_vae_checkpoint``.
    """
    levels = len(config["block_out_channels"])
    module, param = _split_param(key)
    renames = {
        "encoder.conv_norm_out": "encoder.norm_out",
        "decoder.conv_norm_out": "decoder.norm_out",
    }
    if module in renames:
        return f"{renames[module]}.{param}"
    if module in {
        "encoder.conv_in",
        "encoder.conv_out",
        "decoder.conv_in",
        "decoder.conv_out",
        "quant_conv",
        "post_quant_conv",
    }:
        return key

    def resnet(rest: str) -> str:
        return rest.replace("conv_shortcut", "nin_shortcut")

    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{match[1]}.block.{match[2]}.{resnet(match[3])}"
    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level = levels - 1 - int(match[1])
        return f"decoder.up.{level}.block.{match[2]}.{resnet(match[3])}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        level = levels - 1 - int(match[1])
        return f"decoder.up.{level}.upsample.conv.{match[2]}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{resnet(match[3])}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(\w+)", key):
        return f"{match[1]}.mid.attn_1.{_VAE_ATTENTION_NAMES[match[2]]}.{match[3]}"
    raise ValueError(f"no LDM key for the VAE's {key!r}")


def text_encoder_key_to_ldm(key: str) -> str:
    """One ``CLIPTextModel`` key → its LDM key, without the ``cond_stage_model...`` prefix.

    transformers 5.6+ flattened ``CLIPTextModel`` (``embeddings.*``, no ``text_model.``), older
    versions nest it (``text_model.embeddings.*``); LDM checkpoints hold the nested names under
    ``cond_stage_model.transformer.``, so both map to ``text_model.*``'s tail here.
    """
    return key.removeprefix("text_model.")


def _read_component(folder: Path, component: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A folder component's weights (its one ``*.safetensors`` file) and its ``config.json``."""
    from safetensors.torch import load_file

    weights = sorted((folder / component).glob("*.safetensors"))
    if len(weights) != 1:
        raise ValueError(f"expected one .safetensors file in {folder / component}, got {weights}")
    config = json.loads((folder / component / "config.json").read_text(encoding="utf-8"))
    return load_file(weights[0]), config


def ldm_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The UNet, VAE and text encoder weights of the pipeline folder ``folder``, as one LDM dict.

    Read straight from the folder's safetensors files and ``config.json`` files (no pipeline is
    built). The VAE's mid-block attention projections are written as 1x1 convolutions, shape
    ``(C, C, 1, 1)``, as the original SD 1.x checkpoints hold them; diffusers' converter
    squeezes them back to ``(C, C)`` linear weights. Raises ``ValueError`` for a key it cannot
    place or two keys that land on one.
    """
    out: dict[str, torch.Tensor] = {}

    def put(key: str, tensor: torch.Tensor) -> None:
        if key in out:
            raise ValueError(f"two weights map to {key!r}")
        out[key] = tensor.contiguous()

    unet, unet_config = _read_component(folder, "unet")
    for key, tensor in unet.items():
        put(LDM_UNET_PREFIX + unet_key_to_ldm(key, unet_config), tensor)
    vae, vae_config = _read_component(folder, "vae")
    for key, tensor in vae.items():
        ldm_key = LDM_VAE_PREFIX + vae_key_to_ldm(key, vae_config)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # linear → 1x1 conv, as in the originals
        put(ldm_key, tensor)
    text_encoder, _ = _read_component(folder, "text_encoder")
    for key, tensor in text_encoder.items():
        put(LDM_TEXT_PREFIX + text_encoder_key_to_ldm(key), tensor)
    return out


def build_tiny_single_file(folder: Path, dest: Path) -> Path:
    """Write the weights of the pipeline folder ``folder`` to ``dest`` as one LDM checkpoint.

    ``folder`` is what :func:`build_tiny_pipeline_folder` made; ``dest`` is the
    ``.safetensors`` file to write (its parent is created). Loaded back with
    ``StableDiffusionPipeline.from_single_file(dest, config=<build_single_file_config(...)>,
    local_files_only=True)``, every tensor equals the folder's. Returns ``dest``.
    """
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(folder), str(dest), metadata={"format": "pt"})
    return dest


def build_single_file_config(folder: Path, dest: Path) -> Path:
    """Copy ``folder``'s configs and tokenizer files, and no weights, into ``dest``; return it.

    This is the ``config=`` folder ``from_single_file`` needs to load a checkpoint offline:
    ``model_index.json`` (which classes), ``unet/``, ``vae/`` and ``text_encoder/``
    ``config.json`` (which shapes), ``scheduler/`` and all of ``tokenizer/``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "model_index.json", dest / "model_index.json")
    for component in WEIGHTED_COMPONENTS:
        (dest / component).mkdir(exist_ok=True)
        shutil.copyfile(folder / component / "config.json", dest / component / "config.json")
    for component in ("scheduler", "tokenizer"):
        shutil.copytree(folder / component, dest / component, dirs_exist_ok=True)
    return dest


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Run torch's CPU ops on ``count`` threads inside the block, then restore the old count.

    On a small shared machine (two cores, other test processes running) torch's default of one
    thread per core makes the tiny pipeline's run time erratic: a 4-step 64x64 image took 0.2 s
    on an idle machine but 1 to 17 s with the cores busy (OpenMP workers waiting on each other),
    while one thread takes about 0.3 s either way. Tests that generate should use this.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# SD 2.x and SDXL: tiny pipelines of their shapes, and their single files.
# ---------------------------------------------------------------------------------------------
#
# diffusers tells the architectures apart by a few keys and shapes of the original checkpoint
# (``diffusers.loaders.single_file_utils.infer_diffusers_model_type``); the tiny pipelines
# carry exactly those:
# - SD 2.x: ``model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight``
#   with 1024 inputs: cross-attention in the UNet's first level (its second layer is
#   ``input_blocks.2``) over a 1024-wide text encoder, as OpenCLIP ViT-H's is. The encoder is
#   one layer deep and its MLP 64 wide, so 1024 costs little. Its weights are in OpenCLIP's
#   layout under ``cond_stage_model.model.``; the scheduler predicts v (SD 2.1's 768 model).
# - SDXL: ``conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias``: the second
#   encoder (OpenCLIP bigG's place, with a projection) has ten layers. The two encoders must
#   differ in width (32 and 64 here, 768 and 1280 in SDXL): diffusers picks each one's weights
#   by the width of its position embedding. The UNet reads both (96 wide) and the pooled,
#   projected text plus the six size numbers (``text_time``), as SDXL's does.

SD2_TEXT_HIDDEN_SIZE: Final = 1024
SDXL_TEXT_HIDDEN_SIZES: Final = (32, 64)
SDXL_PROJECTION_DIM: Final = 32
SDXL_TIME_EMBED_DIM: Final = 8
SD2_SINGLE_FILE_NAME: Final = "tiny-sd21.safetensors"
SDXL_SINGLE_FILE_NAME: Final = "tiny-sdxl.safetensors"


def _clip_config(hidden: int, layers: int, tokenizer: Any, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=TEXT_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _tiny_vae(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=2,
        sample_size=TINY_IMAGE_SIZE,
        **extra,
    )


def build_tiny_sd2_pipeline(tokenizer_files: Path) -> Any:
    """A tiny SD 2.x ``StableDiffusionPipeline``: 1024-wide text, linear projections, v-prediction."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(
        tokenizer_files, model_max_length=MAX_PROMPT_TOKENS, pad_token="!"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            sample_size=TINY_IMAGE_SIZE // TINY_VAE_SCALE_FACTOR,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=SD2_TEXT_HIDDEN_SIZE,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
        )
        torch.manual_seed(SEED)
        vae = _tiny_vae()
        torch.manual_seed(SEED)
        text_encoder = CLIPTextModel(_clip_config(SD2_TEXT_HIDDEN_SIZE, 1, tokenizer)).eval()
    # SD 2.1 (768-v)'s own scheduler config
    scheduler = DDIMScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
        timestep_spacing="leading",
    )
    return StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl_pipeline(tokenizer_files: Path) -> Any:
    """A tiny ``StableDiffusionXLPipeline``: two encoders (the second projected), ``text_time``."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_files, model_max_length=MAX_PROMPT_TOKENS)
    tokenizer_2 = CLIPTokenizer.from_pretrained(
        tokenizer_files, model_max_length=MAX_PROMPT_TOKENS, pad_token="!"
    )
    first, second = SDXL_TEXT_HIDDEN_SIZES
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            sample_size=TINY_IMAGE_SIZE // TINY_VAE_SCALE_FACTOR,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=first + second,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + SDXL_PROJECTION_DIM,
            transformer_layers_per_block=(1, 2),
        )
        torch.manual_seed(SEED)
        # SDXL's VAE config, with per-channel latent statistics as some SDXL-based models
        # have them (the decode must use them)
        vae = _tiny_vae(
            scaling_factor=0.13025,
            force_upcast=True,
            latents_mean=[0.1, -0.2, 0.05, 0.3],
            latents_std=[0.9, 1.1, 1.0, 0.8],
        )
        torch.manual_seed(SEED)
        text_encoder = CLIPTextModel(_clip_config(first, 2, tokenizer)).eval()
        torch.manual_seed(SEED + 1)
        text_encoder_2 = CLIPTextModelWithProjection(
            _clip_config(second, 10, tokenizer_2, projection_dim=SDXL_PROJECTION_DIM)
        ).eval()
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
        interpolation_type="linear",
    )
    return StableDiffusionXLPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_tiny_folder(dest: Path, kind: str) -> Path:
    """Save the tiny ``kind`` pipeline ("sd2" or "sdxl") as a diffusers folder at ``dest``."""
    builders = {"sd2": build_tiny_sd2_pipeline, "sdxl": build_tiny_sdxl_pipeline}
    dest.mkdir(parents=True, exist_ok=True)
    scratch = dest / "_tokenizer_files"
    write_tiny_clip_tokenizer_files(scratch)
    pipe = builders[kind](scratch)
    pipe.save_pretrained(dest, safe_serialization=True)
    for tokenizer in ("tokenizer", "tokenizer_2"):
        if (dest / tokenizer).is_dir():
            for name in ("vocab.json", "merges.txt"):
                if not (dest / tokenizer / name).exists():
                    shutil.copyfile(scratch / name, dest / tokenizer / name)
    shutil.rmtree(scratch)
    return dest


_OPEN_CLIP_LAYER_NAMES: Final = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_state_dict(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP text encoder's weights in OpenCLIP's layout (no prefix).

    The inverse of diffusers' ``convert_open_clip_checkpoint``: one ``in_proj`` for q, k and v
    (concatenated in that order), ``resblocks``, ``ln_final``, ``positional_embedding`` and the
    projection as a (hidden, projection) matrix, transposed from transformers' Linear weight.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        key = key.removeprefix("text_model.")
        if key == "embeddings.position_ids":
            continue
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = tensor
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = tensor
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.rpartition(".")[2]] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)", key):
            qkv.setdefault((match[1], match[3]), {})[match[2]] = tensor
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(\w+)", key):
            name = _OPEN_CLIP_LAYER_NAMES[match[2]]
            out[f"transformer.resblocks.{match[1]}.{name}.{match[3]}"] = tensor
        else:
            raise ValueError(f"no OpenCLIP key for the text encoder's {key!r}")
    for (layer, param), parts in qkv.items():
        joined = torch.cat([parts["q"], parts["k"], parts["v"]])
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = joined
    return out


def kind_of_folder(folder: Path) -> str:
    """ "sd15", "sd2" or "sdxl", from the folder's ``model_index.json`` and scheduler."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    if "text_encoder_2" in index:
        return "sdxl"
    unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    return "sd2" if unet["cross_attention_dim"] == SD2_TEXT_HIDDEN_SIZE else "sd15"


def original_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of any tiny folder as one checkpoint in its architecture's original layout.

    SD 1.x: :func:`ldm_state_dict`. SD 2.x: the same UNet and VAE, the text encoder in
    OpenCLIP's layout under ``cond_stage_model.model.``. SDXL: the UNet with its added
    embedding as ``label_emb.0.{0,2}``, the first encoder under
    ``conditioner.embedders.0.transformer.text_model.``, the second in OpenCLIP's layout
    under ``conditioner.embedders.1.model.``.
    """
    kind = kind_of_folder(folder)
    if kind == "sd15":
        return ldm_state_dict(folder)
    out: dict[str, torch.Tensor] = {}

    def put(key: str, tensor: torch.Tensor) -> None:
        if key in out:
            raise ValueError(f"two weights map to {key!r}")
        out[key] = tensor.contiguous()

    unet, unet_config = _read_component(folder, "unet")
    for key, tensor in unet.items():
        if match := re.fullmatch(r"add_embedding\.linear_([12])\.(\w+)", key):
            slot = "0" if match[1] == "1" else "2"
            put(f"{LDM_UNET_PREFIX}label_emb.0.{slot}.{match[2]}", tensor)
        else:
            put(LDM_UNET_PREFIX + unet_key_to_ldm(key, unet_config), tensor)
    vae, vae_config = _read_component(folder, "vae")
    for key, tensor in vae.items():
        ldm_key = LDM_VAE_PREFIX + vae_key_to_ldm(key, vae_config)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        put(ldm_key, tensor)
    text_encoder, _ = _read_component(folder, "text_encoder")
    if kind == "sd2":
        for key, tensor in open_clip_state_dict(text_encoder).items():
            put("cond_stage_model.model." + key, tensor)
        return out
    for key, tensor in text_encoder.items():
        put(
            "conditioner.embedders.0.transformer.text_model." + text_encoder_key_to_ldm(key), tensor
        )
    text_encoder_2, _ = _read_component(folder, "text_encoder_2")
    for key, tensor in open_clip_state_dict(text_encoder_2).items():
        put("conditioner.embedders.1.model." + key, tensor)
    return out


def build_original_single_file(folder: Path, dest: Path) -> Path:
    """Write any tiny folder's weights to ``dest`` as one original-layout checkpoint."""
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(original_state_dict(folder), str(dest), metadata={"format": "pt"})
    return dest


def build_config_folder(folder: Path, dest: Path) -> Path:
    """:func:`build_single_file_config` for any tiny folder (SDXL's second encoder included)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "model_index.json", dest / "model_index.json")
    for component in (*WEIGHTED_COMPONENTS, "text_encoder_2"):
        if (folder / component).is_dir():
            (dest / component).mkdir(exist_ok=True)
            shutil.copyfile(folder / component / "config.json", dest / component / "config.json")
    for component in ("scheduler", "tokenizer", "tokenizer_2"):
        if (folder / component).is_dir():
            shutil.copytree(folder / component, dest / component, dirs_exist_ok=True)
    return dest


# ---------------------------------------------------------------------------------------------
# A tiny LoRA and a tiny textual-inversion embedding for the tiny SD 1.x pipeline.
# ---------------------------------------------------------------------------------------------


def build_tiny_lora(folder: Path, dest: Path, *, seed: int = 1, rank: int = 4) -> Path:
    """A random LoRA for the UNet of the pipeline folder ``folder``, written to ``dest`` in
    kohya's key layout (``lora_unet_..._to_q.lora_down.weight`` with ``.alpha``), the layout
    of the LoRAs people download and what ``load_lora_weights`` reads.

    peft's ``LoraConfig`` on the attention projections, with ``init_lora_weights=False`` so
    that both matrices are random (a fresh LoRA's B is zero and would change nothing).
    """
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(
            LoraConfig(
                r=rank,
                lora_alpha=rank,
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                init_lora_weights=False,
            )
        )
    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in convert_state_dict_to_kohya(state).items()}, str(dest))
    return dest


def build_tiny_embedding(dest: Path, *, vectors: int = 2, seed: int = 3) -> Path:
    """A random textual-inversion embedding for the tiny SD 1.x text encoder, in
    AUTOMATIC1111's safetensors layout (``emb_params``: vectors x hidden size)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"emb_params": torch.randn(vectors, TEXT_HIDDEN_SIZE, generator=generator)}, str(dest)
    )
    return dest
