"""Issue 11, the engines: every option, presets, images for vision models, files as context.

What the fake Ollama really received is checked: the options arrive as set, and the
base64 of an image decodes to that image (scaled down when large)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from pathlib import Path

import pytest
from ollama_server import FakeOllama, vision_model
from PIL import Image

from engines.attachments import (
    AttachmentError,
    VisionRequired,
    at_paths,
    complete_path,
    fenced,
    load_image,
    read_text_file,
    require_vision,
    with_files,
)
from engines.chat_options import (
    OptionError,
    apply,
    defaults_from_settings,
    model_parameters,
    parse_assignments,
    parse_option,
)
from engines.chat_types import ChatError, ChatMessage, ChatOptions
from engines.config import ConfigError, load_settings
from engines.conversations import ConversationService
from engines.ollama_client import ChatEngine
from engines.presets import PresetError, Presets
from engines.store import MIGRATIONS, Store, export_markdown


def png(path: Path, size: tuple[int, int] = (64, 48), color: str = "red") -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


# -- options --------------------------------------------------------------------------------


def test_every_option_arrives_at_ollama_as_set(tmp_path: Path, ollama_server: FakeOllama) -> None:
    schema = tmp_path / "answer.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    options = apply(
        ChatOptions(),
        {
            "temperature": "0.3",
            "top_p": "0.8",
            "top_k": "30",
            "min_p": "0.05",
            "repeat_penalty": "1.2",
            "repeat_last_n": "128",
            "num_ctx": "8192",
            "num_predict": "100",
            "seed": "42",
            "stop": "###\n</answer>",
            "keep_alive": "10m",
            "think": "high",
            "format": str(schema),
        },
    )
    engine = ChatEngine(ollama_server.url)

    async def go() -> str:
        text, _ = await engine.reply("llama3.2", [ChatMessage("user", "hi")], options)
        await engine.aclose()
        return text

    run(go())
    body = ollama_server.chat_requests()[-1]
    assert body["options"] == {
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 30,
        "min_p": 0.05,
        "repeat_penalty": 1.2,
        "repeat_last_n": 128,
        "num_ctx": 8192,
        "num_predict": 100,
        "seed": 42,
        "stop": ["###", "</answer>"],
    }
    assert body["keep_alive"] == "10m"
    assert body["think"] == "high"
    assert body["format"] == {"type": "object", "properties": {"a": {"type": "string"}}}


def test_unset_options_are_not_sent_and_json_format_and_think_off_are(
    ollama_server: FakeOllama,
) -> None:
    engine = ChatEngine(ollama_server.url, keep_alive="7m")
    options = apply(ChatOptions(), {"format": "json", "think": "off"})

    async def go() -> None:
        await engine.reply("llama3.2", [ChatMessage("user", "hi")], options)
        await engine.aclose()

    run(go())
    body = ollama_server.chat_requests()[-1]
    assert set(body["options"]) == {"temperature", "num_predict"}
    assert body["format"] == "json" and body["think"] is False and body["keep_alive"] == "7m"


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("top_p", "1.5", "top_p: '1.5' is not allowed; use a number from 0 to 1"),
        ("top_k", "ten", "top_k: 'ten' is not allowed; use a whole number from 0 to 1000"),
        ("temperature", "", "temperature: empty is not allowed; use a number from 0 to 2"),
        ("stop", "###\n\nEND", "stop: stop sequence 2 is empty"),
        ("think", "maybe", "think: 'maybe' is not allowed; use on, off, low, medium or high"),
        ("keep_alive", "forever", "keep_alive: 'forever' is not allowed"),
    ],
)
def test_bad_values_name_the_option_and_what_it_allows(key: str, raw: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_option(key, raw)
    assert message in str(caught.value)


def test_an_empty_stop_sequence_on_the_command_line_is_refused() -> None:
    with pytest.raises(OptionError, match="stop: the stop sequence is empty"):
        parse_assignments(["stop=###", "stop="])
    with pytest.raises(OptionError, match=r"unknown option 'top-p' \(did you mean 'top_p'\?\)"):
        parse_assignments(["top-p=0.9"])
    assert parse_assignments(["stop=###", "stop=END", "top_p=0.5"]) == {
        "top_p": "0.5",
        "stop": "###\nEND",
    }


def test_a_schema_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text("{type: object")
    with pytest.raises(OptionError, match=r"format: .*schema.json' is not JSON \(Expecting"):
        parse_option("format", str(bad))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(OptionError, match="holds JSON but not an object"):
        parse_option("format", str(listed))
    with pytest.raises(OptionError, match=r"format: 'nowhere\.json' does not exist"):
        parse_option("format", "nowhere.json", base=tmp_path)


def test_config_defaults_reach_a_new_conversation_and_a_bad_schema_stops_the_start(
    tmp_path: Path, make_config
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "s.json").write_text('{"type": "object"}')
    config = make_config(
        chat={"top_p": 0.7, "stop": ["###"], "think": "low", "format": "s.json", "top_k": -1}
    )
    options = defaults_from_settings(load_settings(config, env={}))
    assert (options.top_p, options.top_k, options.stop, options.think) == (
        0.7,
        None,
        ("###",),
        "low",
    )
    assert options.format_value() == {"type": "object"}
    (tmp_path / "s.json").write_text("not json")
    with pytest.raises(ConfigError, match=r"\[chat\] format: 's.json' is not JSON"):
        load_settings(config, env={})
    config = make_config(chat={"stop": ["ok", ""], "format": ""})
    with pytest.raises(
        ConfigError, match=r"\[chat\] stop = \['ok', ''\]: expected a list of non-empty"
    ):
        load_settings(config, env={})


def test_model_defaults_come_from_the_modelfile(ollama_server: FakeOllama) -> None:
    ollama_server.add_model(vision_model())
    engine = ChatEngine(ollama_server.url)

    async def go():  # type: ignore[no-untyped-def]
        details = await engine.show("llava:7b")
        await engine.aclose()
        return details

    details = run(go())
    assert model_parameters(details.parameters) == {
        "temperature": "0.6",
        "top_p": "0.9",
        "stop": "</s>\nUSER:",
    }
    assert "vision" in details.capabilities and details.context_length == 4096


def test_old_stored_options_still_read() -> None:
    old = {"system_prompt": "s", "temperature": 1, "context_length": 0, "max_tokens": 9, "seed": 3}
    options = ChatOptions.from_dict(old)
    assert options.temperature == 1.0 and options.max_tokens == 9 and options.top_p is None
    assert ChatOptions.from_dict(options.to_dict()) == options
    full = apply(ChatOptions(), {"top_k": "5", "stop": "a\nb"})
    assert ChatOptions.from_dict(json.loads(json.dumps(full.to_dict()))) == full


# -- presets --------------------------------------------------------------------------------


def test_three_presets_ship_and_a_conversation_becomes_one(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite")
    presets = Presets(store, ChatOptions(max_tokens=4000))
    shipped = {p.name: p for p in presets.all()}
    assert set(shipped) == {"Coder", "Concise", "Writer"}
    assert shipped["Coder"].options.temperature == 0.2
    assert shipped["Coder"].options.max_tokens == 4000  # not set by the preset: the default
    assert shipped["Concise"].options.max_tokens == 512
    conversation = store.create_conversation(
        "qwen2.5-coder:7b", apply(ChatOptions(), {"system": "Be a pirate", "top_k": "7"}), "x"
    )
    mine = presets.save("Pirate", conversation.options, conversation.model)
    assert presets.get("pirate").options.top_k == 7 and mine.model == "qwen2.5-coder:7b"
    presets.save("Pirate", apply(mine.options, {"top_k": "9"}), mine.model)  # edited
    assert presets.get("Pirate").options.top_k == 9
    with pytest.raises(PresetError, match="there is no preset 'Nope'; the presets are: Coder"):
        presets.get("Nope")
    store.close()


def test_presets_export_and_import_as_toml(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.sqlite")
    presets = Presets(store)
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object"}')
    made = apply(
        ChatOptions(),
        {"system": 'Say "hi"\nthen stop', "stop": "###", "format": str(schema), "think": "on"},
    )
    presets.save("Quoted", made, "llava:7b")
    folder = tmp_path / "presets"
    files = presets.export(folder)
    assert {f.name for f in files} == {"coder.toml", "concise.toml", "writer.toml", "quoted.toml"}
    text = (folder / "quoted.toml").read_text()
    assert 'model = "llava:7b"' in text and 'stop = [\n    "###",\n]' in text
    (folder / "broken.toml").write_text('name = "Broken"\nstop = ["", "x"]\n')
    (folder / "hot.toml").write_text('name = "Hot"\ntemperature = 9\n')
    other = Presets(Store.open(tmp_path / "b.sqlite"))
    other.delete("Coder")
    imported, refused = other.import_folder(folder)
    assert sorted(imported) == ["Coder", "Concise", "Quoted", "Writer"]
    assert any("broken.toml: stop: a stop sequence is empty" in r for r in refused)
    assert any(
        "hot.toml: temperature: '9' is not allowed; use a number from 0 to 2" in r for r in refused
    )
    back = other.get("Quoted")
    assert back.options.system_prompt == 'Say "hi"\nthen stop' and back.options.stop == ("###",)
    assert back.options.format_value() == {"type": "object"} and back.options.think == "on"
    assert back.model == "llava:7b"
    store.close()


def test_the_migration_upgrades_an_old_database(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    old.write_bytes((Path(__file__).parent / "data" / "schema-v2.db").read_bytes())
    store = Store.open(old)
    version = store._query("PRAGMA user_version")[0][0]
    assert version == len(MIGRATIONS)
    assert len(Presets(store).all()) == 3
    assert store.conversations() is not None
    store.close()


# -- attachments ----------------------------------------------------------------------------


def test_text_files_go_in_a_fenced_block_under_their_name(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("a ``` fence inside\n")
    attachment = read_text_file(str(notes), 10_000)
    assert attachment.tokens == 5
    block = fenced(attachment)
    assert block == "notes.md:\n````md\na ``` fence inside\n````"
    assert with_files("look:", [attachment]) == "look:\n\n" + block


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.txt", "'{d}/missing.txt' does not exist"),
        (lambda d: d, "is a folder: give a file"),
        (lambda d: _write(d / "big.txt", b"x" * 3000), "big.txt is 3.0 KB; a file sent as context"),
        (lambda d: _write(d / "a.bin", b"PK\x00\x01"), "a.bin is a binary file, not text"),
        (lambda d: _write(d / "l1.txt", "é".encode("latin-1")), "l1.txt is not UTF-8 text"),
        (lambda d: Path(f"{d}/bad\x1b]52;c;x\x07.txt"), "has control characters"),
    ],
)
def test_bad_text_files_are_refused_with_why(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(AttachmentError) as caught:
        read_text_file(str(path), 2000)
    assert message.format(d=tmp_path) in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret.txt", b"x")
    secret.chmod(0)
    with pytest.raises(AttachmentError, match="cannot be read: permission denied"):
        read_text_file(str(secret), 100)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_at_paths_and_completion(tmp_path: Path) -> None:
    assert at_paths("see @notes.md, and @src/a.py or @alice") == ["notes.md", "src/a.py"]
    assert at_paths("mail me at a@b.com") == []
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    (tmp_path / "setup.cfg").write_text("")
    assert complete_path("s", tmp_path) == ["setup.cfg", "src/"]
    assert complete_path("src/m", tmp_path) == ["src/main.py"]
    assert complete_path("bad\x1b", tmp_path) == []


def test_images_are_copied_and_bad_ones_refused(tmp_path: Path) -> None:
    store = tmp_path / "data" / "attachments"
    photo = png(tmp_path / "cat.png")
    attached = load_image(str(photo), store, 10_000_000)
    assert attached.path.parent == store and attached.path.read_bytes() == photo.read_bytes()
    assert attached.name == "cat.png"
    fake = _write(tmp_path / "fake.png", b"not a png at all")
    with pytest.raises(AttachmentError, match=r"fake\.png is not an image Pillow can read"):
        load_image(str(fake), store, 10_000_000)
    with pytest.raises(AttachmentError, match=r"cat.png is .* an image may have at most 100 B"):
        load_image(str(photo), store, 100)
    with pytest.raises(AttachmentError, match=r"'nope\.jpg' does not exist"):
        load_image("nope.jpg", store, 100, base=tmp_path)
    with pytest.raises(AttachmentError, match="has control characters"):
        load_image("cat\x1b[2J.png", store, 100, base=tmp_path)


def test_a_20_mb_photo_is_sent_scaled_and_kept_whole(
    tmp_path: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.add_model(vision_model())
    photo = tmp_path / "photo.png"
    noise = Image.frombytes("RGB", (2600, 2600), os.urandom(2600 * 2600 * 3))
    noise.save(photo, compress_level=1)
    assert photo.stat().st_size > 20_000_000
    store = Store.open(tmp_path / "db.sqlite")
    engine = ChatEngine(ollama_server.url)
    engine.image_max_side = 512
    service = ConversationService(store, engine)
    attached = load_image(str(photo), tmp_path / "attachments", 50_000_000)
    assert attached.path.stat().st_size == photo.stat().st_size  # the original, kept

    async def go():  # type: ignore[no-untyped-def]
        conversation = service.new_conversation("llava:7b", ChatOptions(), "what?")
        await require_vision(engine, "llava:7b")
        finished = await service.run(service.send(conversation, "what is it?", [attached]))
        await engine.aclose()
        return conversation, finished

    conversation, finished = run(go())
    assert finished.status == "done"
    sent = ollama_server.chat_requests()[-1]["messages"][-1]
    assert sent["content"] == "what is it?" and len(sent["images"]) == 1
    image = Image.open(io.BytesIO(base64.b64decode(sent["images"][0])))
    assert image.size == (512, 512)
    messages = store.messages(conversation.id)
    assert messages[0].images == (str(attached.path),)
    markdown = export_markdown(conversation, messages, tmp_path / "exports")
    assert f"![{attached.path.name}](<../attachments/{attached.path.name}>)" in markdown
    store.close()


def test_a_small_image_is_sent_as_it_is(tmp_path: Path, ollama_server: FakeOllama) -> None:
    ollama_server.add_model(vision_model())
    photo = png(tmp_path / "small.png", (40, 30), "blue")
    attached = load_image(str(photo), tmp_path / "att", 10**7)
    engine = ChatEngine(ollama_server.url)

    async def go() -> None:
        await engine.reply(
            "llava:7b", [ChatMessage("user", "hi", (str(attached.path),))], ChatOptions()
        )
        await engine.aclose()

    run(go())
    sent = ollama_server.chat_requests()[-1]["messages"][-1]["images"][0]
    assert base64.b64decode(sent) == photo.read_bytes()


def test_a_model_without_vision_is_refused_naming_the_vision_models(
    ollama_server: FakeOllama,
) -> None:
    engine = ChatEngine(ollama_server.url)

    async def check(model: str) -> None:
        try:
            await require_vision(engine, model)
        finally:
            await engine.aclose()

    with pytest.raises(VisionRequired, match="no installed model has it: pull one"):
        run(check("llama3.2:latest"))
    ollama_server.add_model(vision_model())
    ollama_server.add_model(vision_model("gemma3:4b"))
    with pytest.raises(VisionRequired) as caught:
        run(check("llama3.2:latest"))
    assert "llama3.2:latest cannot read images" in str(caught.value)
    assert "choose a vision model: gemma3:4b, llava:7b" in str(caught.value)
    run(check("llava:7b"))  # no error
    assert ollama_server.chat_requests() == []  # nothing was sent


def test_a_vision_model_that_returns_an_error_is_reported(
    tmp_path: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.add_model(vision_model())
    ollama_server.fail(500, {"error": "failed to process image"}, path="/api/chat")
    attached = load_image(str(png(tmp_path / "x.png")), tmp_path / "att", 10**7)
    engine = ChatEngine(ollama_server.url)

    async def go() -> None:
        try:
            await engine.reply(
                "llava:7b", [ChatMessage("user", "hi", (str(attached.path),))], ChatOptions()
            )
        finally:
            await engine.aclose()

    with pytest.raises(ChatError, match="Ollama answered: failed to process image \\(HTTP 500\\)"):
        run(go())


def test_an_edited_prompt_keeps_its_images(tmp_path: Path, ollama_server: FakeOllama) -> None:
    ollama_server.add_model(vision_model())
    store = Store.open(tmp_path / "db.sqlite")
    engine = ChatEngine(ollama_server.url)
    service = ConversationService(store, engine)
    attached = load_image(str(png(tmp_path / "dog.png")), tmp_path / "att", 10**7)

    async def go() -> None:
        conversation = service.new_conversation("llava:7b", ChatOptions(), "x")
        await service.run(service.send(conversation, "what?", [attached]))
        prompt = store.messages(conversation.id)[0]
        await service.run(service.edit(conversation, prompt.id, "what breed?"))
        await engine.aclose()

    run(go())
    sent = ollama_server.chat_requests()[-1]["messages"][-1]
    assert sent["content"] == "what breed?"
    assert base64.b64decode(sent["images"][0]) == attached.path.read_bytes()
    conversation = store.conversations()[0]
    assert store.image_names(store.messages(conversation.id)[0].id) == {
        str(attached.path): "dog.png"
    }
    store.close()


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="Linux's /proc")
def test_a_file_whose_reading_fails_is_refused_even_for_root() -> None:
    # /proc/self/mem is a regular file that anyone may open, whose first byte cannot be read
    with pytest.raises(AttachmentError, match="'/proc/self/mem' cannot be read: Input/output"):
        read_text_file("/proc/self/mem", 1000)
    with pytest.raises(AttachmentError, match="'/proc/self/mem' cannot be read: Input/output"):
        load_image("/proc/self/mem", Path("/nonexistent"), 1000)
