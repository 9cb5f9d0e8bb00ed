"""Which images came from which conversation and message (issue 14): the link both ways,
kept on the image queue's jobs and copied to each image they save (see the migration in
``engines/store.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    ids = list(message_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = store._query(
            "SELECT * FROM images WHERE trashed_at IS NULL AND message_id"
            f" IN ({','.join('?' * len(chunk))}) ORDER BY id",
            tuple(chunk),
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
    rows = store._query(
        "SELECT j.conversation_id, j.message_id, c.title FROM jobs j"
        " JOIN conversations c ON c.id = j.conversation_id WHERE j.id = ?",
        (job_id,),
    )
    if not rows:
        return None
    r = rows[0]
    message = r["message_id"]
    return Origin(int(r["conversation_id"]), None if message is None else int(message), r["title"])


def origin_of(store: Store, image_id: int) -> Origin | None:
    """The conversation (and message) an image came from, if the chat asked for it and
    the conversation is still there."""
    rows = store._query(
        "SELECT i.conversation_id, i.message_id, c.title FROM images i"
        " JOIN conversations c ON c.id = i.conversation_id WHERE i.id = ?",
        (image_id,),
    )
    if not rows:
        return None
    r = rows[0]
    message = r["message_id"]
    return Origin(int(r["conversation_id"]), None if message is None else int(message), r["title"])
