"""One search (engines/search.py) on a real store in tmp_path: what it finds, how it
ranks and pages, how the index follows every change, upgrades, and text of FTS5 syntax."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines import gallery
from engines.chat_types import ChatOptions
from engines.images import ImageParameters
from engines.presets import Presets
from engines.search import (
    KINDS,
    MAX_QUERY,
    Hit,
    SearchError,
    fts_query,
    parse_kinds,
    rebuild,
    search,
)
from engines.store import MIGRATIONS, Store, _statements

OLD = Path(__file__).parent / "data" / "schema-v2.db"
SEARCH_MIGRATION = next(i for i, m in enumerate(MIGRATIONS) if "messages_fts" in m)
"""How many migrations come before the one that makes the search index."""

SYNTAX = [
    '"',
    '""',
    '"lighthouse',
    'lighthouse"',
    "*",
    "lighthouse*",
    "*lighthouse",
    "NEAR",
    "NEAR(lighthouse fox)",
    "NEAR(lighthouse, 2)",
    "lighthouse AND",
    "AND lighthouse",
    "OR",
    "NOT lighthouse",
    "-lighthouse",
    "lighthouse -",
    "prompt:lighthouse",
    ":",
    "(",
    "(lighthouse",
    "lighthouse)",
    ")(",
    "{prompt model}: lighthouse",
    "^lighthouse",
    "+",
    "'",
    "lighthouse'",
    "\\",
    "\x00",
    "\ud800lighthouse",
    "   ",
]


def params(prompt: str, seed: int = 1, **kw: object) -> ImageParameters:
    values: dict[str, object] = {
        "negative_prompt": "blurry",
        "width": 64,
        "height": 64,
        "steps": 20,
        "guidance": 7.5,
        "seed": seed,
        "scheduler": "Euler a",
        "model": "sd15-base",
    }
    values.update(kw)
    return ImageParameters(prompt, **values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data" / "search.db")
    try:
        yield s
    finally:
        s.close()


def found(store: Store, text: str, **kw: object) -> list[tuple[str, int]]:
    return [(h.kind, h.id) for h in search(store, text, **kw).hits]  # type: ignore[arg-type]


def marked(hit: Hit) -> list[str]:
    return [hit.snippet.text[a:b] for a, b in hit.snippet.marks]


def image(store: Store, folder: Path, name: str, p: ImageParameters) -> int:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")
    return store.add_image(path, p, 1.0)


# -- what it finds -----------------------------------------------------------------------


def test_titles_and_every_version_and_branch_of_messages_are_found(store: Store) -> None:
    c = store.create_conversation("llama3", ChatOptions(), "Harbour lights")
    prompt = store.add_message(c.id, "user", "Describe the old lighthouse")
    first = store.add_message(c.id, "assistant", "A lighthouse of granite.", model="llama3")
    second = store.add_message(
        c.id, "assistant", "A lighthouse of red brick.", model="qwen", parent_id=prompt
    )
    edited = store.add_message(c.id, "user", "Describe the ferry instead", parent_id=None)
    hits = {(h.kind, h.id): h for h in search(store, "lighthouse").hits}
    assert set(hits) == {("message", prompt), ("message", first), ("message", second)}
    # the conversation now reads from the edited first prompt: none of these is on it
    assert not any(h.current for h in hits.values())
    assert hits[("message", first)].detail == "llama3"
    assert hits[("message", prompt)].detail == "You"
    assert hits[("message", second)].title == "Harbour lights"
    assert hits[("message", second)].conversation_id == c.id
    assert marked(hits[("message", second)]) == ["lighthouse"]
    assert [(h.kind, h.current) for h in search(store, "ferry").hits] == [("message", True)]
    assert found(store, "ferry") == [("message", edited)]
    [title] = search(store, "harbour").hits
    assert (title.kind, title.id, marked(title)) == ("conversation", c.id, ["Harbour"])
    assert title.detail == "4 messages · llama3"


def test_images_are_found_by_prompt_negative_prompt_model_seed_and_sampler(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    fox = image(
        store,
        out,
        "fox.png",
        params("a red fox in snow", seed=424242, negative_prompt="watermark, text"),
    )
    other = image(
        store, out, "tram.png", params("a tram", seed=7, scheduler="DPM++ 2M", model="dreamshaper")
    )
    assert found(store, "fox") == [("image", fox)]
    assert found(store, "watermark") == [("image", fox)]
    assert found(store, "424242") == [("image", fox)]
    assert found(store, "dreamshaper") == [("image", other)]
    assert found(store, "DPM++ 2M") == [("image", other)]
    [hit] = search(store, "fox").hits
    assert hit.title == "fox.png" and hit.path == out / "fox.png"
    assert hit.detail == "sd15-base · seed 424242 · Euler a"
    assert marked(hit) == ["fox"]
    # a match outside the prompt: the prompt, then where the match is
    [by_seed] = search(store, "424242").hits
    assert by_seed.snippet.text == "a red fox in snow · seed: 424242"
    assert marked(by_seed) == ["424242"]
    [by_negative] = search(store, "watermark").hits
    assert by_negative.snippet.text == "a red fox in snow · negative prompt: watermark, text"


def test_presets_are_found_by_name_and_system_prompt(store: Store) -> None:
    presets = Presets(store)
    saved = presets.save("Pirate", ChatOptions(system_prompt="Talk like a buccaneer, arr."))
    assert found(store, "buccaneer") == [("preset", saved.id)]
    assert found(store, "pirate") == [("preset", saved.id)]
    coder = presets.get("Coder")
    assert ("preset", coder.id) in found(store, "senior software engineer")
    presets.rename("Pirate", "Corsair")
    assert found(store, "pirate") == []
    assert found(store, "corsair") == [("preset", saved.id)]
    presets.save("Corsair", ChatOptions(system_prompt="Speak plainly."))
    assert found(store, "buccaneer") == []
    assert found(store, "plainly") == [("preset", saved.id)]
    presets.delete("Corsair")
    assert found(store, "plainly") == []


def test_accents_and_case_do_not_matter(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "Água e ÁGUA")
    m = store.add_message(c.id, "user", "Um copo de água fria, por favor")
    assert found(store, "agua", kinds=("message",)) == [("message", m)]
    assert found(store, "ÁGUA FRIA") == [("message", m)]
    assert found(store, "Água") == [("conversation", c.id), ("message", m)] or found(
        store, "Água"
    ) == [("message", m), ("conversation", c.id)]


def test_the_last_word_matches_as_a_prefix_while_it_is_typed(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "t")
    m = store.add_message(c.id, "user", "the lighthouse keeper")
    assert found(store, "lightho") == [("message", m)]
    assert found(store, "the lightho") == [("message", m)]
    assert found(store, "lightho ") == []  # the space says the word is whole
    assert found(store, "lightho keeper") == []  # only the last word is a prefix
    assert fts_query("lightho") == '"lightho" *'
    assert fts_query("a") == '"a"'


def test_every_word_must_match_in_any_order(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "t")
    both = store.add_message(c.id, "user", "a fox by the lighthouse")
    store.add_message(c.id, "assistant", "only a fox here")
    assert found(store, "lighthouse fox") == [("message", both)]


def test_trashed_images_are_not_found_until_restored_and_forgotten_ones_never(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    image_id = image(store, out, "comet.png", params("a comet over the sea"))
    [stored] = store.images()
    gallery.trash(store, out, stored)
    assert found(store, "comet") == []
    [trashed] = gallery.page(store, gallery.Filter(trash=True), 0, 10)
    gallery.restore(store, out, trashed)
    assert found(store, "comet") == [("image", image_id)]
    store.forget_image(image_id)
    assert found(store, "comet") == []


def test_an_image_written_again_at_the_same_path_is_found_by_its_new_prompt_only(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    image(store, out, "same.png", params("a castle"))
    again = image(store, out, "same.png", params("a glacier"))  # INSERT OR REPLACE
    assert found(store, "castle") == []
    assert found(store, "glacier") == [("image", again)]
    assert store._query("PRAGMA integrity_check")[0][0] == "ok"


def test_edited_renamed_and_deleted_things_leave_the_index(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "Violin lessons")
    reply = store.add_message(c.id, "assistant", "The violin has four strings", status="streaming")
    store.update_message(reply, "The cello has four strings", status="done")
    assert found(store, "violin", kinds=("message",)) == []
    assert found(store, "cello") == [("message", reply)]
    store.rename(c.id, "Cello lessons")
    assert found(store, "violin") == []
    assert ("conversation", c.id) in found(store, "cello")
    later = store.add_message(c.id, "user", "and the cello bow?")
    store.delete_from(later)
    assert found(store, "bow") == []
    store.delete(c.id)
    assert found(store, "cello") == []
    with sqlite3.connect(store.path or "") as conn:
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        conn.execute("INSERT INTO conversations_fts(conversations_fts) VALUES ('integrity-check')")


# -- ranking, snippets, pages ------------------------------------------------------------


def test_results_are_ranked_best_first(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "t")
    filler = " ".join(["words"] * 40)
    once = store.add_message(c.id, "user", f"a dragon and {filler}")
    many = store.add_message(c.id, "assistant", "dragon dragon dragon: a dragon story")
    for i in range(5):
        store.add_message(c.id, "user", f"nothing here {i}")
    hits = search(store, "dragon").hits
    assert [h.id for h in hits] == [many, once]
    assert hits[0].score < hits[1].score


def test_a_long_message_gives_a_short_snippet_around_the_match(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "t")
    text = ("lorem ipsum " * 100) + "the orchard\nat night " + ("dolor sit " * 100)
    store.add_message(c.id, "assistant", text)
    [hit] = search(store, "orchard").hits
    assert len(hit.snippet.text) < 200
    assert "\n" not in hit.snippet.text
    assert hit.snippet.text.startswith("…") and hit.snippet.text.endswith("…")
    assert marked(hit) == ["orchard"]
    assert "".join(p for p, _ in hit.snippet.parts()) == hit.snippet.text
    assert [p for p, match in hit.snippet.parts() if match] == ["orchard"]


def test_pages_follow_each_other_without_repeats(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "meadow")
    ids = {store.add_message(c.id, "user", f"meadow number {i}") for i in range(23)}
    first = search(store, "meadow", limit=10)
    second = search(store, "meadow", limit=10, offset=10)
    third = search(store, "meadow", limit=10, offset=20)
    assert (first.more, second.more, third.more) == (True, True, False)
    seen = [(h.kind, h.id) for r in (first, second, third) for h in r.hits]
    assert len(seen) == len(set(seen)) == 24
    assert {i for k, i in seen if k == "message"} == ids
    assert first.counts == {"conversation": 1, "message": 23, "image": 0, "preset": 0}
    assert first.total == 24


def test_kinds_narrow_the_search(store: Store, tmp_path: Path) -> None:
    c = store.create_conversation("m", ChatOptions(), "Neon city")
    m = store.add_message(c.id, "user", "neon signs")
    i = image(store, tmp_path / "o", "n.png", params("neon alley"))
    assert found(store, "neon", kinds=("image",)) == [("image", i)]
    assert set(found(store, "neon", kinds=parse_kinds(["messages,conversation"]))) == {
        ("message", m),
        ("conversation", c.id),
    }
    assert parse_kinds([]) == KINDS
    with pytest.raises(SearchError, match="unknown kind 'chats': the kinds are conversation"):
        parse_kinds(["chats"])


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", SYNTAX)
def test_fts5_syntax_is_taken_as_text_never_an_error(store: Store, text: str) -> None:
    c = store.create_conversation("m", ChatOptions(), "t")
    m = store.add_message(c.id, "user", "the lighthouse near the fox")
    results = search(store, text)
    # what is typed together (no space) is a phrase: its words, together, in the message
    phrases = [" ".join(re.findall(r"\w+", chunk.lower())) for chunk in text.split()]
    phrases = [p for p in phrases if p]
    hit = phrases and all(f" {p} " in " the lighthouse near the fox " for p in phrases)
    expected = [("message", m)] if hit else []
    assert [(h.kind, h.id) for h in results.hits] == expected


def test_operators_are_words_to_look_for(store: Store) -> None:
    c = store.create_conversation("m", ChatOptions(), "t")
    near = store.add_message(c.id, "user", "Is the NEAR keyword special?")
    assert found(store, "NEAR") == [("message", near)]
    assert found(store, "NOT near") == []  # "not" is a word the message does not have
    assert found(store, '"keyword special"') == [("message", near)]


def test_too_long_a_text_and_bad_pages_are_refused_with_what_is_allowed(store: Store) -> None:
    with pytest.raises(SearchError, match=f"at most {MAX_QUERY} are allowed"):
        search(store, "x" * (MAX_QUERY + 1))
    with pytest.raises(SearchError, match="between 1 and"):
        search(store, "x", limit=0)
    with pytest.raises(SearchError, match="offset 0 or more"):
        search(store, "x", offset=-1)
    assert search(store, "").hits == [] and search(store, " \t\n").hits == []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=60))
def test_any_text_searches_without_an_error(store: Store, text: str) -> None:
    search(store, text)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.text(alphabet="\"*():^-+{}'., ", max_size=4),
    after=st.text(alphabet="\"*():^-+{}'., ", max_size=4),
)
def test_a_word_wrapped_in_syntax_characters_is_still_found(
    store: Store, before: str, after: str
) -> None:
    if not store.conversations():
        c = store.create_conversation("m", ChatOptions(), "t")
        store.add_message(c.id, "user", "the glacier at noon")
    hits = search(store, f"{before}glacier{after}").hits
    assert [h.kind for h in hits] == ["message"]


# -- the index over time -----------------------------------------------------------------


def test_a_damaged_index_is_built_again_and_the_search_answers(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    image(store, out, "a.png", params("a tram to the harbour"))
    assert store.path is not None
    # another program writes the row again without the app's pragma: the row the REPLACE
    # deletes leaves its words in the index, for a row that is gone
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO images (path, prompt, negative_prompt, width, height,"
            " steps, guidance, seed, scheduler, model, created_at)"
            " SELECT path, 'a bus', '', 64, 64, 20, 7.5, 1, 'Euler', 'sd', 0 FROM images"
        )
    [new_id] = [i.id for i in store.images()]
    assert found(store, "tram") == []  # built again, then answered
    assert found(store, "bus") == [("image", new_id)]
    rebuild(store)  # by hand too: the same answers
    assert (found(store, "tram"), found(store, "bus")) == ([], [("image", new_id)])
    with sqlite3.connect(store.path) as conn:
        conn.execute("INSERT INTO images_fts(images_fts) VALUES ('integrity-check')")


def test_the_old_database_is_searchable_once_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(OLD, db)
    store = Store.open(db)
    try:
        kinds = sorted(h.kind for h in search(store, "reverse").hits)
        assert kinds == ["conversation", "message", "message"]  # items.reverse() too
        assert [h.kind for h in search(store, "slicing").hits] == ["message"]
        assert [h.kind for h in search(store, "agua").hits] == ["conversation"]
        [lighthouse] = search(store, "lighthouse").hits
        assert (lighthouse.kind, lighthouse.detail.split(" · ")[1]) == ("image", "seed 42")
        assert [h.kind for h in search(store, "42").hits] == ["image"]
        assert [h.title for h in search(store, "concise").hits] == ["Concise"]
    finally:
        store.close()


def test_the_schema_before_the_search_migrates_with_its_data(tmp_path: Path) -> None:
    db = tmp_path / "before.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:SEARCH_MIGRATION]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SEARCH_MIGRATION}")
    conn.execute(
        "INSERT INTO conversations (id, title, model, created_at, updated_at, current_id)"
        " VALUES (1, 'Teapot history', 'm', 0, 0, 3)"
    )
    conn.executemany(
        "INSERT INTO messages (id, conversation_id, role, content, created_at, parent_id)"
        " VALUES (?, 1, ?, ?, 0, ?)",
        [
            (1, "user", "who made the first teapot?", None),
            (2, "assistant", "China, in the Yuan era.", 1),
            (3, "assistant", "Yixing potters, most likely.", 1),
        ],
    )
    conn.execute(
        "INSERT INTO images (path, prompt, negative_prompt, width, height, steps, guidance,"
        " seed, scheduler, model, created_at, trashed_at) VALUES"
        " ('/o/a.png', 'a teapot', '', 64, 64, 20, 7.5, 5, 'Euler', 'sd', 0, NULL),"
        " ('/o/b.png', 'a trashed teapot', '', 64, 64, 20, 7.5, 6, 'Euler', 'sd', 0, 1)"
    )
    conn.execute(
        "INSERT INTO presets (name, options, created_at, updated_at)"
        " VALUES ('Broken', 'not json', 0, 0)"
    )
    conn.close()
    store = Store.open(db)
    try:
        hits = search(store, "teapot").hits
        assert sorted((h.kind, h.id) for h in hits) == [
            ("conversation", 1),
            ("image", 1),
            ("message", 1),
        ]
        [older] = search(store, "china").hits
        [newer] = search(store, "yixing").hits
        assert (older.current, newer.current) == (False, True)
        assert [h.title for h in search(store, "broken").hits] == ["Broken"]
    finally:
        store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        for table in ("messages_fts", "images_fts", "conversations_fts", "presets_fts"):
            conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
