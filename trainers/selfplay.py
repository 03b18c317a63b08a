"""Self-play as the trainer's row source: games played with the current policy become the rows of
the next GRPO step.

:class:`SelfPlay` plays rounds of ``games_per_round`` games through a rollout runner whenever the
trainer asks for rows, and keeps what a resumed run needs (games played, the recipe's state). A
*recipe* holds what is particular to a game's training:

- :class:`SpyRecipe` — Who Is the Spy (Vision-Zero): the Iterative-SPO stage machine (or the
  released code's fixed alternation) moved by each round's vote accuracy and N/A rate, and the role
  baselines of the clue stage (:func:`trainers.rows.spy_rows`).
- :class:`DuelRecipe` — the QA duel (V-Zero): ``cycle`` steps of the questioner, then ``cycle`` of
  the solver; each image is played ``repeats`` times so that its questions form a GRPO group
  (:func:`trainers.rows.qa_duel_rows`). One policy plays both seats (self-play); V-Zero proper
  keeps two models, which this does not.

Every round's games give rows for every stage; those the step does not take wait for the next
step and no longer (one step stale at most; the trainer's importance weights correct for it).
Every round logs, under ``selfplay/``, the mean of
each game statistic (vote accuracy, N/A rate, confidence, ...), the mean return per role, the
active stage, the games played and the rollout speed in sampled tokens per second.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from transformers import TrainerCallback

from agents.rollout import RolloutRunner
from agents.trajectory import GameResult
from envs import GameEnv
from envs.render import save_replay
from trainers.advantages import RoleBaselines
from trainers.rows import TrainingRow, qa_duel_rows, spy_rows
from trainers.schedules import FixedAlternation, IterativeSPO

log = logging.getLogger(__name__)
STATE_FILE = "selfplay_state.json"


class Recipe(Protocol):
    """A game's training: its stages, how finished games become rows, what moves the stage."""

    stages: tuple[str, ...]
    repeats: int

    @property
    def stage(self) -> str: ...

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]: ...

    def observe(self, statistics: dict[str, float]) -> None: ...

    def skip(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class SpyRecipe:
    """Vision-Zero's training of Who Is the Spy (see the module docstring)."""

    schedule: IterativeSPO | FixedAlternation
    baselines: RoleBaselines
    stages: tuple[str, ...] = ("decision", "clue")
    repeats: int = 1

    @property
    def stage(self) -> str:
        return self.schedule.stage

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        return spy_rows(results, self.baselines)

    def observe(self, statistics: dict[str, float]) -> None:
        self.schedule.update(statistics["vote_accuracy"], statistics["na_rate"])

    def skip(self) -> None:
        raise RuntimeError("every spy game has clue and vote turns: a stage without rows means "
                           "no game finished")

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "baselines": self.baselines.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.baselines.load_state_dict(state["baselines"])


@dataclass
class DuelRecipe:
    """V-Zero's Questioner/Solver iterations on one shared policy (see the module docstring).
    When no question lands in the difficulty band, the solver has nothing to learn from and its
    stage is skipped."""

    schedule: FixedAlternation
    repeats: int = 4
    stages: tuple[str, ...] = ("question", "answer")

    def __post_init__(self) -> None:
        if tuple(self.schedule.stages) != self.stages:
            raise ValueError(f"the duel's schedule must alternate {self.stages}, "
                             f"not {self.schedule.stages}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    @property
    def stage(self) -> str:
        return self.schedule.stage

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        return qa_duel_rows(results)

    def observe(self, statistics: dict[str, float]) -> None:
        self.schedule.update()

    def skip(self) -> None:
        self.schedule.skip()

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])


