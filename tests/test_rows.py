"""Turns to training rows: stage filtering and advantages against hand-computed values."""

from __future__ import annotations

import pytest

from agents.trajectory import GameResult, TurnRecord
from trainers.advantages import RoleBaselines
from trainers.rows import qa_duel_rows, spy_rows


def turn(game: str, index: int, seat: str, role: str, phase: str, reward: float) -> TurnRecord:
    return TurnRecord(game_id=game, env="spy", turn=index, seat=seat, role=role, phase=phase,
                      round=1 if phase == "clue" else 0, agent="a", prompt="p", images=[],
                      text="t", prompt_ids=[1], completion_ids=[2], logprobs=[-1.0],
                      reward=reward)


def spy_game(game: str, spy_reward: float, votes: list[float]) -> GameResult:
    civilian = -spy_reward / 2
    turns = [turn(game, 0, "player_1", "spy", "clue", spy_reward),
             turn(game, 1, "player_2", "civilian", "clue", civilian),
             turn(game, 2, "player_3", "civilian", "clue", civilian)]
    turns += [turn(game, 3 + i, "observer_1", "observer", "decision", v)
              for i, v in enumerate(votes)]
    return GameResult(game, "spy", {}, {}, {}, turns)


def test_clue_stage_rows_use_role_baselines_then_update_them():
    baselines = RoleBaselines(decay=0.9)
    games = [spy_game("g1", -0.6, [1.0, -1.0]), spy_game("g2", -0.2, [1.0, 1.0])]
    rows = spy_rows(games, baselines)["clue"]
    assert [r.turn.phase for r in rows] == ["clue"] * 6
    assert [r.advantage for r in rows] == pytest.approx([-0.6, 0.3, 0.3, -0.2, 0.1, 0.1])
    assert baselines.values[("spy", "spy")] == pytest.approx(0.1 * -0.4)
    again = spy_rows(games, baselines)["clue"]
    assert again[0].advantage == pytest.approx(-0.6 + 0.04)


def test_decision_stage_rows_are_normalised_per_game_and_still_move_the_baselines():
    baselines = RoleBaselines(decay=0.9)
    rows = spy_rows([spy_game("g1", -0.6, [1.0, -1.0]), spy_game("g2", -0.2, [1.0, 1.0])],
                    baselines)["decision"]
    assert [r.turn.phase for r in rows] == ["decision"] * 4
    assert [r.advantage for r in rows] == pytest.approx([1.0, -1.0, 0.0, 0.0])
    assert baselines.values[("spy", "spy")] == pytest.approx(0.1 * -0.4)


def test_qa_duel_rows_keep_answers_of_games_in_the_band():
    def game(name: str, in_band: float, rewards: list[float]) -> GameResult:
        turns = [turn(name, 0, "questioner_1", "questioner", "question", 0.4)]
        turns += [turn(name, 1 + i, "solver_1", "solver", "answer", r)
                  for i, r in enumerate(rewards)]
        return GameResult(name, "qa_duel", {}, {}, {"in_band": in_band}, turns)

    rows = qa_duel_rows([game("a", 1.0, [1.0, 0.0]), game("b", 0.0, [1.0, 1.0])])["answer"]
    assert [r.turn.game_id for r in rows] == ["a", "a"]
    assert [r.advantage for r in rows] == pytest.approx([1.0, -1.0])
    # two plays of image "a" (same seed, same game id) are answered apart: groups are games
    rows = qa_duel_rows([game("a", 1.0, [1.0, 0.0]), game("a", 1.0, [1.0, 1.0])])["answer"]
    assert [r.advantage for r in rows] == pytest.approx([1.0, -1.0, 0.0, 0.0])


def test_qa_duel_question_rows_are_grouped_by_image():
    def game(name: str, reward: float) -> GameResult:
        return GameResult(name, "qa_duel", {}, {}, {"in_band": 1.0},
                          [turn(name, 0, "questioner_1", "questioner", "question", reward)])

    rows = qa_duel_rows([game("a", 0.4), game("a", 0.0), game("b", -1.0), game("b", 0.5),
                         game("c", 0.2)])["question"]
    assert [r.turn.phase for r in rows] == ["question"] * 5
    assert [r.advantage for r in rows] == pytest.approx([1.0, -1.0, -1.0, 1.0, 0.0])
    assert qa_duel_rows([])["answer"] == []
