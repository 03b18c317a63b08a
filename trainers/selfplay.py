"""Self-play as the trainer's row source: games played with the current policy become the rows of
the next GRPO step.

:class:`SelfPlay` plays rounds of ``games_per_round`` games through a rollout runner whenever the
trainer asks for rows, and keeps what a resumed run needs to continue exactly (games played, the
recipe's state, the rows left over for the next step, the playing agents' per-request sampling
seeds; :class:`SaveSelfPlayState` writes them into every checkpoint). The game's *recipe*
(:mod:`trainers.recipes`) says which stage trains and how games become rows.

Every round's games give rows for every stage; those a step does not take wait for the next
steps, oldest first. Each row carries the version of the policy that sampled it (the optimizer
steps its weights had taken); no step trains on rows more than ``max_policy_lag`` versions old
(default 1: the next step only), and the trainer's importance weights correct for the lag.

Playing ahead (``games_per_round`` above the games a step's rows need, ``max_policy_lag`` to
match): a round of 128 games feeding steps of 32 games' rows is played once every 4 steps, at the
speed of 128 games at once, whose GPU use a round of 32 does not reach; the price is rows up to 3
policy versions old, weighted by the trainer's importance weights (capped, ``importance_cap``).

One-step-off asynchronous play (``asynchronous=True``, for agents on other GPUs or machines, e.g.
``agent=vllm_server``): as soon as a step has its rows, the next step's round starts in a
background thread, on the weights of the moment, while the step trains; the weight push after the
step waits for that round (:meth:`SelfPlay.wait_for_rollouts`), so a round never mixes policies.
A step then costs the longer of its update and a round, plus the push, instead of their sum.
Every round logs, under ``selfplay/``, the mean of
each game statistic (vote accuracy, N/A rate, confidence, ...), the mean return per role, the
active stage, the games played, the rollout speed in sampled tokens per second and the mean
policy lag of the trained rows (``selfplay/policy_lag``: 0 on-policy, 1 one step stale).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from agents.model import RequestSeeds
from agents.rollout import RolloutRunner
from agents.trajectory import GameResult, TurnRecord
from envs import GameEnv
from envs.render import save_replay
from trainers.recipes import Recipe
from trainers.rows import TrainingRow

log = logging.getLogger(__name__)
STATE_FILE = "selfplay_state.json"
ROWS_FILE = "selfplay_rows.pt"
PENDING_FILE = "selfplay_pending_rows.pt"


@dataclass
class PlayedRound:
    """A round of games turned into rows, with what it logs."""

    rows: dict[str, list[TrainingRow]]
    statistics: dict[str, float]
    games: int
    tokens: int
    seconds: float


class SelfPlay:
    """The trainer's row source (see the module docstring).

    Each call is one training step: rows of the active stage come from the games played for the
    previous step and left over, then from new rounds; after ``rounds_per_stage`` rounds without
    enough rows the recipe skips to its next stage. The recipe sees the latest round's statistics
    once per step — through ``share`` when given, which averages them over data-parallel
    processes so that all of them keep the same stage. ``after_rollouts`` runs once a step's rows
    are in (e.g. to put a vLLM engine to sleep during the update). ``asynchronous``: play the next
    step's round while this one trains (one-step-off, see the module docstring).
    ``max_policy_lag``: the most optimizer steps between a row's sampling and its training."""

    def __init__(self, runner: RolloutRunner, recipe: Recipe, games_per_round: int,
                 seed: int = 0, replays: Path | None = None,
                 after_rollouts: Callable[[], None] | None = None, rounds_per_stage: int = 8,
                 share: Callable[[dict[str, float]], dict[str, float]] | None = None,
                 asynchronous: bool = False, max_policy_lag: int = 1):
        if games_per_round < 1:
            raise ValueError(f"games_per_round must be >= 1, got {games_per_round}")
        if asynchronous and max_policy_lag < 1:  # a background round's rows are a step old
            raise ValueError(f"max_policy_lag must be >= 1 with asynchronous play, got "
                             f"{max_policy_lag}")
        if max_policy_lag < 0:
            raise ValueError(f"max_policy_lag must be >= 0, got {max_policy_lag}")
        if asynchronous and after_rollouts is not None:
            raise ValueError("asynchronous play keeps the policy playing during the update: it "
                             "cannot put it to sleep after the rollouts (after_rollouts)")
        self.runner, self.recipe, self.games_per_round = runner, recipe, games_per_round
        self.seed, self.replays, self.after_rollouts = seed, replays, after_rollouts
        self.rounds_per_stage, self.share = rounds_per_stage, share
        self.asynchronous, self.max_policy_lag = asynchronous, max_policy_lag
        self.games_played = self.skipped_stages = 0
        self.steps = 0  # steps given rows so far: the version of the policy playing now
        self.metrics: dict[str, float] = {}
        self._statistics: dict[str, float] = {}
        self._left_over: dict[str, list[TrainingRow]] = {}
        self._games_started = 0
        self._in_flight: Future[PlayedRound] | None = None
        self._background = ThreadPoolExecutor(1, "selfplay") if asynchronous else None

    def __call__(self, count: int) -> list[TrainingRow]:
        pool = {stage: [row for row in self._left_over.get(stage, ())
                        if self.steps - row.policy_version <= self.max_policy_lag]
                for stage in self.recipe.stages}
        rounds = skips = 0
        # the round played in the background for this step always joins the pool
        while self._in_flight is not None or len(pool[self.recipe.stage]) < count:
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
            for stage, rows in self._take_round().rows.items():
                pool[stage] += rows
            rounds += 1
        stage = self.recipe.stage
        taken = pool[stage][:count]  # the oldest rows first
        self._left_over = {s: rows[count:] if s == stage else rows for s, rows in pool.items()}
        self.recipe.observe(self.share(self._statistics) if self.share else self._statistics)
        self.metrics["selfplay/skipped_stages"] = float(self.skipped_stages)
        self.metrics |= {f"selfplay/stage_{name}": float(name == stage)
                         for name in self.recipe.stages}
        self.metrics["selfplay/policy_lag"] = float(np.mean(
            [self.steps - row.policy_version for row in taken]))
        if self.asynchronous:  # the next step's games, on the weights of now
            self._in_flight = self._background.submit(self._play_round, *self._next_round())
        self.steps += 1
        if self.after_rollouts is not None:
            self.after_rollouts()
        return taken

    def wait_for_rollouts(self) -> None:
        """Returns once no round is being played (before the policy's weights change); raises
        what a round in the background raised."""
        if self._in_flight is not None:
            self._in_flight.result()

    def _next_round(self) -> tuple[int, int]:
        """The first game number (seed offset) of the next round, and the version of the policy
        that plays it; reserves the round's games."""
        first = self._games_started
        self._games_started += self.games_per_round * self.recipe.repeats
        return first, self.steps

    def _take_round(self) -> PlayedRound:
        """The round played in the background for this step if any, else a round played now;
        its statistics become the latest."""
        if self._in_flight is not None:
            played, self._in_flight = self._in_flight.result(), None
        else:
            played = self._play_round(*self._next_round())
        self.games_played += played.games
        self._statistics = played.statistics
        self.metrics = {f"selfplay/{name}": value for name, value in played.statistics.items()}
        self.metrics |= {"selfplay/games": float(self.games_played),
                         "selfplay/round_seconds": played.seconds,
                         "selfplay/tokens_per_second":
                             played.tokens / played.seconds if played.seconds else 0.0}
        return played

    def _play_round(self, first_game: int, policy_version: int) -> PlayedRound:
        started = time.perf_counter()
        replay = functools.partial(self._keep_replay, first_game) if self.replays else None
        results = self.runner.run(self.games_per_round, seed=self.seed + first_game,
                                  on_game_end=replay, repeats=self.recipe.repeats)
        seconds = time.perf_counter() - started
        rows = {stage: [dataclasses.replace(row, policy_version=policy_version) for row in rows]
                for stage, rows in self.recipe.rows(results).items()}
        tokens = sum(len(t.completion_ids or ()) for r in results for t in r.turns)
        return PlayedRound(rows, _mean_statistics(results), len(results), tokens, seconds)

    def _keep_replay(self, first_game: int, number: int, env: GameEnv) -> None:
        """The replay of the first game of every round (game ``first_game`` of the run)."""
        if number == 0:
            save_replay(env.game, self.replays / f"games-{first_game:06d}.html")

    def _seed_streams(self) -> dict[str, RequestSeeds]:
        """The per-request sampling seeds of the playing agents that have them (the model
        backends' ``seeds``), by the first seat of each agent: a shared policy appears once."""
        streams: dict[str, RequestSeeds] = {}
        for seat, agent in (self.runner.agents or {}).items():
            seeds = getattr(agent, "seeds", None)
            if isinstance(seeds, RequestSeeds) and all(s is not seeds for s in streams.values()):
                streams[seat] = seeds
        return streams

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly: counters, the recipe's state, the last
        round's statistics, the agents' sampling seeds, the rows left over for the next step
        (``left_over``: rows, not JSON; the rest is JSON-able) and, when playing asynchronously,
        the round played for the next step (``pending``; its rows under ``pending_rows``), waited
        for first."""
        self.wait_for_rollouts()
        pending = self._in_flight.result() if self._in_flight is not None else None
        return {"games_played": self.games_played, "skipped_stages": self.skipped_stages,
                "steps": self.steps, "games_started": self._games_started,
                "statistics": self._statistics, "recipe": self.recipe.state_dict(),
                "agent_seeds": {seat: seeds.state_dict()
                                for seat, seeds in self._seed_streams().items()},
                "left_over": {stage: list(rows) for stage, rows in self._left_over.items()},
                "pending": None if pending is None else {
                    "statistics": pending.statistics, "games": pending.games,
                    "tokens": pending.tokens, "seconds": pending.seconds},
                "pending_rows": None if pending is None else pending.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a :meth:`state_dict`. Sampling seeds that do not fit this run's agents (a
        checkpoint of another backend or version) are left as they are, with a warning."""
        self.wait_for_rollouts()
        self.games_played = state["games_played"]
        self.skipped_stages = state["skipped_stages"]
        self.steps = state.get("steps", 0)  # checkpoints before policy versions: 0
        self._games_started = state.get("games_started", self.games_played)
        self._statistics = state["statistics"]
        self.recipe.load_state_dict(state["recipe"])
        self._left_over = {stage: list(rows) for stage, rows in state["left_over"].items()}
        self._in_flight = None
        if state.get("pending"):
            self._in_flight = Future()
            self._in_flight.set_result(PlayedRound(state["pending_rows"], **state["pending"]))
        streams, saved = self._seed_streams(), state.get("agent_seeds")
        if saved is None or set(saved) != set(streams):
            log.warning("the checkpoint has sampling seeds for the agents of seats %s, this run "
                        "samples with seeds at seats %s: those not in both are not restored",
                        sorted(saved or ()), sorted(streams))
        for seat in set(saved or ()) & set(streams):
            try:
                streams[seat].load_state_dict(saved[seat])
            except ValueError as error:
                log.warning("the sampling seeds of seat %s are not restored: %s", seat, error)


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
    """Writes the self-play state of every process into every checkpoint, beside the trainer's
    own: :data:`STATE_FILE` (process 0; ``selfplay_state_<i>.json`` for process ``i``) and the
    rows left over for the next step in :data:`ROWS_FILE` (likewise). Register
    :class:`trainers.checkpoints.MarkComplete` after it: a checkpoint counts once marked."""

    def __init__(self, selfplay: SelfPlay):
        self.selfplay = selfplay

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)  # a process may get here before process 0
        saved = self.selfplay.state_dict()
        rows = _row_tensors(saved.pop("left_over"))
        torch.save(rows, folder / _per_process(ROWS_FILE, args.process_index))
        pending_rows = saved.pop("pending_rows")
        if pending_rows is not None:
            torch.save(_row_tensors(pending_rows),
                       folder / _per_process(PENDING_FILE, args.process_index))
        (folder / _per_process(STATE_FILE, args.process_index)).write_text(json.dumps(saved))

    @staticmethod
    def load(selfplay: SelfPlay, checkpoint: str | Path, process_index: int = 0) -> None:
        """Restores ``selfplay`` from a checkpoint folder written with this callback: the state
        of process ``process_index``, or, if the checkpoint had fewer processes, process 0's
        counters and stage with a warning (no seeds or left-over rows: they were another's)."""
        checkpoint = Path(checkpoint)
        state_path = checkpoint / _per_process(STATE_FILE, process_index)
        if process_index and not state_path.is_file():
            log.warning("%s has no self-play state of process %d (written by fewer processes): "
                        "it starts from process 0's stage and counters", checkpoint,
                        process_index)
            state = json.loads((checkpoint / STATE_FILE).read_text())
            selfplay.load_state_dict(state | {"agent_seeds": {}, "left_over": {},
                                              "pending": None})
            return
        state = json.loads(state_path.read_text())
        rows = torch.load(checkpoint / _per_process(ROWS_FILE, process_index), weights_only=True)
        state["left_over"] = _rows_from_tensors(rows, state.get("steps", 0) - 1)
        if state.get("pending"):
            pending = torch.load(checkpoint / _per_process(PENDING_FILE, process_index),
                                 weights_only=True)
            state["pending_rows"] = _rows_from_tensors(pending, state["steps"] - 1)
        selfplay.load_state_dict(state)


