"""Issue 11, the CLI: ``chat --option/--preset/--image/--file`` and ``presets``; what the
fake Ollama received is checked."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from conftest import Cli, MakeConfig
from ollama_server import FakeOllama, vision_model
from PIL import Image

from engines.chat_types import ChatOptions
from engines.store import Store


def test_options_are_validated_by_the_dialogs_rules_and_arrive_as_set(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    r = cli.run(
        "chat",
        "hi",
        "--option",
        "top_p=0.5",
        "-o",
        "stop=###",
        "-o",
        "stop=END",
        "-o",
        "think=low",
        "-o",
        "num_ctx=2048",
    )
    assert r.returncode == 0, r.stderr
    body = ollama_server.chat_requests()[-1]
    assert body["options"]["top_p"] == 0.5 and body["options"]["stop"] == ["###", "END"]
    assert body["options"]["num_ctx"] == 2048 and body["think"] == "low"
    for bad, message in [
        ("top_p=3", "top_p: '3' is not allowed; use a number from 0 to 1"),
        ("stop=", "stop: the stop sequence is empty"),
        ("nonsense", "'nonsense' is not key=value"),
    ]:
        r = cli.run("chat", "hi", "--option", bad)
        assert r.returncode == 2 and message in r.stderr, (bad, r.stderr)
    (cli.cwd / "bad.json").write_text("{oops")
    r = cli.run("chat", "hi", "--option", "format=bad.json")
    assert r.returncode == 2 and "format: 'bad.json' is not JSON" in r.stderr
    assert len(ollama_server.chat_requests()) == 1  # nothing more was sent


def test_a_preset_gives_its_system_prompt_and_options(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    r = cli.run("chat", "hi", "--preset", "coder", "-o", "temperature=0.1")
    assert r.returncode == 0, r.stderr
    body = ollama_server.chat_requests()[-1]
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].startswith("You are a senior software engineer")
    assert body["options"]["temperature"] == 0.1 and body["options"]["top_p"] == 0.9
    r = cli.run("chat", "hi", "--preset", "Nobody")
    assert r.returncode == 2 and "there is no preset 'Nobody'; the presets are: Coder" in r.stderr


def test_presets_export_and_import(cli: Cli, config_file: Path) -> None:
    r = cli.run("presets", "export", "shared")
    assert r.returncode == 0 and "Exported 3 presets" in r.stdout
    text = (cli.cwd / "shared" / "writer.toml").read_text()
    (cli.cwd / "shared" / "writer.toml").write_text(
        text.replace('name = "Writer"', 'name = "Poet"')
    )
    (cli.cwd / "shared" / "bad.toml").write_text("top_k = 5000\n")
    r = cli.run("presets", "import", "shared")
    assert r.returncode == 2 and "Poet" in r.stdout
    assert "bad.toml: top_k: '5000' is not allowed; use a whole number from 0 to 1000" in r.stderr
    listed = json.loads(cli.run("presets", "list", "--json").stdout)["presets"]
    assert [p["name"] for p in listed] == ["Coder", "Concise", "Poet", "Writer"]


def test_images_and_files_are_sent(
    cli: Cli, make_config: MakeConfig, ollama_server: FakeOllama
) -> None:
    make_config()
    ollama_server.add_model(vision_model())
    Image.new("RGB", (32, 32), "green").save(cli.cwd / "leaf.png")
    (cli.cwd / "notes.txt").write_text("remember the milk\n")
    r = cli.run(
        "chat", "what is this?", "-m", "llava:7b", "--image", "leaf.png", "--file", "notes.txt"
    )
    assert r.returncode == 0, r.stderr
    sent = ollama_server.chat_requests()[-1]["messages"][-1]
    assert base64.b64decode(sent["images"][0]) == (cli.cwd / "leaf.png").read_bytes()
    assert sent["content"] == "what is this?\n\nnotes.txt:\n```txt\nremember the milk\n```"


def test_bad_attachments_are_refused_before_anything_is_sent(
    cli: Cli, make_config: MakeConfig, ollama_server: FakeOllama
) -> None:
    make_config(chat={"file_max_kb": 1})
    ollama_server.add_model(vision_model())
    Image.new("RGB", (8, 8)).save(cli.cwd / "ok.png")
    (cli.cwd / "big.txt").write_text("x" * 2000)
    (cli.cwd / "blob.bin").write_bytes(b"\x00\x01")
    (cli.cwd / "fake.jpg").write_text("hello")
    cases = [
        (
            ["--image", "ok.png"],
            "llama3.2:latest cannot read images",
            "choose a vision model: llava:7b",
        ),
        (["-m", "llava:7b", "--image", "missing.png"], "'missing.png' does not exist", ""),
        (["-m", "llava:7b", "--image", "fake.jpg"], "fake.jpg is not an image Pillow can read", ""),
        (
            ["--file", "big.txt"],
            "big.txt is 2.0 KB; a file sent as context may have at most 1.0 KB",
            "",
        ),
        (["--file", "blob.bin"], "blob.bin is a binary file, not text", ""),
        (["--file", "a\x1b[31m.txt"], "has control characters", ""),
    ]
    for args, message, more in cases:
        r = cli.run("chat", "hi", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and more in r.stderr, (args, r.stderr)
        assert "\x1b" not in r.stderr
    assert ollama_server.chat_requests() == []


def test_a_saved_conversation_keeps_its_images(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.add_model(vision_model())
    Image.new("RGB", (8, 8), "red").save(cli.cwd / "dot.png")
    store = Store.open(cli.cwd / "data" / "llm-pessoal.db")
    store.create_conversation("llava:7b", ChatOptions(), "saved")
    store.close()
    assert cli.run("chat", "-c", "last", "first").returncode == 0
    r = cli.run("chat", "-c", "last", "and this?", "--image", "dot.png")
    assert r.returncode == 0, r.stderr
    os.remove(cli.cwd / "dot.png")  # the conversation has its own copy
    r = cli.run("chat", "-c", "last", "again?")
    assert r.returncode == 0, r.stderr
    history = ollama_server.chat_requests()[-1]["messages"]
    assert [bool(m.get("images")) for m in history] == [False, False, True, False, False]
    exported = cli.run("conversations", "export", "last").stdout
    assert "![" in exported and "data/attachments/" in exported


def test_backup_and_restore_keep_the_attached_images(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    import shutil

    ollama_server.add_model(vision_model())
    Image.new("RGB", (8, 8), "blue").save(cli.cwd / "dot.png")
    store = Store.open(cli.cwd / "data" / "llm-pessoal.db")
    store.create_conversation("llava:7b", ChatOptions(), "saved")
    store.close()
    assert cli.run("chat", "-c", "last", "see", "--image", "dot.png").returncode == 0
    result = cli.run("backup")
    assert result.returncode == 0, result.stderr
    archive = Path(result.stdout.split(" (")[0])
    shutil.rmtree(cli.cwd / "data")
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == 0, result.stderr
    (copy,) = (cli.cwd / "data" / "attachments").iterdir()
    assert copy.read_bytes() == (cli.cwd / "dot.png").read_bytes()
    assert cli.run("chat", "-c", "last", "and now?").returncode == 0
    sent = ollama_server.chat_requests()[-1]["messages"][0]
    assert base64.b64decode(sent["images"][0]) == copy.read_bytes()
