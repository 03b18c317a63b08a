"""Play games between agents (through the rollout runner) and sum up the results.

As a script (Hydra; ``configs/arena.yaml``)::

    python -m agents.arena env=spy                        # 100 self-play games, scripted agents
    python -m agents.arena env=qa_duel agent=random games=20
    python -m agents.arena agent=vllm +agent.max_tokens=64   # the default tiny VLM
    python -m agents.arena env=spy +seats.player_1=random  # one seat against the others

It writes ``summary.json`` (mean return per role, mean of each game statistic), HTML replays of
the first games and, with ``trajectories=true``, every turn (:mod:`agents.trajectory`) to Hydra's
output directory.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

import envs
from agents.rollout import RolloutRunner
from agents.trajectory import GameResult, save_results
from envs import GameEnv
from envs.configs import store_env_configs
from envs.render import save_replay

log = logging.getLogger(__name__)


def summarize(records: list[GameResult]) -> dict[str, float]:
    """``games``, the mean return of each role (``return/<role>``) and the mean of each stat."""
    returns_by_role: dict[str, list[float]] = defaultdict(list)
    values_by_stat: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for seat, role in record.roles.items():
            returns_by_role[role].append(record.returns[seat])
        for name, value in record.stats.items():
            values_by_stat[name].append(value)
    summary = {"games": float(len(records))}
    summary |= {f"return/{role}": float(np.mean(v)) for role, v in sorted(returns_by_role.items())}
    summary |= {name: float(np.mean(v)) for name, v in sorted(values_by_stat.items())}
    return summary


store_env_configs()  # env=<name> for every registered game, from its config dataclass


@hydra.main(version_base=None, config_path="../configs", config_name="arena")
def main(cfg: DictConfig) -> None:
    """Play ``cfg.games`` games of ``cfg.env`` and write the summary and replays."""
    from agents import make_agent

    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    name = env_options["name"]
    seats = envs.make(**env_options).possible_agents
    options = OmegaConf.to_container(cfg.agent, resolve=True)
    shared = make_agent(options.pop("name"), game=name, seed=cfg.seed, **options)
    agents = {seat: make_agent(cfg.seats[seat], game=name, seed=cfg.seed + 1 + i)
              if seat in cfg.seats else shared for i, seat in enumerate(seats)}
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)

    def keep_replay(number: int, env: GameEnv) -> None:
        if number < cfg.replays:
            save_replay(env.game, out / "replays" / f"game-{number:03d}.html")

    runner = RolloutRunner(lambda: envs.make(**env_options), agents,
                           parallel_games=cfg.parallel_games)
    records = runner.run(cfg.games, seed=cfg.seed, on_game_end=keep_replay)
    summary = summarize(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.trajectories:
        save_results(records, out / "trajectories")
    for key, value in summary.items():
        log.info("%-28s %8.3f", key, value)
    log.info("summary and replays in %s", out)


if __name__ == "__main__":
    main()
