"""AUTOMATIC1111's prompt syntax read into weighted fragments (``engines/prompts.py``)."""

from __future__ import annotations

import pytest

from engines.prompts import LoraUse, PromptError, parse_attention, parse_prompt, take_loras


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red fox", [("a red fox", 1.0)]),
        ("a (red) fox", [("a ", 1.0), ("red", 1.1), (" fox", 1.0)]),
        ("a ((red)) fox", [("a ", 1.0), ("red", pytest.approx(1.21)), (" fox", 1.0)]),
        ("a (red:1.3) fox", [("a ", 1.0), ("red", 1.3), (" fox", 1.0)]),
        ("a (red: 0.5 ) fox", [("a ", 1.0), ("red", 0.5), (" fox", 1.0)]),
        ("a [red] fox", [("a ", 1.0), ("red", pytest.approx(1 / 1.1)), (" fox", 1.0)]),
        (r"a \(red\) \[fox\] \\", [("a (red) [fox] \\", 1.0)]),
        ("(unclosed", [("unclosed", 1.1)]),
        ("a: b", [("a: b", 1.0)]),
        ("a (b (c:2)) d", [("a ", 1.0), ("b ", 1.1), ("c", pytest.approx(2.2)), (" d", 1.0)]),
    ],
)
def test_emphasis_as_automatic1111_reads_it(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_break_splits_segments_and_only_as_a_word_in_capitals() -> None:
    assert parse_prompt("a fox BREAK (snow:1.2)").segments == [
        [("a fox", 1.0)],
        [("snow", 1.2)],
    ]
    assert parse_prompt("BREAKfast break").segments == [[("BREAKfast break", 1.0)]]


def test_lora_tags_are_taken_out_with_their_weights() -> None:
    text, loras = take_loras("a fox <lora:ink:0.8>, <lora:film grain> <LORA:ink:0.6>")
    assert text == "a fox ,  "  # as A1111, only the tags go
    assert loras == [LoraUse("ink", 0.6), LoraUse("film grain", 1.0)]
    assert parse_prompt("<lora:ink:0.5> a fox").loras == [LoraUse("ink", 0.5)]


def test_a_lora_weight_that_is_not_a_number_is_named() -> None:
    with pytest.raises(PromptError, match=r"<lora:ink:heavy>.*'heavy' is not a number"):
        take_loras("a fox <lora:ink:heavy>")
