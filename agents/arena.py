"""Play whole games between agents on an environment of :mod:`envs`, and sum up the results.

As a script (Hydra; ``configs/arena.yaml``)::

    python -m agents.arena env=spy                        # 100 self-play games, scripted agents
    python -m agents.arena env=qa_duel agent=random games=20
    python -m agents.arena env=spy +seats.player_1=random  # one seat against the others

It writes ``summary.json`` (mean return per role, mean of each game statistic) and HTML replays
of the first games to Hydra's output directory.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

import envs
from agents.base import Agent
from envs import GameEnv
from envs.render import save_replay
from games import Game

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GameRecord:
    """One finished game: each seat's return and role, and the game's statistics."""

    game_id: str
    returns: dict[str, float]
    roles: dict[str, str]
    stats: dict[str, float]


def play(env: GameEnv, agents: dict[str, Agent] | Agent, num_games: int, seed: int = 0,
         on_game_end: Callable[[int, Game], None] | None = None) -> list[GameRecord]:
    """Play ``num_games`` games on ``env``: ``agents`` maps every seat to its agent, or is one agent
    for all seats (self-play). The first game resets with ``seed``, the next ones continue its
    random stream, so the same seed and agents replay the same games. ``on_game_end(number,
    game)`` is called with every finished game."""
    if isinstance(agents, dict):
        missing = sorted(set(env.possible_agents) - set(agents))
        if missing:
            raise ValueError(f"no agent for seat(s) {missing}; seats: {env.possible_agents}")
    records = []
    for game in range(num_games):
        env.reset(seed=seed if game == 0 else None)
        final_infos = {}
        for seat in env.agent_iter():
            observation, _, terminated, truncated, info = env.last()
            if terminated or truncated:
                final_infos[seat] = info
                env.step(None)
                continue
            agent = agents[seat] if isinstance(agents, dict) else agents
            env.step(agent.act([observation])[0].text)
        if on_game_end is not None:
            on_game_end(game, env.game)
        any_info = next(iter(final_infos.values()))
        records.append(GameRecord(
            game_id=any_info["game_id"],
            returns={seat: info["return"] for seat, info in final_infos.items()},
            roles={seat: info["role"] for seat, info in final_infos.items()},
            stats=dict(any_info["stats"])))
    return records


def summarize(records: list[GameRecord]) -> dict[str, float]:
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


@hydra.main(version_base=None, config_path="../configs", config_name="arena")
def main(cfg: DictConfig) -> None:
    """Play ``cfg.games`` games of ``cfg.env`` and write the summary and replays."""
    from agents import make_agent

    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    env = envs.make(**env_options)
    name = env_options["name"]
    shared = make_agent(cfg.agent, game=name, seed=cfg.seed)
    agents = {seat: make_agent(agent, game=name, seed=cfg.seed + 1 + i) if agent else shared
              for i, (seat, agent) in enumerate(
                  (seat, cfg.seats.get(seat)) for seat in env.possible_agents)}
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)

    def keep_replay(number: int, game: Game) -> None:
        if number < cfg.replays:
            save_replay(game, out / "replays" / f"game-{number:03d}.html")

    records = play(env, agents, cfg.games, seed=cfg.seed, on_game_end=keep_replay)
    summary = summarize(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for key, value in summary.items():
        log.info("%-28s %8.3f", key, value)
    log.info("summary and replays in %s", out)


if __name__ == "__main__":
    main()
