"""A database made by an earlier release opens in this one with nothing lost.

``tests/data/schema-v2.db`` was written by the release whose schema stopped at version 2
(conversations, messages, the image index): three conversations, one reply interrupted,
one left streaming by a killed app, text with escapes and accents, and one image. Every
migration since must keep all of it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from engines.store import MIGRATIONS, Store

OLD = Path(__file__).parent / "data" / "schema-v2.db"


def test_the_old_database_is_migrated_and_keeps_everything(tmp_path: Path) -> None:
    db = tmp_path / "llm-pessoal.db"
    shutil.copy(OLD, db)
    with sqlite3.connect(OLD) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    store = Store.open(db)
    try:
        titles = {c.title: c for c in store.conversations()}
        assert set(titles) == {"Reverse a string", "A story that was cut", "Água e ÁGUA"}
        first = titles["Reverse a string"]
        assert first.model == "llama3.2:latest"
        assert first.host == ""  # no Ollama server chosen yet: the rule picks one
        store.set_host(first.id, "gpu-box")
        assert (store.conversation(first.id) or first).host == "gpu-box"
        assert (first.options.system_prompt, first.options.temperature) == ("Be brief.", 0.3)
        assert first.options.seed == 7
        texts = [(m.role, m.content, m.status) for m in store.messages(first.id)]
        assert texts == [
            ("user", "How do I reverse a string in Python?", "done"),
            ("assistant", "Use slicing: `text[::-1]`.", "done"),
            ("user", "And a list?", "done"),
            ("assistant", "The same: `items[::-1]`, or `items.reverse()` in place.", "done"),
        ]
        assert store.messages(first.id)[1].stats is not None
        cut = store.messages(titles["A story that was cut"].id)
        assert cut[0].content == "Tell me a story \x1b[31m[bold]now[/bold]"
        assert (cut[1].status, cut[1].error) == (
            "interrupted",
            "the connection to Ollama was lost",
        )
        killed = store.messages(titles["Água e ÁGUA"].id)
        assert (killed[1].content, killed[1].status) == ("Olá! Em que posso", "interrupted")
        [image] = store.images()
        assert (image.parameters.prompt, image.parameters.seed) == ("a lighthouse at dusk", 42)
        assert store.conversations("água") == store.conversations("ÁGUA") != []
    finally:
        store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
