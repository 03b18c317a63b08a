"""Self-play GRPO: ``python train.py env=spy`` (Hydra; ``configs/train.yaml``).

Every optimizer step plays ``games_per_step`` games with the current policy (the transformers
backend, sharing the model object with the trainer, so every game is played by the latest
weights), turns them into training rows for the active Iterative-SPO stage (:mod:`trainers.rows`)
and takes one GRPO step on them through TRL (:mod:`trainers.grpo`). The run folder
(``outputs/<env>`` by default) holds the resolved config, the logs (TRL's metrics with the games'
vote accuracy, N/A rate, stage and returns per role), HTML replays and checkpoints; rerunning
the same command resumes from the latest checkpoint — optimizer, step, RNG, role baselines and
the stage machine included.

So far only ``env=spy`` trains; the QA duel's Questioner/Solver loop is not wired up yet.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    TrainerCallback,
)
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig

import envs
from agents.default_model import default_model_path
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner
from agents.transformers_agent import TransformersAgent
from envs.render import save_replay
from trainers.advantages import RoleBaselines
from trainers.grpo import TrajectoryGRPOTrainer
from trainers.rows import TrainingRow, spy_rows
from trainers.schedules import FixedAlternation, IterativeSPO

log = logging.getLogger(__name__)
STATE_FILE = "selfplay_state.json"


class SpySelfPlay:
    """The trainer's row source: plays spy games with the current policy until a step's rows
    are there, for the stage the schedule says, and keeps the baselines and the schedule. Rows
    beyond a step's need wait for the next step of the same stage (the importance weights
    correct for the one step they lag)."""

    def __init__(self, runner: RolloutRunner, games_per_step: int,
                 schedule: IterativeSPO | FixedAlternation, baselines: RoleBaselines,
                 replays: Path | None = None):
        self.runner, self.games_per_step = runner, games_per_step
        self.schedule, self.baselines, self.replays = schedule, baselines, replays
        self.games_played = 0
        self.metrics: dict[str, float] = {}
        self._surplus: list[TrainingRow] = []

    def __call__(self, count: int) -> list[TrainingRow]:
        stage = self.schedule.stage
        rows = [r for r in self._surplus if r.turn.phase == stage]
        for _ in range(100):
            if len(rows) >= count:
                self._surplus = rows[count:]
                return rows[:count]
            rows += self._play_round(stage)
        raise RuntimeError(f"100 rounds of {self.games_per_step} games gave only {len(rows)} "
                           f"of the {count} rows a step needs")

    def _play_round(self, stage: str) -> list[TrainingRow]:
        first = self.games_played
        results = self.runner.run(self.games_per_step, seed=first,
                                  on_game_end=self._keep_replay if self.replays else None)
        self.games_played += len(results)
        rows = spy_rows(results, stage, self.baselines)
        accuracy = float(np.mean([r.stats["vote_accuracy"] for r in results]))
        na_rate = float(np.mean([r.stats["na_rate"] for r in results]))
        self.schedule.update(accuracy, na_rate)
        self.metrics = {"selfplay/vote_accuracy": accuracy, "selfplay/na_rate": na_rate,
                        "selfplay/clue_stage": float(stage == "clue"),
                        "selfplay/games": float(self.games_played)}
        for role in ("spy", "civilian"):
            returns = [r.returns[s] for r in results for s, x in r.roles.items() if x == role]
            self.metrics[f"selfplay/return_{role}"] = float(np.mean(returns))
        return rows

    def _keep_replay(self, number: int, env: envs.GameEnv) -> None:
        if number == 0:  # the first game of every round
            save_replay(env.game, self.replays / f"games-{self.games_played:06d}.html")

    def state_dict(self) -> dict[str, Any]:
        return {"games_played": self.games_played, "schedule": self.schedule.state_dict(),
                "baselines": self.baselines.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.games_played = state["games_played"]
        self.schedule.load_state_dict(state["schedule"])
        self.baselines.load_state_dict(state["baselines"])


class SaveSelfPlayState(TrainerCallback):
    """Writes the self-play state into every checkpoint, beside TRL's own."""

    def __init__(self, selfplay: SpySelfPlay):
        self.selfplay = selfplay

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        (folder / STATE_FILE).write_text(json.dumps(self.selfplay.state_dict()))

    def on_log(self, args, state, control, logs=None, **kwargs):
        log.info("step %d %s", state.global_step, json.dumps(logs or {}))


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    if env_options["name"] != "spy":
        raise ValueError(f"train.py trains env=spy so far, not {env_options['name']!r}")
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    torch.manual_seed(cfg.seed)
    path = str(cfg.model or default_model_path())
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling, resolve=True),
                              seed=cfg.seed)
    policy = TransformersAgent(path, sampling, model_object=model, processor=processor)
    runner = RolloutRunner(lambda: envs.make(**env_options), policy,
                           parallel_games=cfg.games_per_step)
    schedule = (IterativeSPO(min_steps=cfg.schedule.min_steps) if cfg.schedule.kind == "paper"
                else FixedAlternation(cycle=cfg.schedule.cycle))
    selfplay = SpySelfPlay(runner, cfg.games_per_step, schedule,
                           RoleBaselines(decay=cfg.baseline_decay), replays=out / "replays")
    args = GRPOConfig(output_dir=str(out / "checkpoints"),
                      seed=cfg.seed, **OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer = TrajectoryGRPOTrainer(model, processor, args, rows=selfplay,
                                    metrics=lambda: selfplay.metrics,
                                    callbacks=[SaveSelfPlayState(selfplay)])
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if last is not None:
        selfplay.load_state_dict(json.loads((Path(last) / STATE_FILE).read_text()))
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out / "final"))
    processor.save_pretrained(str(out / "final"))
    log.info("done: %d games played; model in %s", selfplay.games_played, out / "final")


if __name__ == "__main__":
    main()
