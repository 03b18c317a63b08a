"""Every game step takes time linear in the action's length, whatever the action holds.

A model stuck repeating itself writes thousands of openers (``\\boxed{``, ``<answer>``, braces,
option lines); a parser with a lazy ``.*?`` or a rescan from each opener is quadratic in them, and
one such answer at the size limit once stalled every game of a batch for seconds. Each input here
goes through the environment's real step, at an eighth of the size limit and at the limit: eight
times the length may take eight times as long, plus noise (best of several runs, interleaved; the
linear steps here measured up to 7.2), but a ratio of 16 or more means quadratic work (a quadratic
parser gives up to 64; a rescan from each opener measured 26). A doubling, with a limit of 3
against a quadratic 4, failed on noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import envs
from envs.game_env import GameEnv
from tests.conftest import SolidColourSource
from tests.test_qa_duel import QUESTION

#: The turns timed: environment, phase and options (the shaped vote parses its text twice).
TURNS = {
    "spy-clue": ("spy", "clue", {}),
    "spy-shaped-vote": ("spy", "decision", {"decision_reward": "shaped"}),
    "duel-question": ("qa_duel", "question", {}),
    "duel-answer": ("qa_duel", "answer", {}),
}
#: What reaches the timed turn: a well-formed move for every earlier turn.
EARLIER_MOVES = {"spy": "I looked closely. \\boxed{a grey square}", "qa_duel": QUESTION}
REPEATS = 7
MAX_RATIO = 16.0


def filled(unit: str, prefix: str = "", suffix: str = "") -> Callable[[int], str]:
    """Text of a given length: ``prefix``, ``unit`` repeated, ``suffix``."""
    def text(length: int) -> str:
        repeats = length - len(prefix) - len(suffix)
        return prefix + (unit * repeats)[:repeats] + suffix

    return text


QUESTION_END = "y</question><answer>A</answer>"
ADVERSARIAL = {
    "unclosed-boxes": filled("\\boxed{"),
    "boxes-in-boxes": filled("\\boxed{\\boxed{{"),
    "unclosed-boxes-of-brace-pairs": filled("\\boxed{{}"),
    "box-of-open-braces": filled("{", prefix="\\boxed{"),
    "box-of-brace-pairs": filled("{}", prefix="\\boxed{"),
    "open-braces": filled("{"),
    "close-braces": filled("}"),
    "unclosed-answers": filled("<answer>"),
    "answers-with-broken-closers": filled("<answer><answer></answer"),
    "unclosed-questions": filled("<question>"),
    "unclosed-descriptions": filled("<description>"),
    "unclosed-tags-of-every-kind": filled("<answer><question><description>"),
    "option-markers": filled("A) "),
    "option-lines": filled("\nA)"),
    "question-of-blank-lines": filled("\n", "<question>x", QUESTION_END),
    "question-of-indented-lines": filled("\n ", "<question>x", QUESTION_END),
    "question-of-option-markers": filled("A) ", "<question>x\n", QUESTION_END),
    "question-of-option-lines": filled("\nA)", "<question>x", QUESTION_END),
    "question-of-open-parentheses": filled("\n(", "<question>x", QUESTION_END),
    "box-of-digits-and-points": filled("1.", "\\boxed{", "}"),
    "box-of-signs": filled("-+", "\\boxed{", "1}"),
    "box-of-n/a": filled("n /", "\\boxed{", "}"),
    "answer-of-letters": filled("(A", "<answer>", "</answer>"),
    "less-thans": filled("<"),
}


def seconds_to_step(env: GameEnv, phase: str, text: str) -> float:
    """The time of one ``env.step(text)`` at the first turn of ``phase`` of a fresh game."""
    env.reset(seed=0)
    while env.game.pending()[0].phase != phase:
        env.step(EARLIER_MOVES[env.metadata["name"]])
    start = time.perf_counter()
    env.step(text)
    return time.perf_counter() - start


@pytest.mark.parametrize("text_of", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
@pytest.mark.parametrize("turn", TURNS.values(), ids=TURNS.keys())
def test_a_step_takes_time_linear_in_the_action(turn, text_of):
    name, phase, options = turn
    env = envs.make(name, source=SolidColourSource(), **options)
    limit = env.max_action_chars
    short = limit // 8
    texts = {size: text_of(size) for size in (short, limit)}
    assert all(len(text) == size for size, text in texts.items())
    best = dict.fromkeys(texts, float("inf"))
    for _ in range(REPEATS):
        for size, text in texts.items():
            best[size] = min(best[size], seconds_to_step(env, phase, text))
    ratio = best[limit] / best[short]
    assert ratio < MAX_RATIO, (
        f"{name} {phase}: {best[short] * 1e3:.2f} ms at {short} characters, "
        f"{best[limit] * 1e3:.2f} ms at {limit}: eight times the text took "
        f"{ratio:.1f} times as long")
