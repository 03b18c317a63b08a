"""Self-play as a row source: stages, left-over rows, skipped stages, state — with scripted and
fixed-text agents, no model."""

from __future__ import annotations

import threading

import pytest

import envs
from agents import TextAgent, make_agent
from agents.rollout import RolloutRunner
from trainers.advantages import RoleBaselines
from trainers.recipes import DuelRecipe, SpyRecipe
from trainers.schedules import FixedAlternation, IterativeSPO
from trainers.selfplay import SelfPlay


class Mute(TextAgent):
    """Never writes a well-formed anything."""

    def answer(self, observation: dict) -> str:
        return "hmm"


def spy_selfplay(schedule, asynchronous: bool = False) -> SelfPlay:
    runner = RolloutRunner(lambda: envs.make("spy"), make_agent("scripted", game="spy", seed=0),
                           parallel_games=2)
    return SelfPlay(runner, SpyRecipe(schedule, RoleBaselines()), games_per_round=2,
                    asynchronous=asynchronous)


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


def rows_key(rows) -> list[tuple]:
    return [(r.turn.game_id, r.turn.turn, r.turn.seat, r.policy_version) for r in rows]


def test_asynchronous_play_is_one_step_off_and_its_pending_round_is_checkpointed(tmp_path):
    from types import SimpleNamespace

    from trainers.selfplay import PENDING_FILE, SaveSelfPlayState

    selfplay = spy_selfplay(FixedAlternation(cycle=1), asynchronous=True)
    rows = selfplay(4)  # decision: round 1 played now by policy 0; round 2 starts behind
    assert {r.policy_version for r in rows} == {0} and selfplay.games_played == 2
    assert selfplay.metrics["selfplay/policy_lag"] == 0.0
    selfplay.wait_for_rollouts()
    assert selfplay.games_played == 2  # played, not yet taken
    rows = selfplay(4)  # clue, training policy 1: round 1's left-overs, round 2 joins the pool
    assert selfplay.games_played == 4 and {r.policy_version for r in rows} == {0}
    assert selfplay.metrics["selfplay/policy_lag"] == 1.0
    # the checkpoint waits for round 3 (played by policy 1) and keeps it for the next step
    SaveSelfPlayState(selfplay).on_save(SimpleNamespace(output_dir=str(tmp_path),
                                                        process_index=0),
                                        SimpleNamespace(global_step=2), None)
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / PENDING_FILE).is_file()
    resumed = spy_selfplay(FixedAlternation(cycle=1), asynchronous=True)
    SaveSelfPlayState.load(resumed, checkpoint)
    # decision, training policy 2: round 2's votes are two steps old; round 3's are taken
    expected, got = selfplay(4), resumed(4)
    assert rows_key(got) == rows_key(expected) and {r.policy_version for r in got} == {1}
    assert [r.advantage for r in got] == [r.advantage for r in expected]
    assert resumed.games_played == selfplay.games_played == 6


def test_synchronous_play_trains_its_own_rounds_and_left_overs_one_step_old():
    selfplay = spy_selfplay(FixedAlternation(cycle=1))
    selfplay(4)
    rows = selfplay(4)  # clue: the first round's clues, one step old
    assert {r.policy_version for r in rows} == {0}
    assert selfplay.metrics["selfplay/policy_lag"] == 1.0
    rows = selfplay(4)  # decision: a new round by policy 2
    assert {r.policy_version for r in rows} == {2}
    assert selfplay.metrics["selfplay/policy_lag"] == 0.0


def test_a_round_played_ahead_feeds_the_next_steps_oldest_rows_first_up_to_the_lag():
    """Playing ahead: a round of 4 games (32 clues) feeds steps of 4 clues for as long as
    its rows are at most ``max_policy_lag`` versions old; each step takes the oldest rows."""
    runner = RolloutRunner(lambda: envs.make("spy"), make_agent("scripted", game="spy", seed=0),
                           parallel_games=4)
    clues_only = FixedAlternation(cycle=100, stages=("clue", "decision"))
    selfplay = SelfPlay(runner, SpyRecipe(clues_only, RoleBaselines()), games_per_round=4,
                        max_policy_lag=3)
    taken, lags = [], []
    for _ in range(5):
        taken.append(selfplay(4))
        lags.append(selfplay.metrics["selfplay/policy_lag"])
    assert [{r.policy_version for r in rows} for rows in taken] == [{0}] * 4 + [{4}]
    assert lags == [0, 1, 2, 3, 0]
    assert selfplay.games_played == 8  # a new round only once the first one's rows were 3 old
    first_round = [key for rows in taken[:4] for key in rows_key(rows)]
    assert len(set(first_round)) == 16  # no row trained twice
    same_round = SelfPlay(RolloutRunner(lambda: envs.make("spy"),
                                        make_agent("scripted", game="spy", seed=0),
                                        parallel_games=4),
                          SpyRecipe(clues_only, RoleBaselines()), games_per_round=4)
    assert first_round == rows_key(same_round(16))  # the round's rows in their order
    with pytest.raises(ValueError, match="max_policy_lag must be >= 1 with asynchronous play"):
        SelfPlay(runner, SpyRecipe(clues_only, RoleBaselines()), games_per_round=4,
                 asynchronous=True, max_policy_lag=0)
    with pytest.raises(ValueError, match="max_policy_lag must be >= 0, got -1"):
        SelfPlay(runner, SpyRecipe(clues_only, RoleBaselines()), games_per_round=4,
                 max_policy_lag=-1)


def test_rows_played_ahead_survive_a_checkpoint(tmp_path):
    from types import SimpleNamespace

    from trainers.selfplay import SaveSelfPlayState

    def played_ahead() -> SelfPlay:
        runner = RolloutRunner(lambda: envs.make("spy"),
                               make_agent("scripted", game="spy", seed=0), parallel_games=4)
        return SelfPlay(runner, SpyRecipe(FixedAlternation(cycle=100), RoleBaselines()),
                        games_per_round=4, max_policy_lag=3)

    selfplay = played_ahead()
    selfplay(3), selfplay(3)  # decision: 12 votes a round, 6 taken
    SaveSelfPlayState(selfplay).on_save(SimpleNamespace(output_dir=str(tmp_path),
                                                        process_index=0),
                                        SimpleNamespace(global_step=2), None)
    resumed = played_ahead()
    SaveSelfPlayState.load(resumed, tmp_path / "checkpoint-2")
    for _ in range(3):  # the round's last 6 votes, then a new round
        expected, got = selfplay(3), resumed(3)
        assert rows_key(got) == rows_key(expected)
        assert [r.advantage for r in got] == [r.advantage for r in expected]
    assert resumed.games_played == selfplay.games_played == 8


class FailsInTheBackground(TextAgent):
    """A model that answers in the main thread and fails in any other (as a server going away
    during a background round would)."""

    def answer(self, observation: dict) -> str:
        if threading.current_thread() is not threading.main_thread():
            raise ConnectionError("the model server went away")
        return "\\boxed{a red cube}"


def test_a_round_failing_in_the_background_fails_the_next_step():
    runner = RolloutRunner(lambda: envs.make("spy"), FailsInTheBackground(), parallel_games=2)
    selfplay = SelfPlay(runner, SpyRecipe(FixedAlternation(cycle=1), RoleBaselines()),
                        games_per_round=2, asynchronous=True)
    selfplay(2)
    with pytest.raises(ConnectionError, match="went away"):
        selfplay.wait_for_rollouts()
    with pytest.raises(ConnectionError, match="went away"):
        selfplay(2)
