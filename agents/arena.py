"""Play games between agents (through the rollout runner) and sum up the results.

As a script (Hydra; ``configs/arena.yaml``)::

    python -m agents.arena env=spy                        # 100 self-play games, scripted agents
    python -m agents.arena env=qa_duel agent=random games=20
    python -m agents.arena agent=vllm +agent.max_tokens=64   # the default tiny VLM
    python -m agents.arena env=spy +seats.player_1=random  # one seat against the others

It logs who sits where and its progress, and writes ``summary.json`` (mean return per role, per
seat and per agent, mean of each game statistic), ``replays/index.html`` (every game: seats, roles,
returns, a link to its replay), HTML replays of the first games and, with ``trajectories=true``,
every turn (:mod:`agents.trajectory`) to Hydra's output directory. Games are played in batches of
``4 * parallel_games`` (game ``i`` on seed ``seed + i``, as in one run); only their returns, roles
and statistics stay in memory, their turns go to disk with each batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections import defaultdict
from html import escape
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


def summarize(records: list[GameResult],
              seat_agents: dict[str, str] | None = None) -> dict[str, float]:
    """``games``, the mean return of each role (``return/<role>``), of each seat
    (``return/seat/<seat>``) and, given who sat where, of each agent over all its seats
    (``return/agent/<name>``), and the mean of each stat."""
    by_role: dict[str, list[float]] = defaultdict(list)
    by_seat: dict[str, list[float]] = defaultdict(list)
    by_agent: dict[str, list[float]] = defaultdict(list)
    values_by_stat: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for seat, role in record.roles.items():
            by_role[role].append(record.returns[seat])
            by_seat[seat].append(record.returns[seat])
            if seat_agents is not None:
                by_agent[seat_agents[seat]].append(record.returns[seat])
        for name, value in record.stats.items():
            values_by_stat[name].append(value)
    summary = {"games": float(len(records))}
    for prefix, values in (("return/", by_role), ("return/seat/", by_seat),
                           ("return/agent/", by_agent)):
        summary |= {f"{prefix}{key}": float(np.mean(v)) for key, v in sorted(values.items())}
    summary |= {name: float(np.mean(v)) for name, v in sorted(values_by_stat.items())}
    return summary


def write_index(records: list[GameResult], seat_agents: dict[str, str], replays: int,
                path: Path) -> None:
    """A page listing every game: who sat where, roles, returns, and a link to its replay (the
    first ``replays`` games have one)."""
    seats = list(seat_agents)
    head = "".join(f"<th>{escape(seat)} ({escape(seat_agents[seat])})</th>" for seat in seats)
    rows = []
    for number, record in enumerate(records):
        name = f"game-{number:03d}.html"
        game = f'<a href="{name}">{number}</a>' if number < replays else str(number)
        cells = "".join(f"<td>{escape(record.roles[seat])} {record.returns[seat]:+.2f}</td>"
                        for seat in seats)
        rows.append(f"<tr><td>{game}</td><td>{escape(record.game_id)}</td>{cells}</tr>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>arena games</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>"
        f"<h1>{len(records)} games</h1><p>each seat: role and return</p>"
        f"<table><tr><th>game</th><th>id</th>{head}</tr>{''.join(rows)}</table>")


store_env_configs()  # env=<name> for every registered game, from its config dataclass


@hydra.main(version_base=None, config_path="../configs", config_name="arena")
def main(cfg: DictConfig) -> None:
    """Play ``cfg.games`` games of ``cfg.env`` and write the summary and replays."""
    from agents import make_agent

    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    name = env_options["name"]
    seats = envs.make(**env_options).possible_agents
    options = OmegaConf.to_container(cfg.agent, resolve=True)
    shared_name = options.pop("name")
    shared = make_agent(shared_name, game=name, seed=cfg.seed, **options)
    unknown = sorted(set(cfg.seats) - set(seats))
    if unknown:
        raise ValueError(f"seats {unknown} are not seats of {name}: {list(seats)}")
    seat_agents = {seat: cfg.seats.get(seat, shared_name) for seat in seats}
    agents = {seat: make_agent(cfg.seats[seat], game=name, seed=cfg.seed + 1 + i)
              if seat in cfg.seats else shared for i, seat in enumerate(seats)}
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    log.info("%d games of %s; seats: %s", cfg.games, name,
             ", ".join(f"{seat}={agent}" for seat, agent in seat_agents.items()))
    every = max(1, cfg.games // 10)

    def after_game(first: int, number_in_batch: int, env: GameEnv) -> None:
        number = first + number_in_batch
        if number < cfg.replays:
            save_replay(env.game, out / "replays" / f"game-{number:03d}.html")
        if (number + 1) % every == 0 or number + 1 == cfg.games:
            log.info("game %d of %d played", number + 1, cfg.games)

    runner = RolloutRunner(lambda: envs.make(**env_options), agents,
                           parallel_games=cfg.parallel_games, agent_names=seat_agents)
    records: list[GameResult] = []  # without their turns: those go to disk batch by batch
    batch = 4 * cfg.parallel_games
    for first in range(0, cfg.games, batch):
        played = runner.run(min(batch, cfg.games - first), seed=cfg.seed + first,
                            on_game_end=functools.partial(after_game, first))
        if cfg.trajectories:
            save_results(played, out / "trajectories", append=first > 0)
        records += [dataclasses.replace(result, turns=[]) for result in played]
    summary = summarize(records, seat_agents)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_index(records, seat_agents, cfg.replays, out / "replays" / "index.html")
    for key, value in summary.items():
        log.info("%-28s %8.3f", key, value)
    log.info("summary in %s, replays in %s", out / "summary.json", out / "replays" / "index.html")


if __name__ == "__main__":
    main()
