"""The gallery: its engine (pages, filters, trash, thumbnails, export), the Gallery screen
in Pilot, ``clean --trash`` and ``gallery list``."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image
from textual.widgets import Input
from tui_helpers import make_app, screen_text, wait_for

from engines import gallery
from engines.clean import clean, plan_clean
from engines.config import load_settings
from engines.gallery import Filter, Thumbnails
from engines.grid import cells_of, contact_sheet, save_grid
from engines.images import ImageParameters, save_png
from engines.store import Store
from tui.screens.gallery import GalleryScreen
from tui.screens.image import ImageScreen
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.gallery import ThumbnailGrid

MODELS = ("alpha-model", "beta-model")
DAY = 86400.0


def add_images(store: Store, outputs: Path, n: int, *, start: float | None = None) -> list[Path]:
    """``n`` real little PNGs with their settings, indexed one a day back from now (the
    newest is image n-1)."""
    start = time.time() - (n - 1) * DAY - 3600 if start is None else start
    paths = []
    for i in range(n):
        p = ImageParameters(
            f"picture {i:03d} of a {'fox' if i % 2 else 'heron'}",
            "blurry",
            64,
            64,
            4,
            7.0,
            1000 + i,
            "Euler",
            MODELS[i % 2],
        )
        colour = (i * 40 % 256, 90, 200)
        path = save_png(Image.new("RGB", (64, 64), colour), outputs, p, datetime.now())
        image_id = store.add_image(path, p, 1.0)
        assert store.path is not None
        with sqlite3.connect(store.path) as conn:  # the store's API has no way to date a row
            conn.execute(
                "UPDATE images SET created_at = ? WHERE id = ?", (start + i * DAY, image_id)
            )
        paths.append(path)
    return paths


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Store, Path, list[Path]]:
    store = Store.open(tmp_path / "data" / "db.sqlite")
    outputs = tmp_path / "outputs"
    return store, outputs, add_images(store, outputs, 30)


# -- the engine ------------------------------------------------------------------------


def test_pages_come_newest_first_and_filters_narrow_them(
    indexed: tuple[Store, Path, list[Path]],
) -> None:
    store, _outputs, paths = indexed
    first = gallery.page(store, Filter(), 0, 10)
    assert [i.path for i in first] == paths[::-1][:10]
    assert [i.path for i in gallery.page(store, Filter(), 28, 10)] == [paths[1], paths[0]]
    assert gallery.count(store, Filter()) == 30
    assert gallery.count(store, Filter(text="FOX")) == 15, "any case"
    assert gallery.count(store, Filter(text="1007")) == 1, "a seed"
    assert gallery.count(store, Filter(text="beta")) == 15, "a model name"
    assert gallery.count(store, Filter(text="50%")) == 0, "LIKE's wildcards are literal"
    assert gallery.count(store, Filter(model="alpha-model")) == 15
    assert gallery.models(store) == list(MODELS)
    since, until = gallery.parse_date("7d")
    assert until is None and gallery.count(store, Filter(since=since)) == 7


def test_a_text_filter_pages_its_matches_newest_first_from_the_text_index(
    indexed: tuple[Store, Path, list[Path]],
) -> None:
    """At 50,000 images a filter read every row whole; the text's columns have an index
    of their own now, and its pages are still the matches, newest first."""
    store, _outputs, paths = indexed
    foxes = [path for i, path in enumerate(paths) if i % 2][::-1]
    seen = [i.path for o in range(0, 15, 4) for i in gallery.page(store, Filter(text="fOx"), o, 4)]
    assert seen == foxes
    assert [i.path for i in gallery.page(store, Filter(text="1007"), 0, 5)] == [paths[7]]
    assert gallery.page(store, Filter(text="picture 0071"), 0, 5) == []
    where, args = gallery._where(Filter(text="heron"))
    assert store.path is not None
    with sqlite3.connect(store.path) as conn:
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM images WHERE {where}"
            " ORDER BY created_at DESC, id DESC LIMIT 4",
            args,
        ).fetchall()
    assert any("USING INDEX images_text" in row[-1] for row in plan), plan


def test_date_filters_name_what_they_accept() -> None:
    now = datetime(2026, 11, 30, 12, 0)
    since, until = gallery.parse_date("2026-11", now)
    assert datetime.fromtimestamp(since or 0) == datetime(2026, 11, 1)
    assert datetime.fromtimestamp(until or 0) == datetime(2026, 12, 1)
    since, until = gallery.parse_date("2026-11-01..2026-11-15", now)
    assert datetime.fromtimestamp(until or 0) == datetime(2026, 11, 16)
    assert gallery.parse_date("", now) == (None, None)
    with pytest.raises(ValueError, match=r"use a day \(2026-11-30\), a month"):
        gallery.parse_date("yesterday-ish", now)
    with pytest.raises(ValueError, match="ends before it starts"):
        gallery.parse_date("2026-11-15..2026-11-01", now)


def test_trash_restore_and_clean_empties_the_trash(
    indexed: tuple[Store, Path, list[Path]], make_config: Callable[..., Path], tmp_path: Path
) -> None:
    store, outputs, _paths = indexed
    newest = gallery.page(store, Filter(), 0, 1)[0]
    trashed = gallery.trash(store, outputs, newest)
    assert not newest.path.exists() and trashed.parent == outputs / ".trash" and trashed.is_file()
    assert gallery.count(store, Filter()) == 29
    [in_trash] = gallery.page(store, Filter(trash=True), 0, 10)
    back = gallery.restore(store, outputs, in_trash)
    assert back == newest.path and back.is_file()
    assert gallery.count(store, Filter(trash=True)) == 0
    # trash two, then clean --trash removes their files and their rows
    for image in gallery.page(store, Filter(), 0, 2):
        gallery.trash(store, outputs, image)
    config = make_config(paths={"outputs": str(outputs), "database": str(store.path)})
    settings = load_settings(config, env={})
    older = plan_clean(settings, images_older_than=1.0)
    assert all(".trash" not in str(r.path) for r in older.removals), "images-older-than skips it"
    plan = plan_clean(settings, trash=True)
    assert {r.kind for r in plan.removals} == {"trash"} and len(plan.removals) == 2
    summary = clean(settings, plan.removals)
    assert summary.forgotten == 2 and not summary.problems
    assert list((outputs / ".trash").iterdir()) == []
    assert gallery.count(store, Filter(trash=True)) == 0
    assert gallery.count(store, Filter()) == 28


def test_files_changed_or_deleted_outside_the_app_are_told_apart(
    indexed: tuple[Store, Path, list[Path]],
) -> None:
    store, _outputs, _paths = indexed
    a, b, c = gallery.page(store, Filter(), 0, 3)
    assert gallery.check_file(a) == ("ok", "")
    b.path.unlink()
    assert gallery.check_file(b)[0] == "missing"
    Image.new("RGB", (8, 8)).save(c.path)  # another program wrote over it
    state, why = gallery.check_file(c)
    assert state == "changed" and "changed outside the app" in why


def test_thumbnails_are_cached_and_a_damaged_or_unwritable_cache_still_gives_them(
    indexed: tuple[Store, Path, list[Path]], tmp_path: Path
) -> None:
    _store, _outputs, paths = indexed
    cache = Thumbnails(tmp_path / "thumbs")
    thumb = cache.get(paths[0])
    assert max(thumb.size) <= gallery.THUMBNAIL_PX
    [cached] = list((tmp_path / "thumbs").rglob("*.png"))
    cached.write_bytes(b"not a png at all")
    again = cache.get(paths[0])
    assert again.size == thumb.size and cached.read_bytes().startswith(b"\x89PNG")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    unwritable = Thumbnails(blocked / "thumbs")
    assert unwritable.get(paths[1]).size == thumb.size, "a thumbnail all the same"
    assert unwritable.problem is not None and "cannot be written" in unwritable.problem
    assert unwritable.get(paths[2]).size == thumb.size


def test_a_batch_grid_has_every_picture_and_a_caption_under_each(
    indexed: tuple[Store, Path, list[Path]], tmp_path: Path
) -> None:
    _store, outputs, paths = indexed
    cells = cells_of(paths[:4])
    assert [c.caption for c in cells] == [f"seed {1000 + i}" for i in range(4)]
    sheet = contact_sheet(cells)
    assert sheet.width > 2 * 64 and sheet.height > 2 * 64  # two by two, captions below
    # the caption band under a picture holds dark text on white
    band = sheet.crop((4, 4 + 64, 4 + 64, 4 + 64 + 22)).convert("L")
    assert min(band.getdata()) < 100 and max(band.getdata()) == 255
    saved = save_grid(sheet, outputs, "test")
    assert saved.parent == outputs / "grids" and Image.open(saved).size == sheet.size


# -- the screen ------------------------------------------------------------------------

SIZE = (120, 40)


def gallery_config(make_config: Callable[..., Path], tmp_path: Path) -> Path:
    return make_config(diffusion={"device": "cpu"})


async def open_gallery(pilot: object, app: object) -> GalleryScreen:
    await pilot.press("ctrl+b")  # type: ignore[attr-defined]
    await wait_for(pilot, lambda: isinstance(app.screen, GalleryScreen), what="the gallery")  # type: ignore[arg-type, attr-defined]
    screen = app.screen  # type: ignore[attr-defined]
    grid = screen.query_one(ThumbnailGrid)
    await wait_for(
        pilot,
        lambda: grid.total > 0 and grid.current() is not None and not grid.counting,
        what="a page, counted",
    )  # type: ignore[arg-type]
    return screen  # type: ignore[no-any-return]


async def test_the_gallery_pages_filters_and_lists(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = gallery_config(make_config, tmp_path)
    app = make_app(config, start_screen="image")
    add_images(app.store, app.settings.paths.outputs, 40)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_gallery(pilot, app)
        grid = screen.query_one(ThumbnailGrid)
        assert "Images: 40" in screen_text(app) and "picture 039" in screen_text(app)
        per_page = grid.page_size
        assert per_page >= 12, "six across and at least two rows at 120x40"
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: grid.current() is not None and grid.first == per_page)
        assert grid.current().parameters.prompt.startswith(f"picture {39 - per_page:03d}")  # type: ignore[union-attr]
        await pilot.press("end")
        await wait_for(pilot, lambda: grid.current() is not None and grid.cursor == 39)
        assert grid.current().parameters.seed == 1000  # type: ignore[union-attr]
        await pilot.press("home", "right")
        await wait_for(pilot, lambda: grid.current() is not None and grid.cursor == 1)
        # thumbnails arrive (drawn as half blocks here)
        await wait_for(pilot, lambda: "▀" in screen_text(app), what="thumbnails")
        # filter by text
        await pilot.press("slash")
        await pilot.press(*"heron")
        await wait_for(pilot, lambda: grid.total == 20, what="the text filter")
        assert "filtered" in screen_text(app)
        screen.query_one("#gallery-text", Input).value = ""
        await wait_for(pilot, lambda: grid.total == 40)
        screen.query_one("#gallery-date", Input).value = "3d"
        await wait_for(pilot, lambda: grid.total == 3, what="the date filter")
        screen.query_one("#gallery-date", Input).value = "last tuesday"
        await wait_for(pilot, lambda: "is not understood" in screen_text(app))
        screen.query_one("#gallery-date", Input).value = ""
        await wait_for(pilot, lambda: grid.total == 40)
        from textual.widgets import Select

        screen.query_one("#gallery-model", Select).value = "beta-model"
        await wait_for(pilot, lambda: grid.total == 20, what="the model filter")
        grid.focus()
        await pilot.press("l")  # the list view
        await wait_for(pilot, lambda: grid.list_mode and grid.page_size > 20)
        await wait_for(pilot, lambda: "seed 1039 · beta-model" in screen_text(app))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen))


async def test_delete_goes_to_the_trash_and_restores_and_a_deleted_file_is_forgotten(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = gallery_config(make_config, tmp_path)
    app = make_app(config, start_screen="image")
    paths = add_images(app.store, app.settings.paths.outputs, 5)
    paths[3].unlink()  # deleted by another program
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_gallery(pilot, app)
        grid = screen.query_one(ThumbnailGrid)
        newest = grid.current()
        assert newest is not None and newest.path == paths[4]
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: grid.total == 4, what="the image to leave the gallery")
        assert not paths[4].exists()
        assert (app.settings.paths.outputs / ".trash" / paths[4].name).is_file()
        await pilot.press("t")
        await wait_for(pilot, lambda: grid.total == 1 and "In the trash" in screen_text(app))
        await pilot.press("r")
        await wait_for(pilot, lambda: grid.total == 0)
        assert paths[4].is_file(), "restored where it was"
        await pilot.press("t")
        await wait_for(pilot, lambda: grid.total == 5)
        # the file deleted outside the app: the gallery says so and offers to forget it
        await pilot.press("right")
        await wait_for(
            pilot,
            lambda: "deleted or moved outside the app: f forgets it" in screen_text(app),
            what="the missing file's notice",
        )
        assert "⚠ missing" in screen_text(app)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: grid.total == 4)
        assert app.store.image_id_at(paths[3]) is None


async def test_export_copies_the_selected_images(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = gallery_config(make_config, tmp_path)
    app = make_app(config, start_screen="image")
    paths = add_images(app.store, app.settings.paths.outputs, 4)
    target = tmp_path / "chosen"
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_gallery(pilot, app)
        await pilot.press("space", "right", "right", "space")
        await wait_for(pilot, lambda: "2 selected" in screen_text(app))
        await pilot.press("e")
        await wait_for(pilot, lambda: app.screen is not screen)
        dialog_input = app.screen.query_one(Input)
        dialog_input.value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: target.is_dir() and len(list(target.iterdir())) == 2)
    assert sorted(p.name for p in target.iterdir()) == sorted([paths[3].name, paths[1].name])


def test_cli_gallery_list(cli: object, config_file: Path) -> None:
    settings = load_settings(config_file, env={})
    store = Store.open(settings.paths.database)
    add_images(store, settings.paths.outputs, 6)
    store.close()

    def run(*args: str) -> object:
        return cli.run("--config", str(config_file), "gallery", "list", *args)  # type: ignore[attr-defined]

    result = run("--json", "--search", "FOX")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    rows = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert [r["seed"] for r in rows] == [1005, 1003, 1001]
    assert all(r["exists"] for r in rows)
    lines = run("--limit", "2").stdout.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2 and "seed 1005" in lines[0]
    bad = run("--date", "soon")
    assert bad.returncode == 2 and "is not understood" in bad.stderr  # type: ignore[attr-defined]


def test_cli_clean_trash_empties_the_trash(cli: object, config_file: Path) -> None:
    settings = load_settings(config_file, env={})
    store = Store.open(settings.paths.database)
    paths = add_images(store, settings.paths.outputs, 3)
    gallery.trash(store, settings.paths.outputs, gallery.page(store, Filter(), 0, 1)[0])
    store.close()

    def run(*args: str) -> object:
        return cli.run("--config", str(config_file), "clean", *args)  # type: ignore[attr-defined]

    dry = run("--trash", "--dry-run")
    assert dry.returncode == 0 and "would remove trash" in dry.stdout  # type: ignore[attr-defined]
    done = run("--trash")
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    assert "1 image(s) left the gallery" in done.stdout  # type: ignore[attr-defined]
    assert list((settings.paths.outputs / ".trash").iterdir()) == []
    assert paths[0].is_file() and paths[1].is_file(), "the gallery's images stay"


async def test_pages_turned_back_and_forth_show_their_own_captions_and_pictures(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Pages read ahead (rows and thumbnails) are drawn at once on a turn, and each tile
    shows its own image: a stale read-ahead never lands on the wrong page."""
    config = gallery_config(make_config, tmp_path)
    app = make_app(config, start_screen="image")
    add_images(app.store, app.settings.paths.outputs, 40)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_gallery(pilot, app)
        grid = screen.query_one(ThumbnailGrid)
        size = grid.page_size

        def page_drawn(first: int) -> bool:
            tiles = [t for t in grid.tiles() if t.stored is not None]
            return (
                grid.first == first
                and len(tiles) == min(size, 40 - first)
                and all(t.image is not None for t in tiles)
            )

        def captions_right(first: int) -> bool:
            text = screen_text(app)
            shown = [t.stored for t in grid.tiles() if t.stored is not None]
            return [s.parameters.seed for s in shown] == [
                1039 - first - i for i in range(len(shown))
            ] and all(f"picture {39 - first - i:03d}" in text for i in range(len(shown)))

        await wait_for(pilot, lambda: page_drawn(0), what="the first page's pictures")
        for first in (size, 2 * size, size, 0, size):
            await pilot.press("pagedown" if first > grid.first else "pageup")
            await wait_for(pilot, lambda f=first: page_drawn(f), what=f"the page at {first}")
            await wait_for(pilot, lambda f=first: captions_right(f), what=f"captions at {first}")
        assert grid.cursor == size, "the cursor moved with the pages"


