"""What a prompt carries besides its text: images for vision models, text files as context.

- An image is checked (a file, readable, not too large, a format Pillow reads), copied
  into the data folder under its content's hash (the original may move or vanish: the
  conversation keeps its copy), and scaled down to ``max_side`` pixels only when it is
  sent; the copy is the original, unchanged.
- A text file is checked (a file, readable, under the size limit, not binary) and put
  into the message in a fenced block under its name, with its estimated tokens.
- A model without Ollama's ``vision`` capability is refused before anything is sent,
  naming the installed models that have it.

Every refusal is an :class:`AttachmentError` whose ``str()`` names the file and what is
allowed. No Textual here.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engines.chat_types import ChatError
from engines.files import PRIVATE_MODE, atomic_write_bytes
from engines.units import human_bytes

if TYPE_CHECKING:
    from engines.ollama_client import ChatEngine

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""What Pillow reads for us; an image goes to the model as PNG or JPEG."""
CHARS_PER_TOKEN = 4
"""A rough estimate (English text and code average three to four characters a token)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_AT_PATH = re.compile(r"(?:(?<=\s)|^)@(\S+)")


class AttachmentError(ValueError):
    """A file cannot be attached; ``str()`` names it and says why."""


class VisionRequired(ChatError):
    """The model cannot take images."""


@dataclass(frozen=True)
class Attachment:
    kind: Literal["image", "file"]
    name: str
    """The file's name, as the user gave it (shown, and the fenced block's title)."""
    path: Path
    """An image's copy in the data folder; a text file's own path."""
    size: int
    text: str = ""
    """A text file's content."""

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text) if self.kind == "file" else 0

    def label(self) -> str:
        if self.kind == "image":
            return f"{self.name} ({human_bytes(self.size)})"
        return f"{self.name} (~{self.tokens:,} tokens)"


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` costs."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def check_path(raw: str, base: Path | None = None) -> Path:
    """The regular, readable file ``raw`` names (``~`` expanded; relative to ``base``)."""
    text = raw.strip()
    if not text:
        raise AttachmentError("no file given: type the path of a file")
    if _CONTROL.search(text):
        shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        raise AttachmentError(
            f"the path {shown!r} has control characters: type the file's path without them"
        )
    try:
        path = Path(text).expanduser()
    except RuntimeError:
        raise AttachmentError(f"{text!r}: no such user's home folder") from None
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        path.stat()
    except FileNotFoundError:
        raise AttachmentError(f"{text!r} does not exist: check the path") from None
    except OSError as exc:
        raise AttachmentError(f"{text!r} cannot be read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise AttachmentError(f"{text!r} is a folder: give a file")
    if not path.is_file():
        raise AttachmentError(f"{text!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise AttachmentError(f"{text!r} cannot be read: permission denied")
    return path


def _size(path: Path, raw: str) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise AttachmentError(f"{raw!r} cannot be read: {exc.strerror or exc}") from None


# -- text files -----------------------------------------------------------------------------


def read_text_file(raw: str, max_bytes: int, base: Path | None = None) -> Attachment:
    """A text file to send as context."""
    path = check_path(raw, base)
    size = _size(path, raw)
    if size > max_bytes:
        raise AttachmentError(
            f"{path.name} is {human_bytes(size)}; a file sent as context may have at most "
            f"{human_bytes(max_bytes)} ([chat] file_max_kb in config.toml)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AttachmentError(f"{raw!r} cannot be read: {exc.strerror or exc}") from None
    if b"\x00" in data[:65536]:
        raise AttachmentError(
            f"{path.name} is a binary file, not text: only text files can be sent as context "
            "(attach an image with Alt+A, a vision model reads it)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AttachmentError(
            f"{path.name} is not UTF-8 text: only text files can be sent as context"
        ) from None
    return Attachment("file", path.name, path, size, text=text)


def fenced(attachment: Attachment) -> str:
    """A text file as the message holds it: its name, then its content in a fenced block
    (a fence longer than any run of backticks inside it)."""
    longest = max((len(m) for m in re.findall(r"`+", attachment.text)), default=0)
    fence = "`" * max(3, longest + 1)
    language = Path(attachment.name).suffix.lstrip(".")
    body = attachment.text if attachment.text.endswith("\n") else attachment.text + "\n"
    return f"{attachment.name}:\n{fence}{language}\n{body}{fence}"


def with_files(text: str, files: list[Attachment]) -> str:
    """The message sent: ``text``, then each file in its block."""
    blocks = [fenced(a) for a in files if a.kind == "file"]
    return "\n\n".join([text.rstrip(), *blocks]) if blocks else text


