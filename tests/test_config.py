"""config.toml: the shipped defaults, the overrides, and clear errors for bad files."""

from __future__ import annotations

import math
import re
import tempfile
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ollama._client import _parse_host

from engines.config import (
    ENV_CONFIG,
    SECTIONS,
    ConfigError,
    Settings,
    describe_settings,
    load_settings,
    normalize_host,
    settings_from_mapping,
)
from engines.ollama_client import ChatEngine

SHIPPED = Path(__file__).resolve().parent.parent / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def plain(value: Any) -> Any:
    if isinstance(value, tuple):  # a TOML array reads as a list
        return list(value)
    return str(value) if isinstance(value, Path) else value


# -- the shipped file ------------------------------------------------------------------


def test_defaults_equal_the_shipped_config_toml() -> None:
    shipped = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    defaults = Settings()
    expected = {
        section: {f.name: plain(getattr(getattr(defaults, section), f.name)) for f in fields(cls)}
        for section, cls in SECTIONS.items()
    }
    expected["keys"] = {}  # the [keys] table ships with examples in comments only
    assert shipped == expected
    # ... and the file itself validates to exactly the defaults.
    assert settings_from_mapping(shipped) == defaults


def _commented_keys() -> dict[tuple[str, str], str]:
    """(section, key) -> the comment on the key's line in the shipped config.toml."""
    found: dict[tuple[str, str], str] = {}
    section = ""
    for line in SHIPPED.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\[(\w+)\]\s*", line):
            section = m.group(1)
        elif m := re.match(r"(\w+)\s*=\s*(\"[^\"]*\"|\S+)\s*#\s*(\S.*)$", line):
            found[(section, m.group(1))] = m.group(3)
    return found


def test_keys_table_is_checked() -> None:
    settings = settings_from_mapping(
        {"keys": {"chat.new": "ctrl+k", "image": {"generate": "F5, ctrl+g"}}}
    )
    assert settings.keys == {"chat.new": "ctrl+k", "image.generate": "f5,ctrl+g"}
    with pytest.raises(ConfigError, match=r"\[keys\] chat.new = 5: expected keys like 'ctrl\+k'"):
        settings_from_mapping({"keys": {"chat.new": 5}})
    from tui.keys import binding_ids, check_keymap

    ids = binding_ids()
    assert {"chat.new", "prompt.send", "image.generate", "monitor.unload_pipeline"} <= set(ids)
    assert check_keymap({"chat.new": "ctrl+k"}, "config.toml") is None
    problem = check_keymap({"chat.nwe": "ctrl+k"}, "config.toml")
    assert problem is not None and "did you mean 'chat.new'" in problem


def test_every_setting_has_a_comment_line_in_config_toml() -> None:
    comments = _commented_keys()
    missing = [f"[{s}] {k}" for s, k, _, _ in describe_settings() if (s, k) not in comments]
    assert missing == []


def test_ranges_and_choices_written_in_config_toml_are_the_ones_enforced() -> None:
    comments = _commented_keys()
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            comment = comments[(section, f.name)]
            meta = f.metadata
            stated = re.search(r"\((-?[\d.]+)-(-?[\d.]+)", comment)
            if stated:
                assert (float(stated.group(1)), float(stated.group(2))) == (
                    meta["lo"],
                    meta["hi"],
                ), f"[{section}] {f.name}: {comment}"
            for choice in meta["choices"] or ():
                assert choice in comment, f"[{section}] {f.name}: {choice!r} not in {comment!r}"


# -- where the file comes from ---------------------------------------------------------


