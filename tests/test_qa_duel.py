"""QA duel: question format, majority pseudo-label, dual-track reward, difficulty band."""

from __future__ import annotations

import numpy as np
import pytest

from games.qa_duel import QADuelConfig, QADuelGame, parse_question

QUESTION = """<description>Three cubes.</description>
<question>How many cubes are there?
A) 1
B) 2
C) 3
D) 4</question>
<answer>C</answer>"""


def play(source, answers: list[str], question: str = QUESTION, **options) -> QADuelGame:
    game = QADuelGame(QADuelConfig(num_answers=len(answers), **options), source,
                      np.random.default_rng(0), "q")
    game.play(game.pending()[0].index, question)
    for turn, answer in zip(game.pending(), answers, strict=True):
        assert (turn.seat, turn.role, turn.phase) == ("solver_1", "solver", "answer")
        assert "How many cubes" in turn.prompt
        game.play(turn.index, answer)
    assert game.done
    return game


def test_parse_question():
    q = parse_question(QUESTION)
    assert q.stem == "How many cubes are there?"
    assert q.options == {"A": "1", "B": "2", "C": "3", "D": "4"}
    assert q.intuitive == "C"
    assert parse_question(QUESTION.replace("A) 1", "(A) 1")).options["A"] == "1"


@pytest.mark.parametrize("broken", [
    QUESTION.replace("D) 4", ""),                         # three options
    QUESTION.replace("<answer>C</answer>", "<answer>Option C</answer>"),
    QUESTION.replace("<answer>C</answer>", "<answer>E</answer>"),
    QUESTION.replace("How many cubes are there?\n", ""),  # no stem
    QUESTION.replace("</question>", ""),
    "", "\x00\x01", "<question>A) 1 B) 2 C) 3 D) 4</question><answer>A</answer>",
])
def test_invalid_question_scores_minus_one_and_ends(solid_source, broken):
    game = QADuelGame(QADuelConfig(), solid_source, np.random.default_rng(0), "q")
    game.play(game.pending()[0].index, broken)
    assert game.done
    assert game.seat_rewards() == {"questioner_1": -1.0, "solver_1": 0.0}
    assert game.stats()["valid_question"] == 0.0


def test_agreeing_majority_rewards_uncertainty(solid_source):
    answers = ["\\boxed{C}"] * 6 + ["\\boxed{A}"] * 3 + ["garbage"]
    game = play(solid_source, answers)
    assert game.pseudo_label == "C"
    stats = game.stats()
    assert stats["confidence"] == pytest.approx(0.6)   # invalid answers count in the total
    assert stats["agrees"] == 1.0 and stats["in_band"] == 1.0
    assert game.moves[0].reward == pytest.approx(0.4)  # min(0.6, 0.4)
    assert [m.reward for m in game.moves[1:]] == [1.0] * 6 + [0.0] * 4
    assert game.seat_rewards()["solver_1"] == pytest.approx(0.6)
    assert stats["valid_answer_rate"] == pytest.approx(0.9)


def test_disagreeing_majority_and_the_known_exploit(solid_source):
    game = play(solid_source, ["\\boxed{A}"] * 10)     # unanimous, intuitive answer was C
    assert game.moves[0].reward == pytest.approx(0.5)  # 0.5 * c: the maximum, the exploit
    assert game.stats()["in_band"] == 0.0              # ...which the difficulty filter drops


def test_ties_go_to_the_letter_answered_first(solid_source):
    game = play(solid_source, ["\\boxed{D}", "\\boxed{B}", "\\boxed{D}", "\\boxed{B}"])
    assert game.pseudo_label == "D"  # not the earliest letter, B (tests/test_fidelity.py)


def test_no_valid_answer(solid_source):
    game = play(solid_source, ["?"] * 3)
    assert game.pseudo_label is None
    assert game.seat_rewards() == {"questioner_1": 0.0, "solver_1": 0.0}


def test_pluggable_rule(solid_source):
    game = play(solid_source, ["\\boxed{A}"] * 7 + ["\\boxed{C}"] * 3,
                questioner_reward="uncertainty")
    assert game.moves[0].reward == pytest.approx(0.3)
    custom = play(solid_source, ["\\boxed{C}"] * 2, questioner_reward=lambda c, agrees: 7.0)
    assert custom.moves[0].reward == 7.0


@pytest.mark.parametrize(("options", "message"), [
    ({"num_answers": 0}, "num_answers"),
    ({"questioner_reward": "vibes"}, "questioner_reward"),
    ({"band": (0.9, 0.1)}, "band"),
    ({"band": (0.1,)}, "band"),
])
def test_bad_config_values(options, message):
    with pytest.raises(ValueError, match=message):
        QADuelConfig(**options)


def test_a_student_is_scored_against_the_solvers_label_without_voting(solid_source):
    game = QADuelGame(QADuelConfig(num_answers=4, student_answers=3), solid_source,
                      np.random.default_rng(0), "q")
    assert game.seats(game.config) == ("questioner_1", "solver_1", "student_1")
    assert game.roles["student_1"] == "student"
    game.play(game.pending()[0].index, QUESTION)
    pending = game.pending()
    assert [t.seat for t in pending] == ["solver_1"] * 4 + ["student_1"] * 3
    assert all(t.phase == "answer" and t.prompt == pending[0].prompt for t in pending)
    # the solver votes B 3:1; the student's three A's would win a vote they are not part of
    for turn, answer in zip(pending, ["\\boxed{B}"] * 3 + ["\\boxed{D}"]
                            + ["\\boxed{A}", "\\boxed{A}", "\\boxed{B}"], strict=True):
        game.play(turn.index, answer)
    assert game.done and game.pseudo_label == "B"
    assert game.stats()["confidence"] == 0.75
    assert [m.reward for m in game.moves_of("student_1")] == [0.0, 0.0, 1.0]
    assert game.seat_rewards()["student_1"] == pytest.approx(1 / 3)
    assert game.stats()["student_agreement"] == pytest.approx(1 / 3)
    assert game.seat_rewards()["solver_1"] == 0.75


def test_without_a_student_the_duel_has_two_seats(solid_source):
    game = QADuelGame(QADuelConfig(), solid_source, np.random.default_rng(0), "q")
    assert game.seats(game.config) == ("questioner_1", "solver_1")
    with pytest.raises(ValueError, match="student_answers"):
        QADuelConfig(student_answers=-1)
