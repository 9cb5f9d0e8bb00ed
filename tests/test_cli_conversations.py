"""``chat --conversation``, ``chat --regenerate`` and ``conversations list|show|export|rm``
through the real CLI, against the fake Ollama server and the app's database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_server import FakeOllama

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.store import Store
from tui.cli_base import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from conftest import Cli


def database(config: Path) -> Store:
    return Store.open(load_settings(config, env={}).paths.database)


def seed(config: Path) -> int:
    store = database(config)
    c = store.create_conversation("llama3.2:latest", ChatOptions(system_prompt="Be brief."), "Fox")
    store.add_message(c.id, "user", "Name a fox.")
    rid = store.add_message(c.id, "assistant", "", model="llama3.2:latest")
    store.update_message(rid, "Reynard.", status="done")
    store.close()
    return c.id


def test_chat_goes_on_with_a_saved_conversation_and_saves_to_it(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    cid = seed(config_file)
    ollama_server.reply = "Vixen."
    result = cli.run("chat", "--conversation", "last", "Another one?")
    assert (result.returncode, result.stdout) == (EXIT_OK, "Vixen.\n"), result.stderr
    [request] = [r.body for r in ollama_server.requests if r.path == "/api/chat"]
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a fox."},
        {"role": "assistant", "content": "Reynard."},
        {"role": "user", "content": "Another one?"},
    ]
    store = database(config_file)
    assert [m.content for m in store.messages(cid)] == [
        "Name a fox.",
        "Reynard.",
        "Another one?",
        "Vixen.",
    ]
    store.close()


def test_regenerate_keeps_the_earlier_version(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    cid = seed(config_file)
    ollama_server.reply = "Todd."
    result = cli.run("chat", "-c", str(cid), "--regenerate")
    assert (result.returncode, result.stdout) == (EXIT_OK, "Todd.\n"), result.stderr
    shown = json.loads(cli.run("conversations", "show", str(cid), "--json").stdout)
    assert [m["content"] for m in shown["messages"]] == ["Name a fox.", "Todd."]
    assert len(shown["messages"][1]["versions"]) == 2
    every = json.loads(cli.run("conversations", "show", str(cid), "--json", "--all").stdout)
    assert {m["content"] for m in every["messages"]} == {"Name a fox.", "Reynard.", "Todd."}
    text = cli.run("conversations", "show", str(cid)).stdout
    assert "[2/2]" in text and "Todd." in text


def test_bad_references_and_combinations_are_refused_with_exit_2(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    for args, words in [
        (("chat", "--regenerate"), "needs --conversation"),
        (("chat", "-c", "last", "hi"), "no saved conversation yet"),
        (("chat", "-c", "abc", "hi"), "'abc' is not a conversation"),
        (("conversations", "show", "99"), "there is no conversation 99"),
        (("chat", "-c", "1", "--regenerate", "extra"), "give no message"),
    ]:
        result = cli.run(*args)
        assert result.returncode == EXIT_USAGE, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, args
    assert not [r for r in ollama_server.requests if r.path == "/api/chat"]


def test_list_export_and_rm(cli: Cli, config_file: Path, ollama_server: FakeOllama) -> None:
    cid = seed(config_file)
    listed = json.loads(cli.run("conversations", "list", "--json").stdout)
    assert [(c["id"], c["title"], c["model"]) for c in listed["conversations"]] == [
        (cid, "Fox", "llama3.2:latest")
    ]
    assert "Fox" in cli.run("conversations", "list").stdout
    assert (
        "No conversations with 'wolf'."
        in cli.run("conversations", "list", "--search", "wolf").stdout
    )
    markdown = cli.run("conversations", "export", str(cid)).stdout
    assert markdown.startswith("# Fox\n") and "Reynard." in markdown
    refused = cli.run("conversations", "rm", str(cid))
    assert refused.returncode == EXIT_USAGE and "--yes" in refused.stderr
    assert cli.run("conversations", "rm", str(cid), "--yes").returncode == EXIT_OK
    assert json.loads(cli.run("conversations", "list", "--json").stdout) == {"conversations": []}
