"""What a training run changed: the initial and the final policy on the same held-out games.

:func:`evaluate` plays four match-ups on the same ``games`` seeds, each with fresh agents from the
given factories (so both policies start from the same sampling seed):

- **self-play**: the initial policy in every seat, then the final policy in every seat; each game
  gives the game's metrics (:data:`MEASURES`). Spy: vote accuracy, spy caught, valid clue rate,
  valid vote rate (N/A is a valid abstention), N/A rate, mean return per role. QA duel: valid
  question rate, in-band rate, and — over games with a valid question — the intuitive answer's
  agreement with the majority, the majority's confidence, the solver's valid answer rate and its
  accuracy against the majority (the pseudo-label); mean return per role. Any other game: its
  own statistics and the mean return per role (:data:`DEFAULT_MEASURE`).
- **head-to-head** (Vision-Zero; the built-in games only): one policy plays the challenger role
  (the spy's seats, whichever they are in a game; the questioner) and the other every other seat,
  both ways round. Its score (the spy's win rate: spy not caught; the questioner's return) is
  reported as the metric ``head_to_head_<score>``: under ``initial`` the initial policy
  challenging the final one, under ``final`` the final policy challenging the initial one.

The report (``evaluation.json`` in train.py's run folder)::

    {"games": n, "seeds": [first, last],
     "initial": {metric: mean}, "final": {metric: mean},
     "improvement": {metric: {"diff": final - initial, "ci95": [low, high], "pairs": games}}}

**Statistics.** Each seed is played by both sides, with the same image and the same seating, so the
improvement of a metric is the mean of its per-game paired differences, which removes the
variation between games from the comparison. Its 95% interval is a percentile bootstrap of that
mean (:func:`paired_improvement`: 10,000 resamples of the games, numpy seed 0, so a report is
reproducible). Bootstrap rather than a normal interval because per-game differences of these
metrics take a few discrete values (spy caught: -1, 0 or 1) and are skewed when one side rarely
succeeds; the bootstrap assumes no shape, and its interval stays within the metric's range. Like
every interval from few games, it is too narrow below about 20 games. A metric a game does not
define (the solver's, without a valid question) is left out of that game's means and pairs.

**Seeds.** Held-out games use seeds :data:`HELD_OUT_SEED` onward. Training plays seeds
``rank * 10**9 + games played`` (train.py), below ``10**15`` for any run of fewer than a million
processes and a billion games per process, so no held-out game is ever a training game.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent
from agents.rollout import RolloutRunner, Seating
from agents.trajectory import GameResult
from envs import GameEnv
from games.checks import check_int

log = logging.getLogger(__name__)

HELD_OUT_SEED = 10**15
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
_RESAMPLES_PER_CHUNK = 1_000  # bounds the bootstrap's memory: a chunk is resamples x games


@dataclass(frozen=True)
class Measure:
    """What is measured of a game: its per-game ``metrics`` (NaN where a game does not define
    one), and the head-to-head's ``challenger`` role and per-game ``score`` (``score_name``); no
    head-to-head without a challenger."""

    metrics: Callable[[GameResult], dict[str, float]]
    challenger: str | None = None
    score_name: str = ""
    score: Callable[[GameResult], float] | None = None


def returns_by_role(result: GameResult) -> dict[str, float]:
    """``return_<role>``: the mean return of the seats that played each role in the game."""
    returns: dict[str, list[float]] = defaultdict(list)
    for seat, role in result.roles.items():
        returns[role].append(result.returns[seat])
    return {f"return_{role}": float(np.mean(values)) for role, values in returns.items()}


def game_metrics(result: GameResult) -> dict[str, float]:
    """Any game's metrics: its own statistics and the mean return of each role."""
    return {**result.stats, **returns_by_role(result)}


def spy_metrics(result: GameResult) -> dict[str, float]:
    """A Who Is the Spy game's metrics (see the module docstring)."""
    stats = result.stats
    return {"vote_accuracy": stats["vote_accuracy"], "spy_caught": stats["spy_caught"],
            "valid_clue_rate": 1.0 - stats["invalid_clue_rate"],
            "valid_vote_rate": 1.0 - stats["invalid_vote_rate"], "na_rate": stats["na_rate"],
            **returns_by_role(result)}


def qa_duel_metrics(result: GameResult) -> dict[str, float]:
    """A QA duel's metrics (see the module docstring); the solver's accuracy against the majority
    is its return, the share of its answers equal to the majority letter."""
    stats, returns = result.stats, returns_by_role(result)
    asked = stats["valid_question"] == 1.0
    return {"valid_question_rate": stats["valid_question"], "in_band_rate": stats["in_band"],
            "agreement_rate": stats["agrees"] if asked else math.nan,
            "confidence": stats["confidence"] if asked else math.nan,
            "solver_valid_answer_rate": stats["valid_answer_rate"] if asked else math.nan,
            "solver_accuracy": returns["return_solver"] if asked else math.nan,
            **returns}