def at_paths(text: str) -> list[str]:
    """The ``@path`` words of a prompt that look like paths (a ``/`` or a ``.`` in them,
    or a leading ``~``); others (``@someone``) are left as words."""
    out = []
    for match in _AT_PATH.finditer(text):
        word = match.group(1).rstrip(",;:!?)]}\"'")
        if word and ("/" in word or "." in word or word.startswith("~")):
            out.append(word)
    return out


def complete_path(fragment: str, base: Path | None = None, limit: int = 50) -> list[str]:
    """Completions of a partly typed path, as typed (``~`` kept), folders ending in ``/``."""
    if _CONTROL.search(fragment):
        return []
    head, sep, stem = fragment.rpartition("/")
    shown_folder = head + sep
    folder = Path(os.path.expanduser(shown_folder)) if sep else Path(".")
    if not folder.is_absolute() and base is not None:
        folder = base / folder
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(stem) or (entry.name.startswith(".") and not stem):
            continue
        if _CONTROL.search(entry.name):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        out.append(shown_folder + entry.name + ("/" if is_dir else ""))
        if len(out) >= limit:
            break
    return out


# -- images ---------------------------------------------------------------------------------


def load_image(
    raw: str, store_folder: Path, max_bytes: int, base: Path | None = None
) -> Attachment:
    """Check an image and copy it into ``store_folder`` (named by its content's hash)."""
    from PIL import Image, UnidentifiedImageError

    path = check_path(raw, base)
    size = _size(path, raw)
    if size > max_bytes:
        raise AttachmentError(
            f"{path.name} is {human_bytes(size)}; an image may have at most "
            f"{human_bytes(max_bytes)} ([chat] image_max_mb in config.toml)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AttachmentError(f"{raw!r} cannot be read: {exc.strerror or exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AttachmentError(
            f"{path.name} is not an image Pillow can read ({exc.__class__.__name__}); "
            f"attach {', '.join(IMAGE_FORMATS)}"
        ) from None
    if kind not in IMAGE_FORMATS:
        raise AttachmentError(
            f"{path.name} is a {kind or 'an unknown'} image; attach {', '.join(IMAGE_FORMATS)}"
        )
    import hashlib  # here: not a cost of every start

    digest = hashlib.sha256(data).hexdigest()[:24]
    suffix = {"JPEG": ".jpg", "TIFF": ".tif"}.get(kind, f".{kind.lower()}")
    target = store_folder / f"{digest}{suffix}"
    if not target.exists():
        try:
            store_folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data, PRIVATE_MODE)
        except OSError as exc:
            raise AttachmentError(
                f"cannot keep a copy of {path.name} in {store_folder}: {exc.strerror or exc}"
            ) from None
    return Attachment("image", path.name, target, size)


def image_for_model(path: Path, max_side: int) -> bytes:
    """The image as sent to a model: its file as it is when small enough (and PNG or
    JPEG), else scaled so its longest side is ``max_side`` (JPEG, or PNG with alpha)."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if max(image.size) <= max_side and image.format in ("PNG", "JPEG"):
            return data
        picture = image.copy()
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if picture.mode in ("RGBA", "LA", "P"):
        picture.convert("RGBA").save(out, "PNG", optimize=False)
    else:
        picture.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


# -- vision ---------------------------------------------------------------------------------


async def vision_models(engine: ChatEngine) -> list[str]:
    """The installed models that have the ``vision`` capability."""
    models = await engine.list_models()

    async def caps(name: str) -> tuple[str, tuple[str, ...]]:
        try:
            return name, (await engine.show(name)).capabilities
        except ChatError:
            return name, ()

    found = await asyncio.gather(*(caps(m.name) for m in models))
    return [name for name, capabilities in found if "vision" in capabilities]


async def require_vision(engine: ChatEngine, model: str) -> None:
    """Refuse (:class:`VisionRequired`) a model that cannot see images, naming those that
    can; a model whose capabilities cannot be read is let through (Ollama will say)."""
    details = await engine.show(model)
    if "vision" in details.capabilities or not details.capabilities:
        return
    try:
        others = await vision_models(engine)
    except ChatError:
        others = []
    if others:
        choice = f"choose a vision model: {', '.join(others)}"
    else:
        choice = "no installed model has it: pull one (for example: ollama pull llava)"
    raise VisionRequired(
        f"{model} cannot read images (it lacks the 'vision' capability); {choice}, "
        "or remove the images. Nothing was sent."
    )
