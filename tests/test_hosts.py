"""Several Ollama servers in one app (engines/hosts.py): the list in config.toml, one model
list labelled by server, the routing rule, each server watched on its own, and replies
that fail over when their server dies. Two or three real fake servers, each with its own
models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from ollama_server import FakeModel, FakeOllama
from waiting import wait_for

from engines.chat_types import ChatMessage, ChatOptions, ModelNotFound, OllamaUnavailable
from engines.config import (
    ConfigError,
    HostSpec,
    Settings,
    ignored_host_variable,
    load_settings,
    ollama_hosts,
)
from engines.conversations import ConversationService, ReplyEvent, ReplyText
from engines.hosts import HostRegistry, HostState, HostUnknown, model_key, split_key
from engines.store import Store

LLAMA = "llama3.2:latest"
QWEN = "qwen2.5-coder:7b"
GEMMA = "gemma3:1b"
LONG_REPLY = " ".join(f"word{i}" for i in range(400))


def fake(*models: str) -> FakeOllama:
    return FakeOllama(models=[FakeModel(m) for m in models]).start()


@pytest.fixture
def gpu() -> Iterator[FakeOllama]:
    server = fake(LLAMA, QWEN)
    yield server
    server.stop()


@pytest.fixture
def laptop() -> Iterator[FakeOllama]:
    server = fake(LLAMA, GEMMA)
    yield server
    server.stop()


@pytest.fixture
def hung() -> Iterator[FakeOllama]:
    server = fake(LLAMA)
    server.unresponsive = True
    yield server
    server.stop()


def registry(*servers: tuple[str, FakeOllama], timeout: float = 10) -> HostRegistry:
    return HostRegistry(
        [HostSpec(name, s.url, timeout) for name, s in servers],
        retry_interval=0.2,
        online_recheck=60,
    )


@pytest.fixture
async def two(gpu: FakeOllama, laptop: FakeOllama) -> AsyncIterator[HostRegistry]:
    hosts = registry(("gpu-box", gpu), ("laptop", laptop))
    yield hosts
    await hosts.aclose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db.sqlite")
    yield s
    s.close()


# -- config.toml ------------------------------------------------------------------------


def test_hosts_are_read_from_config_toml_with_their_timeouts(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[ollama]\ntimeout = 20\n"
        "[[ollama.hosts]]\nname = 'gpu-box'\nurl = 'http://gpu-box:11434'\ntimeout = 5\n"
        "[[ollama.hosts]]\nname = 'laptop'\nurl = 'localhost'\n",
        encoding="utf-8",
    )
    settings = load_settings(path, env={"OLLAMA_HOST": "http://elsewhere:1"})
    assert ollama_hosts(settings) == (
        HostSpec("gpu-box", "http://gpu-box:11434", 5.0),
        HostSpec("laptop", "localhost", 20.0),
    )
    # the OLLAMA_HOST the list makes unused is named at start, with the servers used
    note = ignored_host_variable(settings, {"OLLAMA_HOST": "http://elsewhere:1"})
    assert note is not None
    assert "OLLAMA_HOST='http://elsewhere:1' is not used" in note
    assert "(gpu-box, laptop)" in note and str(path) in note
    assert ignored_host_variable(settings, {}) is None
    # one server: [ollama] host (or OLLAMA_HOST), named after its host name
    one = load_settings(None, env={"OLLAMA_HOST": "http://box.lan:11500"})
    assert ollama_hosts(one) == (HostSpec("box.lan", "http://box.lan:11500", 300.0),)
    assert ignored_host_variable(one, {"OLLAMA_HOST": "http://box.lan:11500"}) is None
    assert ollama_hosts(Settings())[0].name == "localhost"


@pytest.mark.parametrize(
    ("hosts", "says"),
    [
        ("hosts = []", r"hosts is an empty list: expected a list of servers.*name.*url"),
        ("hosts = 'gpu'", r"hosts is 'gpu': expected a list of servers"),
        (
            "hosts = [{name = 'a', url = 'http://a:1'}, {name = 'a', url = 'http://b:1'}]",
            r"hosts entry 2: name 'a' is used twice: each server needs a name of its own",
        ),
        (
            "hosts = [{name = 'a', url = 'ftp://a'}]",
            r"hosts entry 1 \(a\): url = 'ftp://a': scheme 'ftp' is not http or https; expected an "
            r"address like 'http://gpu-box:11434'",
        ),
        ("hosts = [{name = 'a'}]", r"hosts entry 1 \(a\): url = None: missing"),
        (
            "hosts = [{name = 'a b', url = 'x'}]",
            r"hosts entry 1: name = 'a b': expected a name of 1 to 32",
        ),
        (
            "hosts = [{name = 'a', url = 'x', timeout = 0}]",
            r"hosts entry 1 \(a\): timeout = 0: expected seconds, a number from 1 to 3600",
        ),
        (
            "hosts = [{name = 'a', url = 'x', port = 2}]",
            r"hosts entry 1: unknown key 'port'; allowed keys: name, url, timeout",
        ),
        ("hosts = ['http://a:1']", r"hosts entry 1 = 'http://a:1': expected a table like"),
    ],
)
def test_a_bad_hosts_list_names_what_is_wrong_and_what_is_allowed(
    tmp_path: Path, hosts: str, says: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[ollama]\n{hosts}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[ollama\] " + says):
        load_settings(path, env={})


# -- one model list, and the rule ----------------------------------------------------------


async def test_one_model_list_labelled_by_server(two: HostRegistry, gpu: FakeOllama) -> None:
    gpu.set_loaded([LLAMA])
    await two.check_all()
    assert [(m.host, m.name) for m in two.catalog()] == [
        ("gpu-box", LLAMA),
        ("gpu-box", QWEN),
        ("laptop", GEMMA),
        ("laptop", LLAMA),
    ]
    gpu_state = two.get("gpu-box").state
    assert gpu_state.online and gpu_state.version
    assert [(m.host, m.name) for m in gpu_state.loaded] == [("gpu-box", LLAMA)]
    assert gpu_state.loaded[0].size_vram > 0
    assert split_key(model_key("laptop", GEMMA)) == ("laptop", GEMMA)
    assert split_key(GEMMA) == ("", GEMMA)


async def test_the_apps_watch_opens_each_servers_stream_connection_and_a_listing_does_not(
    two: HostRegistry, gpu: FakeOllama, laptop: FakeOllama
) -> None:
    """The app watches its servers: each that answers gets the client that streams
    replies with a connection open, so the first reply waits for neither. A command that
    only lists the servers (``hosts``, ``health``) asks each for its version once."""
    await two.check_all()
    assert [r.path for r in gpu.requests].count("/api/version") == 1
    watching = [asyncio.create_task(two.watch(h)) for h in two.hosts]
    try:
        for server in (gpu, laptop):
            # the listing's version, the watch's, and the stream client's
            await wait_for(None, lambda s=server: len(s.connection_of("/api/version")) == 3)
        for host in two.hosts:  # the stream client has read its answer
            await wait_for(None, lambda e=host.engine: not e._connecting)
    finally:
        for task in watching:
            task.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
    stream = two.get("laptop").engine.stream(LLAMA, [ChatMessage("user", "hi")], ChatOptions())
    assert "".join([c.text async for c in stream])
    assert laptop.connection_of("/api/chat") == laptop.connection_of("/api/version")[-1:]


async def test_routing_by_model(two: HostRegistry) -> None:
    await two.check_all()
    assert two.route(QWEN).name == "gpu-box"
    assert two.route(GEMMA).name == "laptop"
    assert two.route("gemma3:1b").name == "laptop"
    with pytest.raises(
        ModelNotFound,
        match=r"'mistral:latest' is on none of the servers that answer \(gpu-box, laptop\); pull",
    ):
        two.route("mistral:latest")
    with pytest.raises(HostUnknown, match=r"no Ollama server named 'nas'.*gpu-box, laptop"):
        two.route(LLAMA, "nas")


async def test_the_same_model_on_two_servers(
    two: HostRegistry, gpu: FakeOllama, laptop: FakeOllama
) -> None:
    await two.check_all()
    # neither has it loaded: the first in the list that has it
    assert two.route(LLAMA).name == "gpu-box"
    # loaded on the second: the second
    laptop.set_loaded([LLAMA])
    await two.check_all()
    assert two.route(LLAMA).name == "laptop"
    # loaded on both: the first again
    gpu.set_loaded([LLAMA])
    await two.check_all()
    assert two.route(LLAMA).name == "gpu-box"
    # an explicit choice wins over the rule
    assert two.route(LLAMA, "laptop").name == "laptop"


# -- a server that never answers ---------------------------------------------------------


async def test_a_server_that_never_answers_is_marked_within_its_timeout_and_delays_no_other(
    gpu: FakeOllama, hung: FakeOllama, laptop: FakeOllama
) -> None:
    hosts = HostRegistry(
        [
            HostSpec("gpu-box", gpu.url, 10),
            HostSpec("frozen", hung.url, 3),
            HostSpec("laptop", laptop.url, 10),
        ],
        retry_interval=30,
        online_recheck=60,
    )
    seen: list[HostState] = []
    hosts.subscribe(seen.append)
    watchers = [asyncio.create_task(hosts.watch(h)) for h in hosts.hosts]
    try:
        await wait_for(None, lambda: hosts.get("frozen").state.online is False)
        # both others answered (and were told) before the frozen one's timeout ran out
        told = [(s.name, s.online) for s in seen]
        assert told.index(("frozen", False)) == 2
        assert set(told[:2]) == {("gpu-box", True), ("laptop", True)}
        frozen = hosts.get("frozen").state
        assert "frozen" in frozen.error and "did not answer within 3 s" in frozen.error
        assert [m.host for m in hosts.catalog()] == ["gpu-box"] * 2 + ["laptop"] * 2
        assert hosts.route(LLAMA).name == "gpu-box"
        with pytest.raises(OllamaUnavailable, match=r"frozen is unreachable.*resend to gpu-box"):
            hosts.route(LLAMA, "frozen")
        # it comes back: a wake checks it again at once
        hung.unresponsive = False
        hosts.wake("frozen")
        await wait_for(None, lambda: hosts.get("frozen").state.online is True)
        assert hosts.summary() is not None
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await hosts.aclose()


# -- replies ---------------------------------------------------------------------------------


async def test_a_conversation_remembers_its_server(
    two: HostRegistry, store: Store, gpu: FakeOllama, laptop: FakeOllama
) -> None:
    await two.check_all()
    service = ConversationService(store, two.first.engine, save_interval=0.05, hosts=two)
    conversation = service.new_conversation(GEMMA, ChatOptions(), "Hi")
    finished = await service.run(service.send(conversation, "Hi"))
    assert finished.status == "done" and finished.host == "laptop"
    saved = store.conversation(conversation.id)
    assert saved is not None and saved.host == "laptop"
    assert [r.path for r in laptop.requests].count("/api/chat") == 1
    # an explicit choice (the picker) is kept, the rule would pick gpu-box for llama
    store.update_settings(conversation.id, LLAMA, saved.options)
    again = store.conversation(conversation.id)
    assert again is not None
    finished = await service.run(service.send(again, "And llama?"))
    assert finished.status == "done" and finished.host == "laptop"
    assert [r.path for r in gpu.requests].count("/api/chat") == 0


async def test_a_server_killed_in_the_middle_of_a_reply(
    two: HostRegistry, store: Store, gpu: FakeOllama, laptop: FakeOllama
) -> None:
    await two.check_all()
    gpu.reply, gpu.rate = LONG_REPLY, 50
    service = ConversationService(store, two.first.engine, save_interval=0.05, hosts=two)
    seen: list[ReplyEvent] = []
    service.subscribe(seen.append)
    conversation = service.new_conversation(LLAMA, ChatOptions(), "Tell me")
    task = asyncio.create_task(service.run(service.send(conversation, "Tell me")))
    await wait_for(None, lambda: sum(isinstance(e, ReplyText) for e in seen) >= 3)
    gpu.stop()  # the machine goes away mid-reply
    finished = await asyncio.wait_for(task, 15)
    # kept, marked interrupted, the server named
    assert finished.status == "interrupted" and finished.failure == "lost"
    assert finished.content.startswith("word0 word1")
    assert finished.error is not None and "gpu-box" in finished.error
    kept = store.messages(conversation.id)[-1]
    assert (kept.status, kept.content) == ("interrupted", finished.content)
    assert kept.error is not None and "gpu-box" in kept.error
    # the server is marked unreachable at once; the other keeps working
    assert two.get("gpu-box").state.online is False
    assert [h.name for h in two.with_model(LLAMA)] == ["laptop"]
    # resend to the other server that has the model: a new version beside the kept one
    store.set_host(conversation.id, "laptop")
    moved = store.conversation(conversation.id)
    assert moved is not None
    resent = await service.run(service.regenerate(moved))
    assert resent.status == "done" and resent.host == "laptop"
    versions = [m for m in store.all_messages(conversation.id) if m.role == "assistant"]
    assert [m.status for m in versions] == ["interrupted", "done"]


async def test_a_reply_to_an_unreachable_server_fails_at_once_and_names_another(
    two: HostRegistry, store: Store, gpu: FakeOllama
) -> None:
    await two.check_all()
    gpu.stop()
    await two.check(two.get("gpu-box"))
    service = ConversationService(store, two.first.engine, save_interval=0.05, hosts=two)
    conversation = service.new_conversation(LLAMA, ChatOptions(), "Hi", host="gpu-box")
    finished = await service.run(service.send(conversation, "Hi"))
    assert finished.status == "error" and finished.failure == "unreachable"
    assert finished.host == "gpu-box"  # named, so that the screen can offer another
    assert finished.error is not None
    assert "gpu-box is unreachable" in finished.error and "resend to laptop" in finished.error
    # without a remembered server, the rule skips the unreachable one
    other = service.new_conversation(LLAMA, ChatOptions(), "Hi")
    assert (await service.run(service.send(other, "Hi"))).host == "laptop"


def test_the_current_schema_gains_the_host_of_a_conversation(tmp_path: Path) -> None:
    import sqlite3

    from engines.store import MIGRATIONS

    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as conn:  # a database of the schema before this migration
        for script in MIGRATIONS[:-1]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        conn.execute(
            "INSERT INTO conversations (title, model, options, created_at, updated_at)"
            " VALUES ('Old', 'llama3.2:latest', '{}', 1, 1)"
        )
    store = Store.open(db)
    try:
        [old] = store.conversations()
        assert (old.title, old.host) == ("Old", "")
        new = store.create_conversation(LLAMA, ChatOptions(), "New", host="laptop")
        assert (store.conversation(new.id) or old).host == "laptop"
    finally:
        store.close()


def test_the_example_in_config_toml_is_valid() -> None:
    import re
    import tomllib

    from engines.config import settings_from_mapping

    shipped = (Path(__file__).resolve().parent.parent / "config.toml").read_text(encoding="utf-8")
    block = re.search(r"^# hosts = \[\n(?:#  .*\n)+# \]\n", shipped, re.MULTILINE)
    assert block is not None, "the commented [ollama] hosts example is gone"
    example = "\n".join(line[2:] for line in block.group(0).splitlines())
    settings = settings_from_mapping({"ollama": tomllib.loads(example)})
    assert [h.name for h in ollama_hosts(settings)] == ["gpu-box", "laptop"]


def test_only_the_servers_on_this_machine_are_asked_to_make_room_on_its_gpu() -> None:
    hosts = HostRegistry(
        [
            HostSpec("gpu-box", "http://gpu-box:11434", 5),
            HostSpec("here", "http://localhost:11500", 5),
            HostSpec("v6", "http://[::1]:11434", 5),
        ]
    )
    assert [e.name for e in hosts.local_engines()] == ["here", "v6"]
    one = HostRegistry([HostSpec("box", "http://gpu-box:11434", 5)])
    assert one.local_engines() == [one.first.engine]
