"""The end-of-run evaluation: paired statistics, the head-to-head, the report, train.py's hook."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import envs
from agents import make_agent
from agents.rollout import RolloutRunner
from games.images import make_source
from tests.test_train import train
from trainers.evaluation import (
    HELD_OUT_SEED,
    MEASURES,
    evaluate,
    format_table,
    paired_improvement,
)

SOURCE = make_source("clevr", pool_size=16)
SPY_METRICS = {"vote_accuracy", "spy_caught", "valid_clue_rate", "valid_vote_rate", "na_rate",
               "return_spy", "return_civilian", "head_to_head_spy_win_rate"}
DUEL_METRICS = {"valid_question_rate", "in_band_rate", "agreement_rate", "confidence",
                "solver_valid_answer_rate", "solver_accuracy", "return_questioner",
                "return_solver", "head_to_head_questioner_return"}


def make_env(game: str, **options):
    return lambda: envs.make(game, source=SOURCE, **options)


def agent(name: str, game: str, seed: int = 0):
    return lambda: make_agent(name, game=game, seed=seed)


def test_a_constant_improvement_excludes_zero_and_equal_values_give_zero():
    initial = np.random.default_rng(1).random(30)
    constant = paired_improvement(initial, initial + 0.1)
    assert constant["diff"] == pytest.approx(0.1) and constant["pairs"] == 30
    assert constant["ci95"] == pytest.approx([0.1, 0.1])
    same = paired_improvement(initial, initial)
    assert same == {"diff": 0.0, "ci95": [0.0, 0.0], "pairs": 30}
    noisy = paired_improvement(initial, initial + 0.2 + np.random.default_rng(2).normal(0, .3, 30))
    low, high = noisy["ci95"]
    assert 0 < low < noisy["diff"] < high
    assert paired_improvement(initial, initial + 0.2 + np.random.default_rng(2).normal(
        0, .3, 30)) == noisy  # a fixed seed: the same data give the same interval


def test_the_bootstrap_interval_matches_the_normal_one_on_many_games():
    rng = np.random.default_rng(3)
    initial, final = rng.integers(0, 2, 2000), rng.integers(0, 2, 2000) * (rng.random(2000) < .8)
    differences = final - initial
    half_width = 1.96 * differences.std(ddof=1) / math.sqrt(len(differences))
    result = paired_improvement(initial, final)
    assert result["diff"] == pytest.approx(differences.mean())
    assert result["ci95"] == pytest.approx([differences.mean() - half_width,
                                            differences.mean() + half_width], abs=0.004)
    balanced = paired_improvement([0, 1] * 20, [1, 0] * 20)  # no change on average
    assert balanced["diff"] == 0 and balanced["ci95"][0] < 0 < balanced["ci95"][1]


def test_games_without_a_value_are_left_out_of_the_pairs():
    result = paired_improvement([0.0, math.nan, 0.5, 0.2], [1.0, 1.0, math.nan, 0.4])
    assert result["pairs"] == 2 and result["diff"] == pytest.approx(0.6)
    assert paired_improvement([math.nan], [1.0]) == {"diff": None, "ci95": None, "pairs": 0}
    assert paired_improvement([0.0], [1.0]) == {"diff": 1.0, "ci95": None, "pairs": 1}
    with pytest.raises(ValueError, match="equal length"):
        paired_improvement([0.0, 1.0], [1.0])


def test_a_policy_against_itself_changes_nothing():
    report = evaluate(make_env("spy"), agent("scripted", "spy"), agent("scripted", "spy"), 6)
    assert set(report["improvement"]) == SPY_METRICS
    for name, change in report["improvement"].items():
        assert change == {"diff": 0.0, "ci95": [0.0, 0.0], "pairs": 6}, name
        assert report["initial"][name] == report["final"][name]


def test_the_scripted_spy_beats_random_civilians_far_more_than_the_reverse():
    report = evaluate(make_env("spy"), agent("random", "spy"), agent("scripted", "spy"), 40)
    # initial: the random spy against scripted civilians; final: the scripted spy against random
    random_spy = report["initial"]["head_to_head_spy_win_rate"]
    scripted_spy = report["final"]["head_to_head_spy_win_rate"]
    assert scripted_spy > 0.8 and random_spy < 0.2
    change = report["improvement"]["head_to_head_spy_win_rate"]
    assert change["diff"] == pytest.approx(scripted_spy - random_spy)
    assert change["ci95"][0] > 0.5 and change["pairs"] == 40
    # the self-play metrics are those of each policy's own games on the same seeds
    scripted_games = RolloutRunner(make_env("spy"), make_agent("scripted", game="spy", seed=0),
                                   parallel_games=8).run(40, seed=HELD_OUT_SEED)
    assert report["final"]["spy_caught"] == pytest.approx(
        np.mean([r.stats["spy_caught"] for r in scripted_games]))
    assert report["final"]["valid_clue_rate"] == 1.0 > report["initial"]["valid_clue_rate"]


@pytest.mark.parametrize("game, metrics", [("spy", SPY_METRICS), ("qa_duel", DUEL_METRICS)])
def test_the_report_has_every_metric_and_is_strict_json(game, metrics):
    options = {"num_answers": 3} if game == "qa_duel" else {"decision": "observer",
                                                          "observer_samples": 2}
    if game == "spy":
        metrics = metrics | {"return_observer"}
    report = evaluate(make_env(game, **options), agent("random", game), agent("scripted", game),
                      8, parallel_games=3)
    assert set(report) == {"games", "seeds", "initial", "final", "improvement"}
    assert report["games"] == 8 and report["seeds"] == [HELD_OUT_SEED, HELD_OUT_SEED + 7]
    assert set(report["initial"]) == set(report["final"]) == set(report["improvement"]) == metrics
    for change in report["improvement"].values():
        assert set(change) == {"diff", "ci95", "pairs"}
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # no NaN: null if undefined
    table = format_table(report).splitlines()
    assert table[1].split() == ["metric", "initial", "final", "diff", "95%", "CI", "pairs"]
    assert [line.split()[0] for line in table[2:]] == list(report["improvement"])
    assert MEASURES[game].challenger in {"spy", "questioner"}


def test_the_questioner_head_to_head_scores_the_challenging_questions():
    report = evaluate(make_env("qa_duel", num_answers=3), agent("random", "qa_duel"),
                      agent("scripted", "qa_duel"), 10)
    # the scripted questioner always asks a valid question (its return is never -1), random
    # ones rarely do; against the random solvers of the held-out seeds (agents seeded 0) its
    # questions earn 0.05 on average
    assert report["final"]["head_to_head_questioner_return"] == pytest.approx(0.05)
    assert report["initial"]["head_to_head_questioner_return"] < -0.5
    assert report["final"]["valid_question_rate"] == 1.0
    # solver metrics exist only for games with a valid question
    assert report["improvement"]["solver_accuracy"]["pairs"] < 10


def test_evaluate_refuses_bad_settings():
    with pytest.raises(ValueError, match="games must be an integer >= 1"):
        evaluate(make_env("spy"), agent("random", "spy"), agent("random", "spy"), 0)
    with pytest.raises(ValueError, match="parallel_games"):
        evaluate(make_env("spy"), agent("random", "spy"), agent("random", "spy"), 2,
                 parallel_games=0)


def test_train_py_evaluates_the_initial_and_final_policy_at_the_end(
        crashed_then_evaluated_run, default_model, tmp_path):
    # a run of one step with evaluation.games=2 evaluation.parallel_games=2 (after a crash in
    # its folder, which the train.log test reads)
    run_dir, result = crashed_then_evaluated_run.run_dir, crashed_then_evaluated_run.trained
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "evaluation.json").read_text())
    # train.py's spy recipe votes with an observer (configs/recipe/spy.yaml): its return too
    assert set(report["improvement"]) == SPY_METRICS | {"return_observer"}
    assert report["games"] == 2
    assert all(change["pairs"] == 2 for change in report["improvement"].values())
    assert "head_to_head_spy_win_rate" in result.stdout + result.stderr  # the table is logged
    for override, message in [("evaluation.games=-1", "evaluation.games must be an integer >= 0"),
                              ("+evaluation.gmes=3", "evaluation.gmes is not an option")]:
        refused = train(tmp_path / "bad", default_model, override)
        assert refused.returncode != 0 and message in refused.stderr
        assert not (tmp_path / "bad" / "checkpoints").exists()  # refused before training
