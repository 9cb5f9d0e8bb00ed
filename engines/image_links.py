"""Which images came from which conversation and message (issue 14): the link both ways,
kept on the image queue's jobs and copied to each image they save (see the migration in
``engines/store.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engines.store import Store, StoredImage


@dataclass(frozen=True)
class Origin:
    """The chat an image came from."""

    conversation_id: int
    message_id: int | None
    title: str


def images_of_messages(store: Store, message_ids: Sequence[int]) -> dict[int, list[StoredImage]]:
    """The images (not in the trash) each message produced, oldest first, by message."""
    found: dict[int, list[StoredImage]] = {}
    rows = store._query_in(
        "SELECT * FROM images WHERE trashed_at IS NULL AND message_id IN ({ids}) ORDER BY id",
        message_ids,
    )
    for r in rows:
        found.setdefault(int(r["message_id"]), []).append(Store.stored_image(r))
    return found


def linked_image(store: Store, path: str) -> tuple[StoredImage, Origin | None] | None:
    """The image at ``path`` (as indexed) and the chat it came from, if any."""
    rows = store._query("SELECT * FROM images WHERE path = ?", (path,))
    if not rows:
        return None
    image = Store.stored_image(rows[0])
    return image, origin_of(store, image.id)


def job_origin(store: Store, job_id: int) -> Origin | None:
    """The chat an image job came from, if any (and the conversation is still there)."""
    return _origin(store, "jobs", job_id)


def origin_of(store: Store, image_id: int) -> Origin | None:
    """The conversation (and message) an image came from, if the chat asked for it and
    the conversation is still there."""
    return _origin(store, "images", image_id)


def _origin(store: Store, table: Literal["images", "jobs"], row_id: int) -> Origin | None:
    rows = store._query(
        f"SELECT t.conversation_id, t.message_id, c.title FROM {table} t"
        " JOIN conversations c ON c.id = t.conversation_id WHERE t.id = ?",
        (row_id,),
    )
    if not rows:
        return None
    r = rows[0]
    message = r["message_id"]
    return Origin(int(r["conversation_id"]), None if message is None else int(message), r["title"])
