"""Self-play as a row source: stages, left-over rows, skipped stages, state — with scripted and
fixed-text agents, no model."""

from __future__ import annotations

import pytest

import envs
from agents import TextAgent, make_agent
from agents.rollout import RolloutRunner
from trainers.advantages import RoleBaselines
from trainers.schedules import FixedAlternation, IterativeSPO
from trainers.selfplay import DuelRecipe, SelfPlay, SpyRecipe


class Mute(TextAgent):
    """Never writes a well-formed anything."""

    def answer(self, observation: dict) -> str:
        return "hmm"


def spy_selfplay(schedule) -> SelfPlay:
    runner = RolloutRunner(lambda: envs.make("spy"), make_agent("scripted", game="spy", seed=0),
                           parallel_games=2)
    return SelfPlay(runner, SpyRecipe(schedule, RoleBaselines()), games_per_round=2)


def test_stages_alternate_and_left_over_rows_wait_one_step_only():
    selfplay = spy_selfplay(FixedAlternation(cycle=1))
    rows = selfplay(4)  # decision: a round of 2 games gives 6 votes
    assert [r.turn.phase for r in rows] == ["decision"] * 4 and selfplay.games_played == 2
    assert selfplay.metrics["selfplay/stage_decision"] == 1.0
    assert "selfplay/vote_accuracy" in selfplay.metrics
    assert "selfplay/return_spy" in selfplay.metrics
    rows = selfplay(4)  # clue: the 16 clues of those games are still there
    assert [r.turn.phase for r in rows] == ["clue"] * 4 and selfplay.games_played == 2
    rows = selfplay(4)  # decision: the 2 votes left from the first step are too old now
    assert [r.turn.phase for r in rows] == ["decision"] * 4 and selfplay.games_played == 4
    assert len({id(r.turn) for r in rows}) == 4


def test_the_schedule_sees_each_step_once_and_state_round_trips():
    selfplay = spy_selfplay(IterativeSPO(min_steps=1))
    for _ in range(3):
        selfplay(2)
    assert selfplay.recipe.schedule.steps_in_stage == 3  # the scripted voters are not perfect
    state = selfplay.state_dict()
    fresh = spy_selfplay(IterativeSPO(min_steps=1))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


def test_a_starved_duel_stage_is_skipped_and_a_starved_run_is_an_error():
    runner = RolloutRunner(lambda: envs.make("qa_duel", num_answers=2), Mute(),
                           parallel_games=2)
    recipe = DuelRecipe(FixedAlternation(cycle=1, stages=("question", "answer")), repeats=2)
    selfplay = SelfPlay(runner, recipe, games_per_round=2, rounds_per_stage=2)
    assert [r.turn.phase for r in selfplay(2)] == ["question"] * 2
    # no valid question, so no answers: the solver's step falls back to the questioner's
    assert [r.turn.phase for r in selfplay(2)] == ["question"] * 2
    assert selfplay.skipped_stages == 1
    spy = RolloutRunner(lambda: envs.make("spy"), Mute(), parallel_games=2)
    with pytest.raises(RuntimeError, match="every spy game has clue and vote turns"):
        SelfPlay(spy, SpyRecipe(FixedAlternation(), RoleBaselines()), games_per_round=2,
                 rounds_per_stage=1)(100)
    with pytest.raises(ValueError, match="must alternate"):
        DuelRecipe(FixedAlternation())
