"""The rollout runner: pooled batches, exact records, determinism, and trajectories on disk."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

import envs
from agents import Agent, Completion, make_agent
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner
from agents.trajectory import load_results, save_results
from games.images import make_source

SOURCE = make_source("clevr", pool_size=8)


def make_spy(**options):
    return lambda: envs.make("spy", source=SOURCE, **options)


class Recording(Agent):
    """Wraps an agent; keeps every batch size and answers with made-up token fields."""

    def __init__(self, inner: Agent):
        self.inner, self.batches = inner, []

    def act(self, observations: Sequence[dict]) -> list[Completion]:
        self.batches.append(len(observations))
        return [Completion(c.text, prompt_ids=[len(o["prompt"]), 1], completion_ids=[7, 8, 9],
                           logprobs=[-0.5, -0.25, -0.125])
                for o, c in zip(observations, self.inner.act(observations), strict=True)]


def test_turns_of_all_games_are_pooled_into_one_call_per_step():
    agent = Recording(make_agent("scripted", game="spy", seed=0))
    runner = RolloutRunner(make_spy(decision="observer", observer_samples=8), agent,
                           parallel_games=6)
    results = runner.run(6, seed=0)
    assert agent.batches == [6] * 8 + [6 * 8]    # 8 clue turns, then all samples at once
    assert runner.timings.turns == sum(len(r.turns) for r in results) == 6 * 16
    assert runner.timings.agent_calls == len(agent.batches)
    assert 0 < runner.timings.agent_seconds < runner.timings.total_seconds  # agents' time inside


def test_repeated_samples_of_one_seat_are_one_request_for_n():
    class Sampling(Recording):
        def sample(self, observations, n):
            self.samples.append((len(observations), n))
            return super().sample(observations, n)

    agent = Sampling(make_agent("scripted", game="qa_duel", seed=0))
    agent.samples = []
    runner = RolloutRunner(lambda: envs.make("qa_duel", num_answers=5, source=SOURCE), agent,
                           parallel_games=3)
    results = runner.run(3, seed=0)
    assert agent.samples == [(3, 5)]            # 3 questions, 5 answers each, in one call
    assert agent.batches == [3, 15]
    assert all(len([t for t in r.turns if t.phase == "answer"]) == 5 for r in results)


def test_records_are_exact_and_rewards_match_the_game():
    agent = Recording(make_agent("scripted", game="spy", seed=0))
    [result] = RolloutRunner(make_spy(), agent, parallel_games=1).run(1, seed=4)
    for turn in result.turns:
        assert turn.completion_ids == [7, 8, 9] and turn.logprobs == [-0.5, -0.25, -0.125]
        assert turn.prompt_ids == [len(turn.prompt), 1]
        assert turn.game_id == result.game_id and turn.role == result.roles[turn.seat]
        assert len(turn.images) == 1 and turn.images[0].shape == (240, 320, 3)
    assert [t.phase for t in result.turns] == ["clue"] * 8 + ["decision"] * 3
    assert [t.round for t in result.turns[:8]] == [1, 1, 1, 1, 2, 2, 2, 2]
    env = make_spy()()
    env.reset(seed=4)
    assert result.game_id == env.game.game_id
    for seat, ret in result.returns.items():
        clue = [t.reward for t in result.turns if t.seat == seat and t.phase == "clue"]
        vote = [t.reward for t in result.turns if t.seat == seat and t.phase == "decision"]
        assert ret == pytest.approx(clue[0] + sum(vote))  # clue rewards are per player


def test_games_do_not_depend_on_parallelism_and_runs_replay_exactly():
    def run(parallel_games: int) -> list:
        agent = make_agent("scripted", game="spy", seed=3)
        return RolloutRunner(make_spy(), agent, parallel_games=parallel_games).run(5, seed=10)

    one, many = run(1), run(3)
    assert [(r.game_id, r.roles) for r in one] == [(r.game_id, r.roles) for r in many]
    assert many == run(3)  # the agent's own randomness follows the order of its calls


def test_repeats_replay_each_seed_for_groups_of_games():
    runner = RolloutRunner(make_spy(), make_agent("random", seed=0), parallel_games=3)
    grouped = runner.run(4, seed=10, repeats=2)
    single = runner.run(2, seed=10)
    assert [r.game_id for r in grouped] == [single[0].game_id] * 2 + [single[1].game_id] * 2
    assert grouped[0].roles == grouped[1].roles
    assert grouped[0].turns[0].text != grouped[1].turns[0].text  # answered afresh
    with pytest.raises(ValueError, match="repeats"):
        runner.run(2, repeats=0)


def test_seats_can_have_different_agents():
    spy_seats = Recording(make_agent("random", seed=0))
    others = Recording(make_agent("scripted", game="spy", seed=0))
    agents = {"player_1": spy_seats, "player_2": others, "player_3": others, "player_4": others}
    results = RolloutRunner(make_spy(), agents, parallel_games=4,
                            agent_names={s: "random" if s == "player_1" else "scripted"
                                         for s in agents}).run(4)
    assert {t.agent for r in results for t in r.turns if t.seat == "player_1"} == {"random"}
    assert sum(spy_seats.batches) == sum(1 for r in results for t in r.turns
                                         if t.seat == "player_1")
    with pytest.raises(ValueError, match="player_4"):
        RolloutRunner(make_spy(), {s: others for s in list(agents)[:3]})


def test_a_seating_function_picks_each_turn_s_agent_by_role():
    class Spy(Recording):
        pass

    class Civilian(Recording):
        pass

    spy, civilians = Spy(make_agent("scripted", game="spy", seed=0)), Civilian(make_agent("random"))
    runner = RolloutRunner(make_spy(), lambda seat, role: spy if role == "spy" else civilians,
                           parallel_games=6)
    results = runner.run(6, seed=0)
    assert len({seat for r in results for seat, role in r.roles.items() if role == "spy"}) > 1
    for result in results:
        for turn in result.turns:
            assert turn.agent == ("Spy" if turn.role == "spy" else "Civilian")
    # one call per agent per step: the spies' clues of 6 games at once, likewise the others'
    assert len(spy.batches) == 8 and len(civilians.batches) == 9
    assert sum(spy.batches) == sum(t.role == "spy" for r in results for t in r.turns)
    with pytest.raises(TypeError, match="must give an Agent"):
        RolloutRunner(make_spy(), lambda seat, role: None).run(1)
    with pytest.raises(TypeError, match="agents must be"):
        RolloutRunner(make_spy(), "scripted")


def test_an_agent_that_loses_answers_is_an_error():
    class Forgetful(Agent):
        def act(self, observations):
            return [Completion("\\boxed{x}")]

    with pytest.raises(RuntimeError, match="1 completions for 2"):
        RolloutRunner(make_spy(), Forgetful(), parallel_games=2).run(2)


def test_trajectories_reload_identically(default_model, tmp_path):
    """A model backend's real token ids and log-probs (the transformers agent on the default
    model), and an agent's turns without any (the random agent)."""
    model = make_agent("transformers", model=default_model,
                       sampling=SamplingConfig(max_tokens=8, seed=0))
    # the random model asks no valid question: each duel is its one question turn
    results = RolloutRunner(lambda: envs.make("qa_duel", source=SOURCE), model,
                            parallel_games=3).run(3, seed=0)
    results += RolloutRunner(make_spy(), make_agent("random", seed=0), parallel_games=2).run(2)
    save_results(results, tmp_path)
    reloaded = load_results(tmp_path)
    assert reloaded == results
    distinct = {turn.images[0].tobytes() for result in results for turn in result.turns}
    assert len(list((tmp_path / "images").iterdir())) == len(distinct)
    tokenizer = model.processor.tokenizer
    assert [len(result.turns) for result in reloaded[:3]] == [1, 1, 1]
    for turn in (result.turns[0] for result in reloaded[:3]):
        assert turn.text == tokenizer.decode(turn.completion_ids, skip_special_tokens=True)
        assert len(turn.logprobs) == len(turn.completion_ids)
    assert all(t.completion_ids is None for result in reloaded[3:] for t in result.turns)
    assert reloaded[0].turns[0].images[0].dtype == np.uint8
    (tmp_path / "games.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        load_results(tmp_path)


def test_pending_turns_of_the_environment():
    env = make_spy(decision="observer", observer_samples=3)()
    env.reset(seed=0)
    [(seat, observation, info)] = env.pending_turns()
    assert seat == env.agent_selection and info["phase"] == "clue"
    assert observation is env.observe(seat)
    for _ in range(8):
        env.step("\\boxed{a cube}")
    turns = env.pending_turns()
    assert [s for s, _, _ in turns] == ["observer_1"] * 3
    assert len({i["turn"] for _, _, i in turns}) == 3
    assert json.loads(turns[0][1]["context"])["role"] == "observer"
    for _ in turns:
        env.step("\\boxed{2}")
    assert env.pending_turns() == []