@pytest.fixture
def three_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A config for --config, one for $LLM_PESSOAL_CONFIG, one in the cwd, one in XDG."""
    made = {}
    for name in ("explicit", "env", "cwd", "xdg"):
        folder = {"cwd": tmp_path / "cwd", "xdg": tmp_path / "xdg" / "llm-pessoal"}.get(
            name, tmp_path / name
        )
        made[name] = write(folder / "config.toml", f'[ollama]\ndefault_model = "{name}"\n')
    monkeypatch.chdir(tmp_path / "cwd")
    return made


def test_explicit_config_wins_over_env_and_cwd(three_configs: dict[str, Path]) -> None:
    env = {ENV_CONFIG: str(three_configs["env"]), "XDG_CONFIG_HOME": str(three_configs["xdg"])}
    s = load_settings(three_configs["explicit"], env=env)
    assert s.ollama.default_model == "explicit"
    assert s.source == three_configs["explicit"].resolve()


def test_env_config_wins_over_cwd(three_configs: dict[str, Path]) -> None:
    s = load_settings(None, env={ENV_CONFIG: str(three_configs["env"])})
    assert s.ollama.default_model == "env"


def test_cwd_config_then_user_config_then_defaults(
    three_configs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = str(tmp_path / "xdg")
    assert load_settings(None, env={"XDG_CONFIG_HOME": xdg}).ollama.default_model == "cwd"
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, env={"XDG_CONFIG_HOME": xdg}).ollama.default_model == "xdg"
    data = tmp_path / "data-home"
    s = load_settings(
        None, env={"XDG_CONFIG_HOME": str(tmp_path / "none"), "XDG_DATA_HOME": str(data)}
    )
    assert s.source is None
    assert s.ollama == Settings().ollama
    assert s.paths.database == data / "llm-pessoal" / "data" / "llm-pessoal.db"


@pytest.mark.parametrize("how", ["explicit", "env"])
def test_a_config_file_that_is_not_there_is_an_error(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        if how == "explicit":
            load_settings(missing, env={})
        else:
            load_settings(None, env={ENV_CONFIG: str(missing)})
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_paths_resolve_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(
        tmp_path / "conf" / "config.toml",
        "[paths]\n"
        'database = "db/chat.db"\n'
        'outputs = "../pictures"\n'
        f"logs = {str(tmp_path / 'abs-logs')!r}\n"
        'cache = "~/models"\n',
    )
    monkeypatch.chdir(write(tmp_path / "elsewhere" / "x", "").parent)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = load_settings(cfg, env={})
    assert s.paths.database == tmp_path / "conf" / "db" / "chat.db"
    assert s.paths.outputs == tmp_path / "pictures"
    assert s.paths.logs == tmp_path / "abs-logs"
    assert s.paths.cache == tmp_path / "home" / "models"
    assert s.paths.exports == tmp_path / "conf" / "exports"  # a default, relative to the file


# -- environment overrides -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_host", "reached"),
    [
        ("127.0.0.1:11435", "http://127.0.0.1:11435"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:11500", "http://127.0.0.1:11500"),
        ("http://0.0.0.0:11500", "http://127.0.0.1:11500"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080/ollama", "http://gpu-box:8080/ollama"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("  localhost:1234 ", "http://localhost:1234"),
        ("0.0.0.0.example.com", "http://0.0.0.0.example.com:11434"),
    ],
)
def test_ollama_host_env_overrides_the_file(tmp_path: Path, given_host: str, reached: str) -> None:
    cfg = write(tmp_path / "config.toml", '[ollama]\nhost = "http://elsewhere:9999"\n')
    s = load_settings(cfg, env={"OLLAMA_HOST": given_host})
    assert ChatEngine(s.ollama.host).host == reached


@pytest.mark.parametrize(
    "form",
    [
        "1.2.3.4",
        ":56789",
        "1.2.3.4:56789",
        "http://1.2.3.4",
        "https://1.2.3.4",
        "https://1.2.3.4:56789",
        "example.com",
        "http://example.com",
        "example.com:56789/",
        "example.com/path",
        "https://example.com:56789/path",
        "[0001:002:003:0004::1]",
        "http://[0001:002:003:0004::1]",
        "[0001:002:003:0004::1]:56789/path",
    ],
)
def test_hosts_mean_what_they_mean_to_the_official_client(form: str) -> None:
    """OLLAMA_HOST is Ollama's own variable: it must reach the same server as ``ollama``'s."""
    assert normalize_host(form) == _parse_host(form)


@pytest.mark.parametrize(
    "bad", ["ftp://box:11434", "://box", "http://", "http://a b", "a b:11434", "http://a\tb"]
)
def test_a_bad_ollama_host_is_a_config_error(tmp_path: Path, bad: str) -> None:
    cfg = write(tmp_path / "config.toml", "")
    with pytest.raises(ConfigError, match="OLLAMA_HOST"):
        load_settings(cfg, env={"OLLAMA_HOST": bad})
    write(cfg, f"[ollama]\nhost = {bad!r}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert str(cfg) in str(info.value) and "host" in str(info.value)


def test_log_level_and_debug_override_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.toml", '[logging]\nlevel = "ERROR"\n')
    assert load_settings(cfg, env={}).logging.level == "ERROR"
    assert load_settings(cfg, env={"LOG_LEVEL": "warning"}).logging.level == "WARNING"
    assert load_settings(cfg, env={"DEBUG": "true"}).logging.level == "DEBUG"
    assert load_settings(cfg, env={"DEBUG": "1", "LOG_LEVEL": "ERROR"}).logging.level == "DEBUG"
    assert load_settings(cfg, env={"DEBUG": "false"}).logging.level == "ERROR"
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={"LOG_LEVEL": "loud"})
    assert "LOG_LEVEL" in str(info.value) and "WARNING" in str(info.value)


# -- bad files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[ollama]\nhost = \n", ["not valid TOML", "line 2"]),
        ('[ollama]\ntimeout = "30"\n', ["[ollama] timeout", "'30'", "a number from 1 to 3600"]),
        ("[ollama]\nmax_tokens = true\n", ["[ollama] max_tokens", "a whole number from 1 to"]),
        ("[ollama]\nmax_tokens = 10.5\n", ["[ollama] max_tokens", "10.5", "a whole number"]),
        ("[diffusion]\nsteps = 20.0\n", ["[diffusion] steps", "a whole number from 1 to 150"]),
        ('[ollama]\nhots = "x"\n', ["[ollama]", "'hots'", "did you mean 'host'"]),
        ('[olama]\nhost = "x"\n', ["section", "'[olama]'", "did you mean '[ollama]'"]),
        ("[chat]\ntemperature = 3\n", ["[chat] temperature", "3", "from 0 to 2"]),
        ("[chat]\ntemperature = -0.1\n", ["[chat] temperature", "from 0 to 2"]),
        ("[chat]\ntemperature = nan\n", ["[chat] temperature", "nan", "from 0 to 2"]),
        ("[ollama]\ntimeout = inf\n", ["[ollama] timeout", "inf", "from 1 to 3600"]),
        ('[diffusion]\ndevice = "gpu"\n', ["[diffusion] device", "'gpu'", "'cuda'", "'cpu'"]),
        ('[logging]\nlevel = "LOUD"\n', ["[logging] level", "'INFO'", "'DEBUG'"]),
        ('[ui]\nscreen = "images"\n', ["[ui] screen", "'image'"]),
        ("[diffusion]\nwidth = 500\n", ["[diffusion] width", "500", "multiple of 8"]),
        ("[diffusion]\nheight = 4096\n", ["[diffusion] height", "from 64 to 2048"]),
        ('[paths]\ndatabase = ""\n', ["[paths] database", "a path"]),
        ('[paths]\nlogs = "bad\\u0000name"\n', ["[paths] logs"]),
        ("[paths]\noutputs = 3\n", ["[paths] outputs", "a path"]),
        ('[paths]\ncache = "~nosuchuser-llm-pessoal/x"\n', ["[paths] cache", "~nosuchuser"]),
        ("ollama = 3\n", ["[ollama]", "table"]),
        ("[diffusion]\nfast = 1\n", ["[diffusion] fast", "true or false"]),
        ('[ollama]\nkeep_alive = "five minutes"\n', ["[ollama] keep_alive", "5m"]),
        ('[ollama]\ndefault_model = ""\n', ["[ollama] default_model", "a non-empty string"]),
        ('[ollama]\ndefault_model = "  "\n', ["[ollama] default_model", "a non-empty string"]),
        ('[diffusion]\nmodel = ""\n', ["[diffusion] model", "a non-empty string"]),
        ('[ollama]\nhost = "http://a b"\n', ["[ollama] host", "'a b' is not a host name"]),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_what_is_allowed(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    cfg = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    message = str(info.value)
    assert message.startswith(str(cfg)), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(b'[ollama]\nhost = "\xff"\n')
    with pytest.raises(ConfigError, match=re.escape(str(cfg))):
        load_settings(cfg, env={})


def test_good_values_are_accepted_and_converted(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.toml",
        '[ollama]\ntimeout = 30\nkeep_alive = "1h30m"\n'
        '[diffusion]\nguidance = 0\nscheduler = "dpm++ 2m karras"\nwidth = 768\n'
        '[chat]\nseed = 42\n[logging]\nlevel = "debug"\n',
    )
    s = load_settings(cfg, env={})
    assert s.ollama.timeout == 30.0 and isinstance(s.ollama.timeout, float)
    assert s.ollama.keep_alive == "1h30m"
    assert s.diffusion.guidance == 0.0
    assert s.diffusion.scheduler == "DPM++ 2M Karras"
    assert s.diffusion.width == 768
    assert s.chat.seed == 42
    assert s.logging.level == "DEBUG"


# -- any document: a ConfigError or settings, never a crash ----------------------------

_KEYS = [(s, k) for s, k, _, _ in describe_settings()]
_TRICKY = [
    "",
    " ",
    "~",
    "~nosuchuser-llm-pessoal",
    "0.0.0.0",
    "http://",
    "ftp://x",
    "[::1]",
    "[",
    "auto",
    "AUTO",
    "euler A",
    "5m",
    "-1",
    "x\x00y",
    "../../..",
    "/",
]
_scalars = st.one_of(
    st.text(max_size=20),
    st.sampled_from(_TRICKY),
    st.text(max_size=8).map(lambda t: "~" + t),  # paths expand "~" and "~user"
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.dates(),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_odd_name = st.text(min_size=1, max_size=8)


def _section(name: str) -> st.SearchStrategy[tuple[str, Any]]:
    """A section of mostly real keys (so values get checked), now and then an odd one."""
    keys = [k for s, k in _KEYS if s == name] or ["x"]
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys), _odd_name)
    table = st.dictionaries(key, _values, min_size=1, max_size=4)
    return st.tuples(st.just(name), st.one_of(table, table, table, _scalars))


_real_section = st.sampled_from(list(SECTIONS))
_one_key = st.tuples(st.sampled_from(_KEYS), _values).map(lambda kv: {kv[0][0]: {kv[0][1]: kv[1]}})
_documents = st.one_of(
    _one_key,
    st.lists(
        st.one_of(_real_section, _real_section, _real_section, _odd_name).flatmap(_section),
        max_size=4,
    ).map(dict),
)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    return value.isoformat()  # type: ignore[no-any-return]


def _toml_char(c: str) -> str:
    if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF:
        return f"\\u{ord(c):04x}" if not 0xD800 <= ord(c) <= 0xDFFF else "\\ufffd"
    return c


def _toml_key(key: str) -> str:
    return '"' + "".join(_toml_char(c) for c in key) + '"'


def _toml(document: dict[str, Any]) -> str:
    top = [
        f"{_toml_key(k)} = {_toml_scalar(v)}"
        for k, v in document.items()
        if not isinstance(v, dict)
    ]
    lines = [*top]
    for section, keys in document.items():
        if isinstance(keys, dict):
            lines.append(f"[{_toml_key(section)}]")
            lines += [f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
@example({"paths": {"cache": "~nosuchuser-llm-pessoal/models"}})
@example({"ollama": {"host": "http://[::1"}})
@example({"ollama": {"host": "localhost:99999"}})
@example({"diffusion": {"width": 10**30, "guidance": float("inf")}})
@example({"chat": {"temperature": float("nan")}})
def test_any_document_gives_settings_or_a_config_error(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cfg = Path(folder) / "config.toml"
        cfg.write_text(_toml(document), encoding="utf-8")
        try:
            s = load_settings(cfg, env={})
        except ConfigError as exc:
            assert str(cfg) in str(exc)
            return
        assert isinstance(s, Settings)
        assert all(p.is_absolute() for p in vars(s.paths).values())
        ChatEngine(s.ollama.host)  # whatever was accepted is an address the engine takes


def test_limits_are_the_ones_requests_and_the_form_use(tmp_path: Path) -> None:
    """One source: what [diffusion] and [chat] refuse is what engines.limits says."""
    from engines.limits import CHAT_MAX_TOKENS, IMAGE_SIDE, IMAGE_STEPS

    for text, limit in (
        (f"[diffusion]\nwidth = {int(IMAGE_SIDE.hi) + 8}\n", IMAGE_SIDE),
        (f"[diffusion]\nsteps = {int(IMAGE_STEPS.hi) + 1}\n", IMAGE_STEPS),
        (f"[ollama]\nmax_tokens = {int(CHAT_MAX_TOKENS.hi) + 1}\n", CHAT_MAX_TOKENS),
    ):
        cfg = write(tmp_path / "config.toml", text)
        with pytest.raises(ConfigError, match=re.escape(limit.describe())):
            load_settings(cfg, env={})
    cfg = write(tmp_path / "config.toml", f"[diffusion]\nwidth = {int(IMAGE_SIDE.hi)}\n")
    assert load_settings(cfg, env={}).diffusion.width == IMAGE_SIDE.hi


def test_the_shipped_config_states_the_same_limits() -> None:
    from engines.limits import (
        CHAT_MAX_TOKENS,
        IMAGE_GUIDANCE,
        IMAGE_SIDE,
        IMAGE_STEPS,
    )

    lines = {
        line.split("=")[0].strip(): line
        for line in SHIPPED.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    }
    for key, limit in (
        ("max_tokens", CHAT_MAX_TOKENS),
        ("width", IMAGE_SIDE),
        ("height", IMAGE_SIDE),
        ("steps", IMAGE_STEPS),
        ("guidance", IMAGE_GUIDANCE),
    ):
        assert f"({limit.span('-')}" in lines[key], lines[key]