class SelfPlay:
    """The trainer's row source (see the module docstring).

    Each call is one training step: rows of the active stage come from the games played for the
    previous step and left over, then from new rounds; after ``rounds_per_stage`` rounds without
    enough rows the recipe skips to its next stage. The recipe sees the latest round's statistics
    once per step — through ``share`` when given, which averages them over data-parallel
    processes so that all of them keep the same stage. ``after_rollouts`` runs once a step's rows
    are in (e.g. to put a vLLM engine to sleep during the update)."""

    def __init__(self, runner: RolloutRunner, recipe: Recipe, games_per_round: int,
                 seed: int = 0, replays: Path | None = None,
                 after_rollouts: Callable[[], None] | None = None, rounds_per_stage: int = 8,
                 share: Callable[[dict[str, float]], dict[str, float]] | None = None):
        if games_per_round < 1:
            raise ValueError(f"games_per_round must be >= 1, got {games_per_round}")
        self.runner, self.recipe, self.games_per_round = runner, recipe, games_per_round
        self.seed, self.replays, self.after_rollouts = seed, replays, after_rollouts
        self.rounds_per_stage, self.share = rounds_per_stage, share
        self.games_played = self.skipped_stages = 0
        self.metrics: dict[str, float] = {}
        self._statistics: dict[str, float] = {}
        self._left_over: dict[str, list[TrainingRow]] = {}

    def __call__(self, count: int) -> list[TrainingRow]:
        pool = {stage: list(self._left_over.get(stage, ())) for stage in self.recipe.stages}
        fresh: dict[str, list[TrainingRow]] = {stage: [] for stage in self.recipe.stages}
        rounds = skips = 0
        while len(pool[self.recipe.stage]) < count:
            if rounds == self.rounds_per_stage:
                if skips == len(self.recipe.stages):
                    raise RuntimeError(f"no stage got {count} rows in {rounds} rounds of "
                                       f"{self.games_per_round} games")
                log.warning("%d rounds of games gave %d %r rows of the %d a step needs: "
                            "skipping to the next stage", rounds, len(pool[self.recipe.stage]),
                            self.recipe.stage, count)
                self.recipe.skip()
                self.skipped_stages += 1
                rounds, skips = 0, skips + 1
                continue
            for stage, rows in self._play_round().items():
                pool[stage] += rows
                fresh[stage] += rows
            rounds += 1
        stage = self.recipe.stage
        taken = pool[stage][:count]
        # what this step's games left over waits one step, no longer (the importance weights
        # correct for one step of staleness)
        used = {id(row) for row in taken}
        self._left_over = {s: [r for r in rows if id(r) not in used] for s, rows in fresh.items()}
        self.recipe.observe(self.share(self._statistics) if self.share else self._statistics)
        self.metrics["selfplay/skipped_stages"] = float(self.skipped_stages)
        self.metrics |= {f"selfplay/stage_{name}": float(name == stage)
                         for name in self.recipe.stages}
        if self.after_rollouts is not None:
            self.after_rollouts()
        return taken

    def _play_round(self) -> dict[str, list[TrainingRow]]:
        started = time.perf_counter()
        results = self.runner.run(self.games_per_round, seed=self.seed + self.games_played,
                                  on_game_end=self._keep_replay if self.replays else None,
                                  repeats=self.recipe.repeats)
        seconds = time.perf_counter() - started
        self.games_played += len(results)
        self._statistics = _mean_statistics(results)
        tokens = sum(len(t.completion_ids or ()) for r in results for t in r.turns)
        self.metrics = {f"selfplay/{name}": value for name, value in self._statistics.items()}
        self.metrics |= {"selfplay/games": float(self.games_played),
                         "selfplay/tokens_per_second": tokens / seconds if seconds else 0.0}
        return self.recipe.rows(results)

    def _keep_replay(self, number: int, env: GameEnv) -> None:
        if number == 0:  # the first game of every round
            save_replay(env.game, self.replays / f"games-{self.games_played:06d}.html")

    def state_dict(self) -> dict[str, Any]:
        return {"games_played": self.games_played, "skipped_stages": self.skipped_stages,
                "statistics": self._statistics, "recipe": self.recipe.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.games_played = state["games_played"]
        self.skipped_stages = state["skipped_stages"]
        self._statistics = state["statistics"]
        self.recipe.load_state_dict(state["recipe"])


def _mean_statistics(results: list[GameResult]) -> dict[str, float]:
    """Each game statistic averaged over the round, and the mean return of every role."""
    values: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for name, value in result.stats.items():
            values[name].append(value)
        for seat, role in result.roles.items():
            values[f"return_{role}"].append(result.returns[seat])
    return {name: float(np.mean(v)) for name, v in values.items()}


class SaveSelfPlayState(TrainerCallback):
    """Writes the self-play state into every checkpoint, beside the trainer's own."""

    def __init__(self, selfplay: SelfPlay):
        self.selfplay = selfplay

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        (folder / STATE_FILE).write_text(json.dumps(self.selfplay.state_dict()))

    @staticmethod
    def load(selfplay: SelfPlay, checkpoint: str | Path) -> None:
        """Restores ``selfplay`` from a checkpoint folder written with this callback."""
        selfplay.load_state_dict(json.loads((Path(checkpoint) / STATE_FILE).read_text()))
