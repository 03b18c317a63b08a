"""Reading clues, votes and letters out of free text."""

import random

import pytest

from games.parsing import (
    last_boxed,
    parse_choice,
    parse_letter,
    parse_vote,
    tagged,
    text_before_last_boxed,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("I think \\boxed{a red cube}", "a red cube"),
    ("\\boxed{first} then \\boxed{ second }", "second"),
    ("nested \\boxed{a {b} c}", "a {b} c"),
    ("unclosed last \\boxed{x} and \\boxed{y", "x"),
    ("no box at all", None),
    ("", None),
    ("\\boxed{a \\boxed{b} c}", "b"),                 # the box starting last that closes
    ("\\boxed{{x}} then \\boxed{{ never", "{x}"),
    ("}}\\boxed{{}", None),
    ("\\boxed{\ud800{é}🙂} \\boxed{{\ud800}", "\ud800{é}🙂"),  # code points, not bytes
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def reference_last_boxed(text: str) -> str | None:
    """The definition, one character at a time: the box starting last whose brace closes."""
    starts = [i for i in range(len(text)) if text.startswith("\\boxed{", i)]
    for start in reversed(starts):
        depth = 0
        for i in range(start + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start + len("\\boxed{"): i].strip()
    return None


def test_last_boxed_matches_its_definition_on_random_brace_soup():
    pieces = ["\\boxed{", "\\boxed", "{", "}", "{}", "a", " ", "é", "\\"]
    generator = random.Random(0)
    for _ in range(3000):
        text = "".join(generator.choices(pieces, k=generator.randrange(25)))
        assert last_boxed(text) == reference_last_boxed(text), text


@pytest.mark.parametrize(("text", "expected"), [
    ("<answer> B </answer>", "B"),
    ("<ANSWER>b</Answer>", "b"),
    ("<answer>first</answer><answer>second</answer>", "first"),
    ("<answer><answer>x</answer>", "<answer>x"),
    ("</answer> <answer>x", None),                       # no closer after the opener
    ("<answer>" * 100, None),
])
def test_tagged(text, expected):
    assert tagged(text, "answer") == expected


def test_text_before_last_boxed():
    assert text_before_last_boxed("reason here \\boxed{1} more \\boxed{2}") == (
        "reason here \\boxed{1} more")


@pytest.mark.parametrize(("text", "player", "abstain"), [
    ("\\boxed{3}", 3, False),
    ("Player 2 is odd. \\boxed{Player 4}", 4, False),
    ("\\boxed{N/A}", None, True),
    ("\\boxed{ na }", None, True),
    ("<answer>2</answer>", 2, False),
    ("thinking <answer> 4", 4, False),
    ("\\boxed{N/A}  then later <answer>2</answer>", None, True),
    ("\\boxed{7}", None, False),          # no such player
    ("\\boxed{1}", None, False),          # the voter itself
    ("\\boxed{0}", None, False),
    ("\\boxed{2.5}", None, False),
    # a signed, fractional or suffixed number is no player's number: an invalid vote
    ("\\boxed{-1}", None, False),
    ("\\boxed{-3}", None, False),
    ("\\boxed{\u22123}", None, False),                  # the minus sign
    ("\\boxed{+2}", None, False),
    ("\\boxed{1.5}", None, False),
    ("\\boxed{.3}", None, False),
    ("\\boxed{2nd}", None, False),
    ("\\boxed{P3}", None, False),
    ("\\boxed{3.}", 3, False),                           # a full stop ends the sentence
    ("\\boxed{Player 3.}", 3, False),
    ("\\boxed{-1, I mean 3}", 3, False),                 # the first standalone number
    ("I vote 3", None, False),            # no answer region
    ("\\boxed{nobody}", None, False),
])
def test_parse_vote(text, player, abstain):
    vote = parse_vote(text, num_players=4, voter=1)
    assert (vote.player, vote.abstain) == (player, abstain)
    assert vote.valid == (player is not None or abstain)


@pytest.mark.parametrize(("text", "letter"), [
    ("B", "B"), ("(C)", "C"), ("D) 30 degrees", "D"), ("A. red", "A"), (" b", None),
    ("E", None), ("Both", None), ("", None),
])
def test_parse_letter(text, letter):
    assert parse_letter(text) == letter


def test_parse_choice_prefers_box_then_answer_tag():
    assert parse_choice("<think>hmm</think> \\boxed{C}") == "C"
    assert parse_choice("<answer>A</answer>") == "A"
    assert parse_choice("the answer is B") is None