def _per_process(name: str, process_index: int) -> str:
    """Process 0's file keeps ``name``; process ``i``'s is ``<stem>_<i><suffix>``."""
    if not process_index:
        return name
    path = Path(name)
    return f"{path.stem}_{process_index}{path.suffix}"


def _row_tensors(left_over: dict[str, list[TrainingRow]]) -> dict[str, list[dict[str, Any]]]:
    """Rows as what ``torch.load(weights_only=True)`` reads back: each turn's fields as JSON (as
    :func:`agents.trajectory.save_results` stores them), its images as tensors (each distinct
    image once), the advantage as a float, the policy version as an int."""
    images: dict[int, torch.Tensor] = {}
    for rows in left_over.values():
        for row in rows:
            for image in row.turn.images:
                if id(image) not in images:
                    images[id(image)] = torch.from_numpy(np.array(image))
    return {stage: [{"turn": json.dumps({field.name: getattr(row.turn, field.name)
                                         for field in dataclasses.fields(row.turn)
                                         if field.name != "images"}),
                     "images": [images[id(image)] for image in row.turn.images],
                     "advantage": float(row.advantage),
                     "policy_version": row.policy_version} for row in rows]
            for stage, rows in left_over.items()}


def _rows_from_tensors(saved: dict[str, list[dict[str, Any]]],
                       version: int) -> dict[str, list[TrainingRow]]:
    """The rows :func:`_row_tensors` wrote; ``version`` for rows saved without a policy version
    (older checkpoints)."""
    return {stage: [TrainingRow(TurnRecord(**json.loads(row["turn"]),
                                           images=[image.numpy() for image in row["images"]]),
                                row["advantage"], row.get("policy_version", version))
                    for row in rows]
            for stage, rows in saved.items()}
