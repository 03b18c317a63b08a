"""How well the tiny player plays: legal moves, whether it sees, and scores against other agents.

    python benchmarks/tiny_player.py [--games 64] [--model PATH]

For each game the player under test (the tiny player by default) plays

- **self-play**: every seat itself. Legal-move rates per role and phase; and whether it sees: of
  the objects named in its valid civilian clues, how often the colour, the shape, and the colour
  and shape together belong to some object of its own picture, against chance (the same rate for
  a colour / shape / pair drawn uniformly from the CLEVR vocabulary).
- **one role against scripted players**, then the same with the random and the scripted agent in
  that role, on the same seeds: spy win rate (the spy not caught) in the spy's seat; vote
  accuracy in every civilian seat; the questioner's and the solver's mean return.

It prints a table and writes ``benchmarks/results/tiny_player.json``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import envs
from agents import make_agent
from agents.base import Agent
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner
from agents.scripted.phrases import parse_mentions
from agents.tiny_player import tiny_player_path
from agents.transformers_agent import TransformersAgent
from envs import GameEnv
from games.images.clevr import COLOUR_NAMES, SHAPES

RESULTS = Path(__file__).parent / "results" / "tiny_player.json"
#: Tokens a turn may take: the questioner writes a description, a question and four options.
MAX_TOKENS = {"spy": 48, "qa_duel": 160}
SEED = 10**12  # games never seen while building the player (its data came from small seeds)


def legal_moves(env: GameEnv, tally: dict[str, list[float]]) -> None:
    """Adds each move of a finished game to ``tally["<role>/<phase>"]`` (1 legal, 0 not)."""
    for move in env.game.moves:
        tally[f"{move.turn.role}/{move.turn.phase}"].append(float(move.valid))


def seeing(env: GameEnv, tally: dict[str, list[float]]) -> None:
    """For every object named in a valid civilian clue: does its colour, shape, or colour and
    shape together occur in the speaker's own picture, and how likely was that by chance."""
    for move in env.game.moves_of(phase="clue"):
        if move.turn.role != "civilian" or not move.valid:
            continue
        objects = move.turn.context["scene"]["objects"]
        colours = {o["colour"] for o in objects}
        shapes = {o["shape"] for o in objects}
        pairs = {(o["colour"], o["shape"]) for o in objects}
        for mention in parse_mentions(move.value):
            if "colour" in mention:
                tally["colour"].append(float(mention["colour"] in colours))
                tally["colour_chance"].append(len(colours) / len(COLOUR_NAMES))
            if "shape" in mention:
                tally["shape"].append(float(mention["shape"] in shapes))
                tally["shape_chance"].append(len(shapes) / len(SHAPES))
            if "colour" in mention and "shape" in mention:
                tally["colour_and_shape"].append(
                    float((mention["colour"], mention["shape"]) in pairs))
                tally["colour_and_shape_chance"].append(
                    len(pairs) / (len(COLOUR_NAMES) * len(SHAPES)))


def self_play(game: str, player: Agent, games: int) -> dict[str, float]:
    """Legal-move rates (and, for the spy game, seeing rates) of ``player`` in every seat."""
    tally: dict[str, list[float]] = defaultdict(list)

    def record(number: int, env: GameEnv) -> None:
        legal_moves(env, tally)
        if game == "spy":
            seeing(env, tally)

    RolloutRunner(lambda: envs.make(game), player, parallel_games=32).run(
        games, seed=SEED, on_game_end=record)
    return {name: float(np.mean(values)) for name, values in sorted(tally.items())}


def in_role(game: str, role: str, player: Agent, games: int) -> dict[str, float]:
    """``player`` in every seat of ``role``, scripted players elsewhere: the role's mean return
    and the game's statistics."""
    scripted = make_agent("scripted", game=game, seed=0)
    results = RolloutRunner(lambda: envs.make(game),
                            lambda seat, seat_role: player if seat_role == role else scripted,
                            parallel_games=32).run(games, seed=SEED)
    returns = [value for r in results for seat, value in r.returns.items()
               if r.roles[seat] == role]
    stats: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for name, value in result.stats.items():
            stats[name].append(value)
    return {"return": float(np.mean(returns)),
            **{name: float(np.mean(values)) for name, values in stats.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", type=int, default=64)
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny player")
    args = parser.parse_args()
    path = args.model or tiny_player_path()
    report: dict[str, Any] = {"model": str(path), "games": args.games}
    for game, roles in (("spy", ("spy", "civilian")), ("qa_duel", ("questioner", "solver"))):
        sampling = SamplingConfig(max_tokens=MAX_TOKENS[game], temperature=1.0, seed=0)
        player = TransformersAgent(path, sampling, device="cpu")
        report[game] = {"self_play": self_play(game, player, args.games)}
        for role in roles:
            report[game][role] = {
                name: in_role(game, role, agent, args.games)
                for name, agent in (("player", player),
                                    ("random", make_agent("random", seed=0)),
                                    ("scripted", make_agent("scripted", game=game, seed=1)))}
        print(json.dumps(report[game], indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
