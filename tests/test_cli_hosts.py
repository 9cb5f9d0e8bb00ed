"""The CLI with several Ollama servers (``[ollama] hosts``), run as a real subprocess against
two or three fake servers with different models: ``chat --host``, ``models`` with each
model's server, ``models pull|rm --host``, and ``status --json`` with a ``hosts`` list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli, MakeConfig
from ollama_server import FakeOllama

LLAMA = "llama3.2:latest"
GEMMA = "gemma3:1b"
QWEN = "qwen2.5-coder:7b"


@pytest.fixture
def hosts_config(
    make_config: MakeConfig, ollama_server: FakeOllama, laptop: FakeOllama, frozen: FakeOllama
) -> Path:
    """gpu-box (the default fake: llama3.2 and qwen2.5-coder), laptop (llama3.2, gemma3) and
    frozen (never answers; a 1 s timeout)."""
    ollama_server.reply = "from the gpu box"
    path = make_config()
    with path.open("a", encoding="utf-8") as f:
        f.write(
            "\n[[ollama.hosts]]\n"
            f'name = "gpu-box"\nurl = "{ollama_server.url}"\n'
            "\n[[ollama.hosts]]\n"
            f'name = "laptop"\nurl = "{laptop.url}"\n'
            "\n[[ollama.hosts]]\n"
            f'name = "frozen"\nurl = "{frozen.url}"\ntimeout = 1\n'
        )
    return path


def chats(server: FakeOllama) -> int:
    return sum(r.path == "/api/chat" for r in server.requests)


def test_chat_goes_to_the_server_that_has_the_model_or_the_one_named(
    cli: Cli, hosts_config: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    done = cli.run("chat", "-m", GEMMA, "hi")
    assert (done.returncode, done.stdout.strip()) == (0, "from the laptop"), done.stderr
    done = cli.run("chat", "-m", QWEN, "hi")
    assert done.stdout.strip() == "from the gpu box"
    # the same model on both: the first in the list, unless --host says otherwise
    assert cli.run("chat", "hi").stdout.strip() == "from the gpu box"
    assert cli.run("chat", "--host", "laptop", "hi").stdout.strip() == "from the laptop"
    assert (chats(ollama_server), chats(laptop)) == (2, 2)
    bad = cli.run("chat", "--host", "nas", "hi")
    assert bad.returncode == 2
    assert "no Ollama server named 'nas'; the servers are: gpu-box, laptop, frozen" in bad.stderr
    missing = cli.run("chat", "-m", "mistral:latest", "hi")
    assert missing.returncode == 3
    assert "on none of the servers that answer (gpu-box, laptop); frozen cannot be reached" in (
        missing.stderr
    )


def test_a_conversation_keeps_its_server(
    cli: Cli, hosts_config: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    from engines.chat_types import ChatOptions
    from engines.store import Store

    store = Store.open(cli.cwd / "data" / "llm-pessoal.db")
    try:
        made = store.create_conversation(LLAMA, ChatOptions(), "On the laptop", host="laptop")
    finally:
        store.close()
    # the rule would pick gpu-box for llama3.2: the conversation's own server wins
    done = cli.run("chat", "--conversation", "last", "hi")
    assert (done.returncode, done.stdout.strip()) == (0, "from the laptop"), done.stderr
    # --host moves it, and it stays moved
    assert cli.run("chat", "--conversation", "last", "--host", "gpu-box", "hi").returncode == 0
    again = cli.run("chat", "--conversation", "last", "more")
    assert again.stdout.strip() == "from the gpu box"
    store = Store.open(cli.cwd / "data" / "llm-pessoal.db")
    try:
        assert (store.conversation(made.id) or made).host == "gpu-box"
    finally:
        store.close()


def test_models_lists_every_server_and_says_which_did_not_answer(
    cli: Cli, hosts_config: Path
) -> None:
    listed = cli.run("models", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["models"]
    assert [(r["host"], r["name"]) for r in rows] == [
        ("gpu-box", LLAMA),
        ("gpu-box", QWEN),
        ("laptop", GEMMA),
        ("laptop", LLAMA),
    ]
    assert "frozen" in listed.stderr and "did not answer within 1 s" in listed.stderr
    table = cli.run("models").stdout.splitlines()
    assert table[0].split()[:2] == ["HOST", "NAME"]
    assert table[3].split()[:2] == ["laptop", GEMMA]


def test_pull_and_delete_go_to_the_chosen_server(
    cli: Cli, hosts_config: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    refused = cli.run("models", "pull", "tinyllama")
    assert refused.returncode == 2
    assert "several Ollama servers are configured (gpu-box, laptop, frozen)" in refused.stderr
    assert "--host NAME" in refused.stderr
    pulled = cli.run("models", "pull", "tinyllama", "--host", "laptop")
    assert pulled.returncode == 0, pulled.stderr
    assert "tinyllama:latest" in laptop.models and "tinyllama:latest" not in ollama_server.models
    # rm finds the one server that has it
    assert cli.run("models", "rm", "tinyllama", "--yes").returncode == 0
    assert "tinyllama:latest" not in laptop.models
    # on two servers, rm asks which
    both = cli.run("models", "rm", "llama3.2", "--yes")
    assert both.returncode == 2 and "llama3.2 is on gpu-box, laptop" in both.stderr
    assert cli.run("models", "rm", "llama3.2", "--yes", "--host", "laptop").returncode == 0
    assert LLAMA not in laptop.models and LLAMA in ollama_server.models


def test_status_json_has_every_server_and_keeps_the_first_at_the_top(
    cli: Cli, hosts_config: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    laptop.set_loaded([GEMMA])
    done = cli.run("status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # the spec's keys: the first server's state
    assert report["ollama_status"] == "online"
    assert report["ollama"]["host"] == ollama_server.url
    hosts = {h["name"]: h for h in report["hosts"]}
    assert list(hosts) == ["gpu-box", "laptop", "frozen"]
    assert hosts["gpu-box"]["status"] == "online" and hosts["gpu-box"]["version"]
    assert [(m["name"], m["size_vram"] > 0) for m in hosts["laptop"]["loaded_models"]] == [
        (GEMMA, True)
    ]
    assert hosts["frozen"]["status"] == "offline"
    assert "did not answer within 1 s" in hosts["frozen"]["error"]
    text = cli.run("status").stdout
    assert "Ollama laptop" in text and f"loaded: {GEMMA}" in text


def test_one_server_works_as_before_and_status_lists_it(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    report = json.loads(cli.run("status", "--json").stdout)
    assert [h["host"] for h in report["hosts"]] == [ollama_server.url]
    assert report["hosts"][0]["name"] == "127.0.0.1"
    assert cli.run("chat", "--host", "127.0.0.1", "hi").returncode == 0
    assert cli.run("models", "pull", "tinyllama").returncode == 0
    rows = json.loads(cli.run("models", "--json").stdout)["models"]
    assert {r["host"] for r in rows} == {"127.0.0.1"}


def test_health_asks_every_server_and_names_the_one_that_is_down(
    cli: Cli, hosts_config: Path, laptop: FakeOllama
) -> None:
    down = cli.run("health")
    assert down.returncode == 3, down.stderr
    report = json.loads(down.stdout)
    assert report["status"] == "degraded"
    assert report["servers"]["gpu-box"] == report["servers"]["laptop"] == "ok"
    assert "did not answer within 1 s" in report["servers"]["frozen"]
    assert report["checks"]["ollama"].startswith("1 of 3 servers do not answer: frozen: ")
    assert {r.path for r in laptop.requests} >= {"/api/version"}
