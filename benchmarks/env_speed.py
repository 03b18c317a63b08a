"""How fast the environments are: whole spy games per second with scripted agents, with and
without rendering images, and image pairs rendered per second.

    taskset -c 0 python benchmarks/env_speed.py          # one core, as the targets are stated

Targets: >= 500 four-player spy games/s without rendering (the environment must never be what a
GPU waits for) and >= 50 CLEVR-like pairs/s at 320x240.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs
from agents import make_agent
from games.images import make_source


def games_per_second(env_options: dict, num_games: int) -> float:
    """Play ``num_games`` whole games with one scripted agent in every seat."""
    env = envs.make("spy", **env_options)
    agent = make_agent("scripted", game="spy", seed=0)
    start = time.perf_counter()
    for game in range(num_games):
        env.reset(seed=game)
        for _ in env.agent_iter():
            observation, _, terminated, truncated, _ = env.last()
            env.step(None if terminated or truncated else agent.act([observation])[0].text)
    return num_games / (time.perf_counter() - start)


def pairs_per_second(source_name: str, num_pairs: int) -> float:
    source = make_source(source_name, width=320, height=240)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(num_pairs):
        source.sample_pair(rng)
    return num_pairs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args()
    pooled = {"images": {"source": "clevr", "pool_size": 64}}
    rows = [
        ("spy games/s, civilians vote, pre-rendered pool", games_per_second(pooled, args.games),
         500),
        ("spy games/s, observer (8 samples), pre-rendered pool",
         games_per_second({**pooled, "decision": "observer"}, args.games), 500),
        ("spy games/s, a fresh CLEVR pair rendered per game",
         games_per_second({}, args.games // 10), None),
        ("CLEVR-like pairs/s at 320x240", pairs_per_second("clevr", args.pairs), 50),
        ("chart pairs/s at 320x240", pairs_per_second("charts", args.pairs), None),
    ]
    print(f"{'measure':<56}{'value':>10}{'target':>10}{'ratio':>8}")
    for name, value, target in rows:
        ratio = f"{value / target:.1f}x" if target else ""
        print(f"{name:<56}{value:>10.1f}{target or '':>10}{ratio:>8}")


if __name__ == "__main__":
    main()
