"""Agents: the batched interface, the random agent, the scripted players and the arena."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import envs
from agents import (
    SCRIPTED,
    Agent,
    Completion,
    RandomAgent,
    TextAgent,
    make_agent,
    scripted_agent,
)
from agents.arena import summarize
from agents.rollout import RolloutRunner
from agents.scripted.phrases import (
    chart_fact,
    object_phrase,
    parse_chart_facts,
    parse_mentions,
)
from agents.scripted.qa_duel import solve, write_question
from agents.scripted.spy import ScriptedSpyAgent, clue_verdict, vote
from agents.trajectory import GameResult
from games.images import ChartSource, ClevrSource
from games.parsing import parse_choice
from games.spy import INVALID_CLUE

SCENE = {"kind": "scene", "stable_attributes": ["size", "material", "position"], "objects": [
    {"id": 0, "shape": "cube", "colour": "red", "size": "large", "material": "metal",
     "position": "back left", "x": 50, "y": 40},
    {"id": 1, "shape": "sphere", "colour": "blue", "size": "small", "material": "rubber",
     "position": "front right", "x": 250, "y": 200}]}
CHART = {"kind": "chart", "chart_type": "bar", "title": "Sales by Fruit",
         "stable_attributes": ["chart_type", "title"], "items": [
             {"label": "Apple", "value": 42, "colour": "blue"},
             {"label": "Banana", "value": 17, "colour": "orange"},
             {"label": "Cherry", "value": 30, "colour": "red"}]}


def play(game: str, agents, num_games: int, seed: int = 0, **options) -> list[GameResult]:
    """``num_games`` games of ``game``, four at a time, through the rollout runner."""
    runner = RolloutRunner(lambda: envs.make(game, **options), agents, parallel_games=4)
    return runner.run(num_games, seed=seed)


def self_play(game: str, num_games: int, seed: int = 0, **options) -> list[GameResult]:
    """``num_games`` games of ``game`` with one scripted agent in every seat."""
    return play(game, scripted_agent(game, seed=seed), num_games, seed=seed, **options)


def mean_stat(records: list[GameResult], name: str) -> float:
    return float(np.mean([record.stats[name] for record in records]))


# ----- the interface -----

def test_act_answers_a_batch_in_order_with_text_only_completions():
    observations = [{"prompt": "", "images": (), "phase": "clue", "context": "{}"}] * 3
    completions = RandomAgent(seed=1).act(observations)
    assert len(completions) == 3 and all(isinstance(c, Completion) for c in completions)
    assert all(c.prompt_ids is None and c.completion_ids is None and c.logprobs is None
               for c in completions)
    assert isinstance(RandomAgent(), Agent) and isinstance(scripted_agent("spy"), Agent)


# ----- phrases: what scripted agents write, they read back -----

@pytest.mark.parametrize("attributes", [("size", "colour", "material", "shape", "position"),
                                        ("size", "material", "position"), ("colour",)])
def test_object_phrases_read_back_as_the_attributes_they_name(attributes):
    for obj in ClevrSource().sample_image(np.random.default_rng(0)).description["objects"]:
        assert parse_mentions(f"There is {object_phrase(obj, attributes)}.") == [
            {name: obj[name] for name in attributes}]


def test_model_worded_clues_are_read_with_synonyms_and_relations():
    assert parse_mentions("The small red cube is left of the large blue ball.") == [
        {"size": "small", "colour": "red", "shape": "cube"},
        {"size": "large", "colour": "blue", "shape": "sphere"}]
    assert parse_mentions("A shiny grey block sits at the back-left.") == [
        {"material": "metal", "colour": "gray", "shape": "cube", "position": "back left"}]
    assert parse_mentions("There is no green ball.") == []
    assert parse_chart_facts(chart_fact(CHART["items"][0]) + "; Banana is orange.") == [
        {"label": "Apple", "value": 42.0}, {"label": "Banana", "colour": "orange"}]


# ----- Who Is the Spy -----

@pytest.mark.parametrize(("clue", "verdict"), [
    ("There is a large red metal cube in the back left.", "fine"),
    ("I see a blue ball on the right.", "fine"),
    ("There is a large green metal cube in the back left.", "inconsistent"),
    ("A small rubber cylinder.", "inconsistent"),
    ("There is a large metal object in the back left.", "vague"),
    ("It shows several different things.", "vague"),
    (INVALID_CLUE, "invalid"),
])
def test_voter_judges_clues_against_its_scene(clue, verdict):
    assert clue_verdict(clue, SCENE) == verdict


@pytest.mark.parametrize(("clue", "verdict"), [
    ("Apple has a value of 42.", "fine"),
    ("The Cherry bar is red.", "fine"),
    ("Apple has a value of 17.", "inconsistent"),
    ("Mango has a value of 42.", "inconsistent"),
    ('The title is "Sales by Fruit".', "vague"),
])
def test_voter_judges_chart_clues_against_its_chart(clue, verdict):
    assert clue_verdict(clue, CHART) == verdict


def test_voter_never_votes_for_itself_and_abstains_when_nothing_stands_out():
    fine = "There is a large red metal cube in the back left."
    context = {"player": 1, "num_players": 3, "scene": SCENE,
               "clues": [{"round": 1, "player": p, "clue": fine} for p in (1, 2, 3)]}
    assert vote(context, random.Random(0)).endswith("\\boxed{N/A}")
    context["clues"][0]["clue"] = context["clues"][2]["clue"] = "A small green cube."
    assert vote(context, random.Random(0)).endswith("\\boxed{3}")


@pytest.mark.parametrize("source", ["clevr", "charts"])
@pytest.mark.parametrize("decision", ["civilians", "observer"])
def test_scripted_spy_players_only_make_valid_moves(source, decision):
    records = play("spy", ScriptedSpyAgent(seed=0), 10, decision=decision,
                   images={"source": source})
    assert mean_stat(records, "invalid_clue_rate") == mean_stat(records, "invalid_vote_rate") == 0


@pytest.mark.parametrize("decision", ["civilians", "observer"])
def test_civilians_catch_a_cautious_spy_far_more_often_than_chance(decision):
    # A random voter picks the spy 1 time in 3; measured here: caught in 40 of 40 games.
    records = self_play("spy", 40, seed=7, decision=decision)
    assert mean_stat(records, "spy_caught") >= 0.9
    assert mean_stat(records, "vote_accuracy") >= 0.9


@pytest.mark.parametrize("source", ["clevr", "charts"])
def test_a_blank_spy_still_gives_clues_and_is_caught(source):
    records = self_play("spy", 10, spy_image="blank", images={"source": source})
    assert mean_stat(records, "invalid_clue_rate") == mean_stat(records, "invalid_vote_rate") == 0
    assert mean_stat(records, "spy_caught") >= 0.9


def test_scripted_spy_refuses_an_unknown_phase():
    with pytest.raises(ValueError, match="phase 'answer'"):
        ScriptedSpyAgent().act([{"prompt": "", "images": (), "phase": "answer",
                                 "context": '{"role": "spy"}'}])


# ----- QA duel -----

@pytest.mark.parametrize("source", [ClevrSource(), ChartSource()])
def test_scripted_solver_works_out_every_scripted_question(source):
    rng, sample_rng = random.Random(0), np.random.default_rng(0)
    for _ in range(200):
        scene = source.sample_image(sample_rng).description
        question = write_question(scene, rng)
        options = dict(zip("ABCD", question.options, strict=True))
        assert len(set(question.options)) == 4
        assert solve(scene, question.stem, options) == question.correct


@pytest.mark.parametrize("source", ["clevr", "charts"])
def test_scripted_qa_duel_is_valid_and_the_majority_is_the_truth(source):
    records = self_play("qa_duel", 20, images={"source": source})
    assert mean_stat(records, "valid_question") == mean_stat(records, "valid_answer_rate") == 1
    assert 0.5 <= mean_stat(records, "agrees") <= 0.9  # intuition is right 70% of the time
    sure = make_agent("scripted", game="qa_duel", seed=0, intuition_accuracy=1.0,
                      solver_accuracy=1.0)
    records = play("qa_duel", sure, 20, images={"source": source})
    assert mean_stat(records, "agrees") == mean_stat(records, "confidence") == 1


def test_scripted_solver_guesses_a_letter_for_a_question_it_cannot_read():
    solver = make_agent("scripted", game="qa_duel", seed=0, solver_accuracy=1.0)
    context = ('{"role": "solver", "scene": {}, "question": "Why?", '
               '"options": {"A": "1", "B": "2", "C": "3", "D": "4"}}')
    [completion] = solver.act([{"prompt": "", "images": (), "phase": "answer",
                                "context": context}])
    assert parse_choice(completion.text) in ("A", "B", "C", "D")


# ----- empty descriptions: images from folders -----

def write_images(folder: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)


def test_scripted_agents_play_images_without_descriptions(tmp_path):
    write_images(tmp_path, ["a_original.png", "a_modified.png", "b_original.png",
                            "b_modified.png"])
    records = self_play("spy", 5, images={"source": "pair_folder", "path": str(tmp_path)})
    assert mean_stat(records, "invalid_clue_rate") == mean_stat(records, "invalid_vote_rate") == 0
    assert mean_stat(records, "na_rate") == 1  # every clue is vague: nobody stands out
    records = self_play("qa_duel", 5, images={"source": "image_folder", "path": str(tmp_path)})
    assert mean_stat(records, "valid_question") == mean_stat(records, "valid_answer_rate") == 1


# ----- the random agent -----

def test_random_agent_makes_valid_and_invalid_moves_and_games_still_finish():
    spy = play("spy", RandomAgent(seed=0), 30)
    qa = play("qa_duel", RandomAgent(seed=0), 60)
    assert len(spy) == 30 and len(qa) == 60
    for name in ("invalid_clue_rate", "invalid_vote_rate", "na_rate"):
        assert 0 < mean_stat(spy, name) < 1
    assert 0 < mean_stat(qa, "valid_question") < 1
    assert 0 < np.mean([r.stats["valid_answer_rate"] for r in qa
                        if r.stats["valid_question"]]) < 1
    assert all(math.isfinite(value) for record in spy + qa for value in record.returns.values())


def test_random_agent_respects_max_chars():
    agent = RandomAgent(seed=0, max_chars=50)
    texts = [c.text for c in agent.act([{}] * 200)]
    assert max(map(len, texts)) <= 50 and any("\\boxed{" in text for text in texts)
    with pytest.raises(ValueError, match="max_chars"):
        RandomAgent(max_chars=0)


# ----- determinism -----

def test_the_same_seeds_replay_the_same_games():
    def transcript(agent_seed: int) -> list[str]:
        results = play("spy", make_agent("scripted", game="spy", seed=agent_seed), 3)
        return [turn.text for result in results for turn in result.turns]

    assert transcript(0) == transcript(0)
    assert [c.text for c in RandomAgent(seed=3).act([{}] * 20)] == [
        c.text for c in RandomAgent(seed=3).act([{}] * 20)]
    assert [c.text for c in RandomAgent(seed=3).act([{}] * 20)] != [
        c.text for c in RandomAgent(seed=4).act([{}] * 20)]
    assert self_play("qa_duel", 5, seed=2) == self_play("qa_duel", 5, seed=2)


# ----- the arena -----

def test_play_gives_each_seat_its_own_agent_and_records_every_seat():
    seats = envs.make("spy", decision="observer").possible_agents
    agents = {seat: scripted_agent("spy", seed=i) for i, seat in enumerate(seats)}
    [record] = play("spy", agents, 1, decision="observer")
    assert set(record.returns) == set(record.roles) == set(seats)
    assert sorted(record.roles.values()).count("spy") == 1
    assert record.game_id.startswith("spy-") and "spy_caught" in record.stats
    with pytest.raises(ValueError, match="observer_1"):
        play("spy", {seat: agents[seat] for seat in seats[:-1]}, 1, decision="observer")


def test_summarize_averages_returns_by_role_and_every_stat():
    records = [
        GameResult("g1", "spy", {"p1": "civilian", "p2": "spy", "p3": "civilian"},
                   {"p1": 1.0, "p2": -1.0, "p3": 0.0}, {"spy_caught": 1.0}, []),
        GameResult("g2", "spy", {"p1": "spy", "p2": "civilian", "p3": "civilian"},
                   {"p1": 0.0, "p2": 2.0, "p3": -1.0}, {"spy_caught": 0.0}, []),
    ]
    by_seat = {"return/seat/p1": 0.5, "return/seat/p2": 0.5, "return/seat/p3": -0.5}
    assert summarize(records) == {"games": 2.0, "return/civilian": 0.5, "return/spy": -0.5,
                                  **by_seat, "spy_caught": 0.5}
    who = {"p1": "random", "p2": "scripted", "p3": "scripted"}
    assert summarize(records, who) == summarize(records) | {"return/agent/random": 0.5,
                                                           "return/agent/scripted": 0.0}
    assert summarize([]) == {"games": 0.0}


# ----- building agents by name -----

def test_make_agent_builds_known_agents_and_explains_unknown_names():
    assert isinstance(make_agent("random", seed=1), RandomAgent)
    assert isinstance(make_agent("scripted", game="spy"), SCRIPTED["spy"])
    with pytest.raises(ValueError,
                       match="unknown agent 'gpt'; known: openai, random, scripted, "
                             "transformers, vllm, vllm_server"):
        make_agent("gpt")
    with pytest.raises(ValueError, match="needs game="):
        make_agent("scripted")
    with pytest.raises(ValueError, match="agent for the game 'chess'; known: qa_duel, spy"):
        make_agent("scripted", game="chess")


def test_arena_script_writes_summary_and_replays(tmp_path):
    """``python -m agents.arena`` as the README gives it, with a small budget."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "agents.arena", "env=spy", "games=4", "replays=2",
               "+seats.player_2=random", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    # seeds 0-3, every agent seeded from seed 0: the spy is caught in 2 of the 4 games
    assert summary["games"] == 4.0 and summary["spy_caught"] == 0.5
    assert {"return/seat/player_2", "return/agent/random", "return/agent/scripted"} <= set(
        summary)
    assert sorted(p.name for p in (tmp_path / "replays").iterdir()) == [
        "game-000.html", "game-001.html", "index.html"]
    index = (tmp_path / "replays" / "index.html").read_text()
    assert "player_2 (random)" in index and index.count("<tr>") == 5
    assert '<a href="game-001.html">1</a>' in index and 'href="game-002.html"' not in index
    assert ("4 games of spy; seats: player_1=scripted, player_2=random, player_3=scripted, "
            "player_4=scripted") in result.stdout
    assert "game 4 of 4 played" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "agents.arena", "agent=oracle", "games=1",
                          f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent.parent)
    assert bad.returncode != 0 and "Could not find 'agent/oracle'" in bad.stderr
    stray = subprocess.run([sys.executable, "-m", "agents.arena", "+seats.player_9=random",
                            "games=1", f"hydra.run.dir={tmp_path}"], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert stray.returncode != 0 and "seats ['player_9'] are not seats of spy" in stray.stderr
    assert "scripted" in bad.stderr  # with the agents there are


def test_the_arena_plays_in_batches_with_the_seeds_and_replays_of_one_run(tmp_path):
    """Batches of 4 x parallel_games: 10 games in 3 batches keep game i on seed i, the replays
    of the first games across a batch's end, and every game's turns on disk in order."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "agents.arena", "env=spy", "games=10", "replays=5",
               "parallel_games=1", "trajectories=true", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    one_run = RolloutRunner(lambda: envs.make("spy"), scripted_agent("spy", seed=0),
                            parallel_games=10).run(10, seed=0)
    saved = [json.loads(line) for line in
             (tmp_path / "trajectories" / "games.jsonl").read_text().splitlines()]
    assert [game["game_id"] for game in saved] == [result.game_id for result in one_run]
    assert all(game["turns"] for game in saved)
    assert sorted(p.name for p in (tmp_path / "replays").iterdir()) == [
        f"game-{i:03d}.html" for i in range(5)] + ["index.html"]
    assert json.loads((tmp_path / "summary.json").read_text())["games"] == 10.0


def test_a_noisy_agent_answers_at_random_the_share_it_is_given(spy_observations):
    from agents.random_agent import NoisyAgent

    observations = spy_observations * 50
    scripted = [c.text for c in scripted_agent("spy", seed=3).act(observations)]
    random_texts = [c.text for c in RandomAgent(seed=5).act(observations)]
    never = NoisyAgent(scripted_agent("spy", seed=3), noise=0.0, seed=5).act(observations)
    always = NoisyAgent(scripted_agent("spy", seed=3), noise=1.0, seed=5).act(observations)
    assert [c.text for c in never] == scripted and [c.text for c in always] == random_texts
    class Marker(TextAgent):
        def answer(self, observation):
            return "marker"

    half = NoisyAgent(Marker(), noise=0.5, seed=5).act(observations)
    assert 0.35 < sum(c.text != "marker" for c in half) / len(observations) < 0.65
    with pytest.raises(ValueError, match="noise must be within"):
        NoisyAgent(RandomAgent(), noise=1.5)
