"""A plain start of the TUI reads its few arguments without building the whole parser; it
must read them exactly as the parser does, and leave everything else to the parser."""

from __future__ import annotations

import pytest

from tui.cli import build_parser, tui_arguments

PLAIN = [
    [],
    ["--config", "my config.toml"],
    ["--config=/etc/llm-pessoal/config.toml"],
    ["--screen", "image"],
    ["--screen=monitor", "--config", "c.toml"],
    ["--config", "c.toml", "--screen", "chat"],
]


@pytest.mark.parametrize("argv", PLAIN, ids=lambda a: " ".join(a) or "nothing")
def test_a_plain_start_reads_as_the_parser_does(argv: list[str]) -> None:
    quick = tui_arguments(argv)
    assert quick is not None
    # (a new top-level option fails this until tui_arguments knows it)
    assert vars(quick) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["--conf", "c.toml"],  # argparse's abbreviations
        ["--config"],
        ["--config", ""],
        ["--config", "--screen", "chat"],
        ["--screen", "gallery"],
        ["--config", "a.toml", "--config", "b.toml"],
        ["--version"],
        ["--help"],
        ["chat", "hello"],
        ["--config", "c.toml", "models"],
        ["--", "--config", "c.toml"],
    ],
    ids=lambda a: " ".join(a),
)
def test_anything_else_is_left_to_the_parser(argv: list[str]) -> None:
    assert tui_arguments(argv) is None