#: The measures of the built-in games, by game name; other games get :data:`DEFAULT_MEASURE`.
DEFAULT_MEASURE = Measure(game_metrics)
MEASURES = {
    "spy": Measure(spy_metrics, challenger="spy", score_name="spy_win_rate",
                   score=lambda result: 1.0 - result.stats["spy_caught"]),
    "qa_duel": Measure(qa_duel_metrics, challenger="questioner", score_name="questioner_return",
                       score=lambda result: returns_by_role(result)["return_questioner"]),
}


def paired_improvement(initial: Sequence[float], final: Sequence[float],
                       resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """The mean of ``final[i] - initial[i]`` over the games where both are defined (not NaN),
    its 95% percentile-bootstrap interval and the number of pairs. ``diff`` is None without a
    pair, ``ci95`` with fewer than two (one game says nothing of the spread)."""
    initial, final = np.asarray(initial, dtype=float), np.asarray(final, dtype=float)
    if initial.shape != final.shape or initial.ndim != 1:
        raise ValueError(f"paired values need two lists of equal length, got shapes "
                         f"{initial.shape} and {final.shape}")
    check_int("resamples", resamples, 1)
    differences = (final - initial)[~(np.isnan(initial) | np.isnan(final))]
    pairs = len(differences)
    if pairs < 2:
        return {"diff": float(differences.mean()) if pairs else None, "ci95": None,
                "pairs": pairs}
    rng = np.random.default_rng(seed)
    means = np.concatenate([
        differences[rng.integers(0, pairs, size=(min(_RESAMPLES_PER_CHUNK, resamples - done),
                                                 pairs))].mean(axis=1)
        for done in range(0, resamples, _RESAMPLES_PER_CHUNK)])
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": float(differences.mean()), "ci95": [float(low), float(high)], "pairs": pairs}


def evaluate(make_env: Callable[[], GameEnv], make_initial: Callable[[], Agent],
             make_final: Callable[[], Agent], games: int, *, seed: int = HELD_OUT_SEED,
             parallel_games: int = 64, measure: Measure | None = None) -> dict[str, Any]:
    """Play the four match-ups of the module docstring on seeds ``seed .. seed + games - 1`` and
    return the report. ``make_initial`` and ``make_final`` give a fresh agent of each policy per
    match-up; ``measure`` defaults to the game's entry in :data:`MEASURES`, else
    :data:`DEFAULT_MEASURE` (the game's statistics and returns, no head-to-head)."""
    check_int("games", games, 1)
    check_int("parallel_games", parallel_games, 1)
    if measure is None:
        measure = MEASURES.get(make_env().game_class.name, DEFAULT_MEASURE)

    def play(agents: Agent | Seating) -> list[GameResult]:
        runner = RolloutRunner(make_env, agents, parallel_games=min(parallel_games, games))
        return runner.run(games, seed=seed)

    challenger_role = measure.challenger

    def challenging(challenger: Agent, other: Agent) -> Seating:
        return lambda seat, role: challenger if role == challenger_role else other

    initial_games = [measure.metrics(result) for result in play(make_initial())]
    final_games = [measure.metrics(result) for result in play(make_final())]
    columns = {name: ([game.get(name, math.nan) for game in initial_games],
                      [game.get(name, math.nan) for game in final_games])
               for name in dict.fromkeys(name for game in initial_games + final_games
                                         for name in game)}
    if measure.challenger is not None:
        final_challenges = [measure.score(result)
                            for result in play(challenging(make_final(), make_initial()))]
        initial_challenges = [measure.score(result)
                              for result in play(challenging(make_initial(), make_final()))]
        columns[f"head_to_head_{measure.score_name}"] = (initial_challenges, final_challenges)
    return {
        "games": games, "seeds": [seed, seed + games - 1],
        "initial": {name: _mean(initial) for name, (initial, _) in columns.items()},
        "final": {name: _mean(final) for name, (_, final) in columns.items()},
        "improvement": {name: paired_improvement(initial, final)
                        for name, (initial, final) in columns.items()},
    }


def _mean(values: Sequence[float]) -> float | None:
    """The mean of the defined (not NaN) values; None (JSON null) if there are none."""
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else None


def format_table(report: dict[str, Any]) -> str:
    """The report as a table: metric, initial, final, diff, 95% CI (``*``: it excludes 0) and the
    number of paired games behind the diff."""

    def value(number: float | None, sign: str = "") -> str:
        return "n/a" if number is None else f"{number:{sign}.3f}"

    lines = [f"initial vs final policy on {report['games']} held-out games (seeds "
             f"{report['seeds'][0]}..{report['seeds'][1]}); head_to_head_*: the column's policy "
             f"challenging the other one",
             f"{'metric':<32}{'initial':>9}{'final':>9}{'diff':>9}  {'95% CI':<20}{'pairs':>6}"]
    for name, change in report["improvement"].items():
        interval = "n/a" if change["ci95"] is None else (
            f"[{value(change['ci95'][0], '+')}, {value(change['ci95'][1], '+')}]"
            + (" *" if change["ci95"][0] > 0 or change["ci95"][1] < 0 else ""))
        lines.append(f"{name:<32}{value(report['initial'][name]):>9}"
                     f"{value(report['final'][name]):>9}{value(change['diff'], '+'):>9}  "
                     f"{interval:<20}{change['pairs']:>6}")
    return "\n".join(lines)


def evaluation_settings(cfg: Any) -> tuple[int, int]:
    """``evaluation.games`` (0: no evaluation) and ``evaluation.parallel_games`` of train.py's
    config, checked: a ``ValueError`` naming the key otherwise."""
    evaluation = cfg.get("evaluation")
    if evaluation is None:
        raise ValueError("evaluation is missing from the config: evaluation.games (0: none) and "
                         "evaluation.parallel_games")
    unknown = sorted(set(evaluation) - {"games", "parallel_games"})
    if unknown:
        raise ValueError(f"evaluation.{unknown[0]} is not an option of the evaluation; its "
                         f"options: games, parallel_games")
    return (check_int("evaluation.games", evaluation.get("games"), 0),
            check_int("evaluation.parallel_games", evaluation.get("parallel_games"), 1))


def evaluate_training(cfg: Any, final_model: Any, processor: Any, out: Path) -> dict | None:
    """train.py's end-of-run evaluation, on the process that calls it: the model loaded again
    from ``cfg.model.path`` (the default model if null) against ``final_model`` (the trained
    model object, LoRA merged or active), both through transformers with the run's sampling
    settings and seed. Writes ``out/evaluation.json``, logs the table, and returns the report
    (None when ``evaluation.games`` is 0)."""
    games, parallel_games = evaluation_settings(cfg)
    if not games:
        return None
    from omegaconf import OmegaConf
    from transformers import AutoModelForImageTextToText

    import envs
    from agents import make_agent
    from agents.model import SamplingConfig, model_path

    path = model_path(cfg.model.path)
    initial_model = AutoModelForImageTextToText.from_pretrained(path, dtype=final_model.dtype)
    initial_model.to(final_model.device)
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling, resolve=True),
                              seed=cfg.seed)
    batch_size = cfg.agent.get("batch_size", 32)
    env_options = OmegaConf.to_container(cfg.env, resolve=True)

    def policy(model: Any) -> Callable[[], Agent]:
        return lambda: make_agent("transformers", model=path, sampling=sampling,
                                  model_object=model, processor=processor, batch_size=batch_size)

    log.info("evaluating the initial and the final policy on %d held-out games", games)
    report = evaluate(lambda: envs.make(**env_options), policy(initial_model),
                      policy(final_model), games, parallel_games=parallel_games)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    log.info("evaluation (%s):\n%s", out / "evaluation.json", format_table(report))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m trainers.evaluation RUN_FOLDER [key=value ...]``: train.py's end-of-run
    evaluation of a finished run — its ``final/`` against the model it started from — with the
    run's own config (``.hydra/config.yaml``) and any overrides of it, e.g.
    ``evaluation.games=64``; on the first GPU if there is one. Sharded runs (ZeRO-3, FSDP)
    evaluate this way once training has ended."""
    import argparse

    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(
        prog="python -m trainers.evaluation",
        description="train.py's end-of-run evaluation of a finished run: its final model "
                    "against the model it started from, with the run's config")
    parser.add_argument("run", type=Path, help="the run folder of train.py (hydra.run.dir)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="changes to the run's config, e.g. evaluation.games=64")
    args = parser.parse_args(argv)
    config_file, final = args.run / ".hydra" / "config.yaml", args.run / "final"
    for needed in (config_file, final / "config.json"):
        if not needed.is_file():
            parser.error(f"{args.run} is not a finished train.py run: {needed} is missing")
    cfg = OmegaConf.load(config_file)
    absent = object()
    for override in args.overrides:
        key, equals, _ = override.partition("=")
        if not equals or OmegaConf.select(cfg, key, default=absent) is absent:
            parser.error(f"{override!r}: overrides are key=value with a key of the run's config")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(args.overrides)))
    try:
        if not evaluation_settings(cfg)[0]:
            parser.error("evaluation.games is 0: add evaluation.games=N")
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    import torch  # once the arguments are checked: a typo is refused in a second, not ten
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(final,
                                                        dtype=getattr(torch, cfg.model.dtype))
    model.to("cuda:0" if torch.cuda.is_available() else "cpu")
    processor = AutoProcessor.from_pretrained(final, padding_side="left")
    evaluate_training(cfg, model, processor, args.run)


if __name__ == "__main__":
    main()
