"""A league: agents rated against each other on a schedule fair to seats and roles.

As a script (Hydra; ``configs/league.yaml``)::

    python -m agents.league env=spy                     # the model-free pool, spy
    python -m agents.league env=qa_duel
    python -m agents.league +agents.tiny='{agent: transformers, max_tokens: 64}'
    python -m agents.league run=outputs/spy agents.scripted_noise30=null   # a training run's
                                                        # checkpoints, one agent fewer in the pool

**Pool.** ``agents`` names each entrant and how to build it (``agents.make_agent``'s name under
``agent``, its options beside it; ``noise: p`` makes it answer at random with probability ``p``,
:class:`agents.random_agent.NoisyAgent`). The default pool is model-free (scripted, scripted with
30% and 70% random answers, random), so it has a spread of strengths; a model agent is a
checkpoint folder, the tiny player, a hub id or an OpenAI-compatible server;
``agents.<name>=null`` leaves one out. ``run`` adds a
training run's initial model and every complete checkpoint (named ``step-<n>``), which play the
pool only (not each other): rating against training step.

**Schedule (duplicate format).** A match between entrants A and B on seed ``s`` is a set of games
of that seed, the same images and roles for all of them: A alone in each seat with B in every
other, and B alone in each seat with A in every other (for a two-seat game: A first, then B
first). Every role of the seed is thus played by both, on the same images, so neither image
difficulty nor the role an entrant drew separates them. ``mirror`` names an entrant that also
plays a copy of itself this way: a sanity check, whose score must come out near 0.5. The first
round plays ``seeds_per_round`` seeds for every pair; each later round adds as many seeds for
each pair of entrants adjacent in the ranking whose intervals still overlap, until none do,
every interval is narrower than ``target_width``, ``max_games`` or ``max_rounds`` is reached.

**Outcomes.** In each game, every two seats held by different entrants are compared by their
returns: 1 to the higher, 0.5 each when equal. **Ratings** are a Bradley-Terry model over those
comparisons, with the seats' roles as covariates (an asymmetric game's roles win at different
rates whoever plays them): P(i beats j) = logistic(r_i - r_j + h_role(i) - h_role(j)), fitted as
a binomial GLM by statsmodels with cluster-robust (sandwich) covariance by game, since the
comparisons of one game are not independent. One virtual tie between every two entrants and
every two roles keeps the fit finite when an entrant wins every comparison. Ratings are shown on
the Elo scale (400 / ln 10 points per logit), centred on the pool mean 1000, with 95% intervals;
rank ranges are the 2.5-97.5% percentiles of ranks under the fit's normal approximation.
**Win rates** are mean comparison scores: per entrant, per role (the role's base rate beside:
all entrants in that role) and head to head, with Wilson intervals over games (statsmodels).

**Outputs**, in the run folder: ``matches.jsonl`` (a line per game, appended as rounds finish:
seed, game id, seat -> entrant and role, returns, invalid moves, tokens, replay), ``ratings.json``,
``leaderboard.html`` (:mod:`agents.leaderboard`) and ``replays/`` (the first game of each pair).
Games already in ``matches.jsonl`` (same seed, same seats, same entrants built the same way) are
never played again: a rerun plays nothing, a new entrant only its own matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

import envs
from agents.base import Agent
from agents.rollout import RolloutRunner
from agents.trajectory import GameResult
from envs import GameEnv
from envs.configs import store_env_configs
from envs.render import save_replay

log = logging.getLogger(__name__)

ELO_PER_LOGIT = 400 / math.log(10)
MEAN_RATING = 1000.0
MIRROR_SUFFIX = " (copy)"
RANK_DRAWS = 10_000


@dataclass(frozen=True)
class Entrant:
    """A member of the league: its name, how it is built, and its training step if it is a
    checkpoint. Its fingerprint changes with how it is built, so stored games of an entrant
    built differently are not reused."""

    name: str
    options: Mapping[str, Any]
    step: int | None = None

    @property
    def fingerprint(self) -> str:
        built = json.dumps(dict(self.options), sort_keys=True, default=str)
        return hashlib.sha1(built.encode()).hexdigest()[:10]

    def build(self, game: str, seed: int) -> Agent:
        from agents import make_agent
        from agents.random_agent import NoisyAgent

        options = dict(self.options)
        if "agent" not in options:
            raise ValueError(f"league entrant {self.name!r} has no 'agent' (the agent to build: "
                             f"scripted, random, transformers, vllm, openai, vllm_server)")
        builder, noise = options.pop("agent"), options.pop("noise", None)
        if builder in ("scripted", "random"):
            options["seed"] = seed
        agent = make_agent(builder, game=game, **options)
        return agent if noise is None else NoisyAgent(agent, float(noise), seed=seed)


@dataclass(frozen=True)
class Lineup:
    """Who sits where in the games of one seed."""

    seed: int
    seats: tuple[tuple[str, Entrant], ...]  # (seat, entrant), in the game's seat order

    @property
    def key(self) -> str:
        return f"{self.seed}|" + ",".join(f"{seat}={e.name}@{e.fingerprint}"
                                          for seat, e in self.seats)

    @property
    def pair(self) -> tuple[str, str]:
        return tuple(sorted({e.name for _, e in self.seats}))  # type: ignore[return-value]


def duplicate_lineups(a: Entrant, b: Entrant, seats: list[str], seed: int) -> list[Lineup]:
    """The games of one match on ``seed``: each of ``a`` and ``b`` alone in each seat, the other
    in every other seat (distinct line-ups only: a two-seat game has two)."""
    lineups: dict[str, Lineup] = {}
    for alone, rest in ((a, b), (b, a)):
        for seat in seats:
            lineup = Lineup(seed, tuple((s, alone if s == seat else rest) for s in seats))
            lineups.setdefault(lineup.key, lineup)
    return list(lineups.values())


@dataclass
class League:
    """The entrants, the games played so far (one dict per game, as in ``matches.jsonl``) and
    where results go."""

    env_options: dict[str, Any]
    entrants: list[Entrant]
    folder: Path
    parallel_games: int = 32
    seed: int = 0
    matches: list[dict[str, Any]] = field(default_factory=list)
    _agents: dict[str, Agent] = field(default_factory=dict)

    @property
    def matches_file(self) -> Path:
        return self.folder / "matches.jsonl"

    def load(self) -> None:
        """The games of earlier runs in this folder (a line cut short by a kill is skipped)."""
        if not self.matches_file.is_file():
            return
        for number, line in enumerate(self.matches_file.read_text().splitlines(), 1):
            try:
                self.matches.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d is not a game record (cut short?): skipped",
                            self.matches_file, number)

    def play(self, lineups: Iterable[Lineup], round_number: int, budget: int) -> int:
        """Plays the line-ups not played yet, while fewer than ``budget`` games are on file,
        appending each game to ``matches.jsonl`` as its batch ends; returns how many were
        played."""
        played_keys = {match["key"] for match in self.matches}
        todo = [lineup for lineup in lineups if lineup.key not in played_keys]
        todo = todo[:max(0, budget - len(self.matches))]
        replayed_pairs = {match["pair"] for match in self.matches if match.get("replay")}
        by_seats: dict[tuple, list[Lineup]] = defaultdict(list)
        for lineup in todo:
            by_seats[tuple((seat, e.name) for seat, e in lineup.seats)].append(lineup)
        played = 0
        for group in by_seats.values():
            for start in range(0, len(group), self.parallel_games):
                chunk = group[start:start + self.parallel_games]
                records = self._play_chunk(chunk, round_number, replayed_pairs)
                with self.matches_file.open("a", encoding="utf-8") as out:
                    out.writelines(json.dumps(r) + "\n" for r in records)
                self.matches += records
                every_tenth = max(1, len(todo) // 10)
                if (played + len(records)) // every_tenth > played // every_tenth:
                    log.info("round %d: %d of %d games played", round_number,
                             played + len(records), len(todo))
                played += len(records)
        return played

    def _agent(self, entrant: Entrant) -> Agent:
        """The entrant's agent, built on first use with a seed of its own (from its name, so
        the same whatever games are already on file)."""
        if entrant.name not in self._agents:
            seed = self.seed + zlib.crc32(entrant.name.encode())
            self._agents[entrant.name] = entrant.build(self.env_options["name"], seed)
        return self._agents[entrant.name]

    def _play_chunk(self, chunk: list[Lineup], round_number: int,
                    replayed_pairs: set[str]) -> list[dict[str, Any]]:
        seats = dict(chunk[0].seats)
        names = {seat: entrant.name for seat, entrant in seats.items()}
        pair = " vs ".join(chunk[0].pair)
        replay = None
        if pair not in replayed_pairs:
            replayed_pairs.add(pair)
            replay = f"replays/{_file_name(pair)}-{chunk[0].seed}.html"

        def keep_replay(number: int, env: GameEnv) -> None:
            if replay and number == 0:
                save_replay(env.game, self.folder / replay)

        runner = RolloutRunner(lambda: envs.make(**self.env_options),
                               {seat: self._agent(e) for seat, e in seats.items()},
                               parallel_games=len(chunk), agent_names=names)
        results: list[GameResult] = []
        for first, count in _consecutive_runs([lineup.seed for lineup in chunk]):
            results += runner.run(count, seed=first,
                                  on_game_end=keep_replay if not results else None)
        seconds = runner.timings.seconds_by_agent
        turns = runner.timings.turns_by_agent
        return [_record(lineup, result, round_number, pair, replay if number == 0 else None,
                        {name: seconds.get(name, 0.0) / max(1, turns.get(name, 0))
                         for name in set(names.values())})
                for number, (lineup, result) in enumerate(zip(chunk, results, strict=True))]


def _consecutive_runs(seeds: list[int]) -> list[tuple[int, int]]:
    """``seeds`` (ascending) as (first seed, count) runs of consecutive seeds."""
    runs: list[tuple[int, int]] = []
    for seed in seeds:
        if runs and runs[-1][0] + runs[-1][1] == seed:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seed, 1))
    return runs


def _file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _record(lineup: Lineup, result: GameResult, round_number: int, pair: str,
            replay: str | None, seconds_per_move: dict[str, float]) -> dict[str, Any]:
    """A game as a line of ``matches.jsonl``."""
    by_seat = defaultdict(list)
    for turn in result.turns:
        by_seat[turn.seat].append(turn)
    tokens = {seat: (sum(len(t.completion_ids) for t in turns)
                     if all(t.completion_ids is not None for t in turns) else None)
              for seat, turns in by_seat.items()}
    return {"key": lineup.key, "round": round_number, "seed": lineup.seed, "pair": pair,
            "game_id": result.game_id,
            "seats": {seat: entrant.name for seat, entrant in lineup.seats},
            "fingerprints": {entrant.name: entrant.fingerprint for _, entrant in lineup.seats},
            "roles": result.roles, "returns": result.returns, "stats": result.stats,
            "moves": {seat: len(turns) for seat, turns in by_seat.items()},
            "invalid_moves": {seat: sum(not t.valid for t in turns)
                              for seat, turns in by_seat.items()},
            "tokens": tokens, "seconds_per_move": seconds_per_move, "replay": replay}


# -- statistics ---------------------------------------------------------------------------------

@dataclass
class Comparisons:
    """Every pair of seats held by different entrants in every game: who, in which roles, the
    score of the first (1, 0.5, 0) and the game it belongs to."""

    first: list[str] = field(default_factory=list)
    second: list[str] = field(default_factory=list)
    first_role: list[str] = field(default_factory=list)
    second_role: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    game: list[int] = field(default_factory=list)


def comparisons(matches: list[dict[str, Any]]) -> Comparisons:
    found = Comparisons()
    for number, match in enumerate(matches):
        seats = list(match["seats"])
        for i, seat in enumerate(seats):
            for other in seats[i + 1:]:
                if match["seats"][seat] == match["seats"][other]:
                    continue
                mine, theirs = match["returns"][seat], match["returns"][other]
                found.first.append(match["seats"][seat])
                found.second.append(match["seats"][other])
                found.first_role.append(match["roles"][seat])
                found.second_role.append(match["roles"][other])
                found.score.append(1.0 if mine > theirs else 0.5 if mine == theirs else 0.0)
                found.game.append(number)
    return found


def fit_ratings(found: Comparisons, names: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                  dict[str, float]]:
    """Bradley-Terry ratings of ``names`` (Elo scale, mean 1000), their covariance, and each
    role's effect (Elo points against the first role alphabetically): see the module docstring."""
    import statsmodels.api as sm

    roles = sorted(set(found.first_role) | set(found.second_role))
    agent_column = {name: i for i, name in enumerate(names)}
    role_column = {role: len(names) + i for i, role in enumerate(roles)}
    width = len(names) + len(roles)
    rows, scores, clusters = [], [], []
    for a, b, ra, rb, score, game in zip(found.first, found.second, found.first_role,
                                         found.second_role, found.score, found.game, strict=True):
        row = np.zeros(width)
        row[agent_column[a]] += 1
        row[agent_column[b]] -= 1
        row[role_column[ra]] += 1
        row[role_column[rb]] -= 1
        rows.append(row)
        scores.append(score)
        clusters.append(game)
    virtual = max(clusters, default=-1) + 1
    for columns in (list(agent_column.values()), list(role_column.values())):
        for i, first in enumerate(columns):  # one virtual tie between every two of them
            for second in columns[i + 1:]:
                row = np.zeros(width)
                row[first], row[second] = 1, -1
                rows.append(row)
                scores.append(0.5)
                clusters.append(virtual)
                virtual += 1
    free = [c for c in range(width) if c not in (0, len(names))]  # the first agent and role: 0
    design = np.array(rows)[:, free]
    fit = sm.GLM(np.array(scores), design, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": np.array(clusters)})
    full = np.zeros(width)
    full[free] = fit.params
    covariance = np.zeros((width, width))
    covariance[np.ix_(free, free)] = fit.cov_params()
    k = len(names)
    centring = np.eye(k) - 1.0 / k
    ratings = MEAN_RATING + ELO_PER_LOGIT * centring @ full[:k]
    rating_covariance = ELO_PER_LOGIT ** 2 * centring @ covariance[:k, :k] @ centring.T
    role_effects = {role: float(ELO_PER_LOGIT * full[column])
                    for role, column in role_column.items()}
    return ratings, rating_covariance, role_effects


def rank_ranges(ratings: np.ndarray, covariance: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per entrant, the 2.5% and 97.5% percentiles of its rank (1 = best) over draws from the
    ratings' normal approximation."""
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal(ratings, covariance, size=RANK_DRAWS, method="eigh")
    ranks = (-draws).argsort(axis=1).argsort(axis=1) + 1
    return np.percentile(ranks, [2.5, 97.5], axis=0).round().astype(int).T


def wilson(successes: float, trials: int) -> tuple[float, float]:
    """The 95% Wilson interval of a rate (NaNs without trials)."""
    from statsmodels.stats.proportion import proportion_confint

    if not trials:
        return math.nan, math.nan
    low, high = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    return float(low), float(high)


def per_game_scores(found: Comparisons, key: str) -> dict[Any, dict[int, list[float]]]:
    """Mean comparison score per game, grouped by ``key``: ``"agent"``, ``"agent_role"``,
    ``"role"`` or ``"pair"`` (each comparison counted from both sides)."""
    grouped: dict[Any, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for a, b, ra, rb, score, game in zip(found.first, found.second, found.first_role,
                                         found.second_role, found.score, found.game, strict=True):
        for me, other, role, mine in ((a, b, ra, score), (b, a, rb, 1.0 - score)):
            group = {"agent": me, "agent_role": (me, role), "role": role,
                     "pair": (me, other)}[key]
            grouped[group][game].append(mine)
    return grouped


def rate(groups: dict[int, list[float]]) -> dict[str, float]:
    """Games, mean per-game score and its Wilson interval over games."""
    means = [float(np.mean(scores)) for scores in groups.values()]
    games = len(means)
    low, high = wilson(sum(means), games)
    return {"games": games, "win_rate": float(np.mean(means)) if means else math.nan,
            "lower": low, "upper": high}


def summarize(matches: list[dict[str, Any]], entrants: list[Entrant], env: str,
              mirror: str | None) -> dict[str, Any]:
    """``ratings.json``: see :mod:`agents.leaderboard` for its schema."""
    names = [e.name for e in entrants]
    built = {e.name: e.fingerprint for e in entrants}  # games of an entrant built otherwise: out
    rated = [m for m in matches if all(built.get(name) == fingerprint
                                       for name, fingerprint in m["fingerprints"].items())]
    found = comparisons(rated)
    ratings, covariance, role_effects = fit_ratings(found, names)
    half_width = 1.96 * np.sqrt(np.clip(np.diag(covariance), 0, None))
    ranks = (-ratings).argsort().argsort() + 1
    ranges = rank_ranges(ratings, covariance)
    by_agent = per_game_scores(found, "agent")
    by_agent_role = per_game_scores(found, "agent_role")
    by_pair = per_game_scores(found, "pair")
    steps = {e.name: e.step for e in entrants}
    agents: dict[str, Any] = {}
    for i, name in enumerate(names):
        overall = rate(by_agent.get(name, {}))
        seats = [(m, seat) for m in rated for seat, who in m["seats"].items() if who == name]
        moves = sum(m["moves"].get(seat, 0) for m, seat in seats)
        tokens = [m["tokens"].get(seat) for m, seat in seats]
        seconds = [m["seconds_per_move"].get(name) for m, _ in seats]
        agents[name] = {
            "rating": float(ratings[i]), "lower": float(ratings[i] - half_width[i]),
            "upper": float(ratings[i] + half_width[i]), "rank": int(ranks[i]),
            "rank_lower": int(ranges[i][0]), "rank_upper": int(ranges[i][1]),
            "games": len({id(m) for m, _ in seats}), "win_rate": overall["win_rate"],
            "win_rate_lower": overall["lower"], "win_rate_upper": overall["upper"],
            "invalid_move_rate": (sum(m["invalid_moves"].get(seat, 0) for m, seat in seats)
                                  / moves if moves else None),
            "tokens_per_move": sum(tokens) / moves if moves and None not in tokens else None,
            "seconds_per_move": float(np.mean(seconds)) if seconds else None,
            "step": steps[name],
            "roles": {role: rate(games) for (who, role), games in sorted(by_agent_role.items())
                      if who == name}}
    roles = {role: rate(games) | {"effect": role_effects[role]}
             for role, games in sorted(per_game_scores(found, "role").items())}
    replays = {m["pair"]: m["replay"] for m in rated if m.get("replay")}
    head_to_head = {a: {b: {"games": len(games), "score": float(np.mean(
        [np.mean(s) for s in games.values()])), "replay": replays.get(" vs ".join(sorted((a, b))))}
        for (me, b), games in by_pair.items() if me == a} for a in names}
    summary = {"env": env, "games": len(matches),
               "scale": f"Elo points ({ELO_PER_LOGIT:.1f} per Bradley-Terry logit), pool mean "
                        f"{MEAN_RATING:.0f}; 95% intervals, cluster-robust by game",
               "agents": agents, "roles": roles, "head_to_head": head_to_head, "mirror": {}}
    if mirror is not None:
        copy = mirror + MIRROR_SUFFIX
        games = per_game_scores(comparisons(
            [m for m in matches if set(m["seats"].values()) == {mirror, copy}]), "pair")
        if (mirror, copy) in games:
            mirrored = rate(games[(mirror, copy)])
            summary["mirror"][mirror] = {"games": mirrored["games"],
                                         "score": mirrored["win_rate"],
                                         "lower": mirrored["lower"], "upper": mirrored["upper"]}
    return summary


def overlapping_neighbours(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Pairs of entrants adjacent in rating whose 95% intervals overlap."""
    ordered = sorted(summary["agents"].items(), key=lambda item: -item[1]["rating"])
    return [(a, b) for (a, ra), (b, rb) in pairwise(ordered) if ra["lower"] <= rb["upper"]]


# -- the script ---------------------------------------------------------------------------------

def entrants_from_config(cfg: DictConfig) -> list[Entrant]:
    """The pool of ``cfg.agents``, then the training run's models if ``cfg.run`` is set."""
    pool = [Entrant(name, OmegaConf.to_container(options, resolve=True))
            for name, options in cfg.agents.items() if options is not None]
    if cfg.get("run"):
        pool += checkpoint_entrants(Path(cfg.run))
    names = [e.name for e in pool]
    if len(names) < 2:
        raise ValueError(f"a league needs 2 or more agents, got {names}")
    return pool


def checkpoint_entrants(run: Path) -> list[Entrant]:
    """A train.py run's initial model (``step-0``) and each complete checkpoint (``step-<n>``),
    as transformers agents with the run's sampling settings."""
    from transformers.trainer_utils import sort_checkpoints

    from agents.model import model_path
    from trainers.checkpoints import incomplete_reasons

    config_file = run / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ValueError(f"{run} is not a train.py run folder: {config_file} is missing")
    cfg = OmegaConf.load(config_file)
    sampling = OmegaConf.to_container(cfg.sampling, resolve=True)
    options = {"agent": "transformers", "seed": cfg.seed, **sampling}
    found = [Entrant("step-0", options | {"model": model_path(cfg.model.path)}, step=0)]
    folder = run / "checkpoints"
    for checkpoint in sort_checkpoints(str(folder)) if folder.is_dir() else []:
        if incomplete_reasons(checkpoint):
            log.warning("%s is not complete: left out of the league", checkpoint)
            continue
        step = int(Path(checkpoint).name.rsplit("-", 1)[1])
        found.append(Entrant(f"step-{step}", options | {"model": str(Path(checkpoint))}, step))
    if len(found) == 1:
        raise ValueError(f"{run} has no complete checkpoint to rate")
    return found


def first_round_pairs(entrants: list[Entrant], checkpoints_vs_pool: bool) -> list[tuple]:
    """Every pair, except checkpoints against each other (they play the pool only)."""
    return [(a, b) for i, a in enumerate(entrants) for b in entrants[i + 1:]
            if not (checkpoints_vs_pool and a.step is not None and b.step is not None)]


store_env_configs()  # env=<name> for every registered game, from its config dataclass


@hydra.main(version_base=None, config_path="../configs", config_name="league")
def main(cfg: DictConfig) -> None:
    """Plays the league's schedule and writes its results (module docstring)."""
    from agents.leaderboard import write_leaderboard

    started = time.perf_counter()
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    seats = list(envs.make(**env_options).possible_agents)
    entrants = entrants_from_config(cfg)
    by_name = {e.name: e for e in entrants}
    if cfg.mirror is not None and cfg.mirror not in by_name:
        raise ValueError(f"mirror={cfg.mirror!r} is not an agent of the league: {list(by_name)}")
    league = League(env_options, entrants, out, cfg.parallel_games, cfg.seed)
    league.load()
    log.info("league of %s: %s; %d games on file", env_options["name"],
             ", ".join(by_name), len(league.matches))
    pairs = [(a, b) for a, b in first_round_pairs(entrants, bool(cfg.get("run")))]
    if cfg.mirror is not None:
        original = by_name[cfg.mirror]
        pairs.append((original, Entrant(original.name + MIRROR_SUFFIX, original.options)))
    per_round = cfg.seeds_per_round
    stopped = "max_rounds"
    for round_number in range(cfg.max_rounds):
        seeds = range(cfg.seed + round_number * per_round,
                      cfg.seed + (round_number + 1) * per_round)
        lineups = [lineup for a, b in pairs for seed in seeds
                   for lineup in duplicate_lineups(a, b, seats, seed)]
        played = league.play(lineups, round_number, budget=cfg.max_games)
        summary = summarize(league.matches, entrants, env_options["name"], cfg.mirror)
        widths = [a["upper"] - a["lower"] for a in summary["agents"].values()]
        log.info("round %d: %d games played (%d on file); widest interval %.0f", round_number,
                 played, len(league.matches), max(widths))
        close = overlapping_neighbours(summary)
        if not close:
            stopped = "intervals separated"
        elif max(widths) <= cfg.target_width:
            stopped = "target_width"
        elif len(league.matches) >= cfg.max_games:
            stopped = "max_games"
        else:
            pairs = [(by_name[a], by_name[b]) for a, b in close]
            continue
        break
    summary["schedule"] = {"rounds": round_number + 1, "stopped": stopped,
                           "budget": cfg.max_games,
                           "seconds": round(time.perf_counter() - started, 1)}
    (out / "ratings.json").write_text(json.dumps(summary, indent=2))
    write_leaderboard(summary, out / "leaderboard.html")
    for name, agent in sorted(summary["agents"].items(), key=lambda item: item[1]["rank"]):
        log.info("%2d  %-24s %7.1f [%7.1f, %7.1f]  win rate %.3f  games %d", agent["rank"], name,
                 agent["rating"], agent["lower"], agent["upper"], agent["win_rate"],
                 agent["games"])
    log.info("stopped: %s; ratings in %s, leaderboard in %s", stopped, out / "ratings.json",
             out / "leaderboard.html")


if __name__ == "__main__":
    main()
