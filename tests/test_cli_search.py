"""``llm-pessoal search``: a real subprocess over a real database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.images import ImageParameters
from engines.store import Store
from tests.conftest import Cli


@pytest.fixture
def filled(config_file: Path) -> dict[str, int]:
    """A conversation with a reply in two versions, an image, and an escape in a title."""
    settings = load_settings(config_file, env={})
    store = Store.open(settings.paths.database)
    try:
        c = store.create_conversation(
            "llama3", ChatOptions(), "Lighthouse \x1b]52;c;SGk=\x07 notes"
        )
        prompt = store.add_message(c.id, "user", "Tell me about the lighthouse keeper")
        old = store.add_message(c.id, "assistant", "The keeper [bold]lived[/bold] alone.")
        new = store.add_message(c.id, "assistant", "He kept the lamp lit.", parent_id=prompt)
        path = settings.paths.outputs / "keeper.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        image = store.add_image(
            path,
            ImageParameters("a lighthouse keeper", "blurry", 64, 64, 20, 7.5, 99, "Euler a", "sd"),
            1.0,
        )
    finally:
        store.close()
    return {"conversation": c.id, "prompt": prompt, "old": old, "new": new, "image": image}


def run(cli: Cli, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run("--config", str(config), "search", *args)


def test_json_lists_every_kind_ranked_with_marks(
    cli: Cli, config_file: Path, filled: dict[str, int]
) -> None:
    result = run(cli, config_file, "keeper", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    got = {(r["kind"], r["id"]) for r in data["results"]}
    assert got == {("message", filled["prompt"]), ("message", filled["old"]), ("image", 1)}
    assert data["counts"] == {"conversation": 0, "message": 2, "image": 1, "preset": 0}
    assert data["more"] is False
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores)
    old = next(r for r in data["results"] if r["id"] == filled["old"] and r["kind"] == "message")
    assert old["current"] is False  # the reply was regenerated: this is the older version
    assert [old["snippet"][a:b] for a, b in old["marks"]] == ["keeper"]
    assert old["conversation_id"] == filled["conversation"]
    image = next(r for r in data["results"] if r["kind"] == "image")
    assert image["path"].endswith("keeper.png") and image["detail"] == "sd · seed 99 · Euler a"


def test_lines_show_outside_text_never_interpreted(
    cli: Cli, config_file: Path, filled: dict[str, int]
) -> None:
    result = run(cli, config_file, "lighthouse", "--kind", "conversation")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "␛]52;c;SGk=␇" in result.stdout
    assert result.stdout.startswith("conversation ")
    lived = run(cli, config_file, "lived")
    assert "[bold]lived[/bold]" in lived.stdout
    assert "an older version or another branch" in lived.stdout
    assert "Results 1-1 (1 message)" in lived.stderr


def test_kinds_limits_and_pages(cli: Cli, config_file: Path, filled: dict[str, int]) -> None:
    first = json.loads(run(cli, config_file, "keeper", "--json", "--limit", "2").stdout)
    second = json.loads(
        run(cli, config_file, "keeper", "--json", "--limit", "2", "--offset", "2").stdout
    )
    assert (first["more"], second["more"]) == (True, False)
    ids = [(r["kind"], r["id"]) for r in first["results"] + second["results"]]
    assert len(ids) == len(set(ids)) == 3
    only = json.loads(run(cli, config_file, "keeper", "--json", "--kind", "images").stdout)
    assert [r["kind"] for r in only["results"]] == ["image"]


@pytest.mark.parametrize("text", ['"', "NEAR(", "* NEAR -", "keeper:", "(keeper", '"keeper'])
def test_fts5_syntax_is_searched_as_text(
    cli: Cli, config_file: Path, filled: dict[str, int], text: str
) -> None:
    result = run(cli, config_file, text, "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["results"]
    assert bool(found) == ("keeper" in text)


def test_bad_arguments_say_what_is_allowed(cli: Cli, config_file: Path) -> None:
    bad_kind = run(cli, config_file, "x", "--kind", "chats")
    assert bad_kind.returncode == 2
    assert "the kinds are conversation, message, image, preset" in bad_kind.stderr
    assert run(cli, config_file, "x", "--limit", "0").returncode == 2
    too_long = run(cli, config_file, "x" * 1001)
    assert too_long.returncode == 2 and "at most 1000 are allowed" in too_long.stderr
    nothing = run(cli, config_file, "zebra")
    assert nothing.returncode == 0 and "Nothing found for “zebra”." in nothing.stdout


def test_help_explains_the_text_and_the_json(cli: Cli) -> None:
    result = cli.run("search", "--help")
    assert result.returncode == 0
    assert "never as a query language" in result.stdout and '"marks"' in result.stdout
