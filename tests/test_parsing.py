"""Reading clues, votes and letters out of free text."""

import pytest

from games.parsing import last_boxed, parse_choice, parse_letter, parse_vote, text_before_last_boxed


@pytest.mark.parametrize(("text", "expected"), [
    ("I think \\boxed{a red cube}", "a red cube"),
    ("\\boxed{first} then \\boxed{ second }", "second"),
    ("nested \\boxed{a {b} c}", "a {b} c"),
    ("unclosed last \\boxed{x} and \\boxed{y", "x"),
    ("no box at all", None),
    ("", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


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