async def test_a_filter_typed_fast_finds_the_image(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Keystrokes that come while a filter is being read are not each read: the last text
    typed is, and it finds its one image."""
    config = gallery_config(make_config, tmp_path)
    app = make_app(config, start_screen="image")
    add_images(app.store, app.settings.paths.outputs, 40)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_gallery(pilot, app)
        grid = screen.query_one(ThumbnailGrid)
        await pilot.press("slash", *"picture 017")
        await wait_for(
            pilot,
            lambda: grid.total == 1 and not grid.counting and "picture 017" in screen_text(app),
            what="the one image the filter finds",
        )
        current = grid.current()
        assert current is not None and current.parameters.seed == 1017
        assert "Images: 1 · 1 · page 1 of 1 · filtered" in screen_text(app)
        await pilot.press("backspace", "backspace", "backspace")
        await wait_for(
            pilot, lambda: grid.total == 40 and not grid.counting, what="all the images again"
        )


def test_a_long_prompt_is_cut_in_its_caption_with_an_ellipsis() -> None:
    from engines.store import StoredImage
    from tui.widgets.gallery import caption

    def of(prompt: str) -> str:
        p = ImageParameters(prompt, "", 64, 64, 4, 7.0, 1, "Euler", "m")
        return caption(StoredImage(1, Path("x.png"), p, 1.0, 0.0), 16).plain

    assert of("a heron") == "a heron"
    assert of("a heron at dawn, oil painting") == "a heron at dawn…"
    assert of("sixteen letters!") == "sixteen letters!"
    assert of("a heron\x1b]52;c;aGk=\x07 at dawn") == "a heron␛]52;c;a…"
