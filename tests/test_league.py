"""The league: a fair schedule, ratings that recover known strengths, and the script's files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from agents.league import (
    ELO_PER_LOGIT,
    Comparisons,
    Entrant,
    duplicate_lineups,
    fit_ratings,
    rank_ranges,
)

ROOT = Path(__file__).parent.parent
SEATS = ["player_1", "player_2", "player_3", "player_4"]


def test_a_match_puts_each_entrant_alone_in_every_seat_on_the_same_seed():
    a, b = Entrant("a", {"agent": "scripted"}), Entrant("b", {"agent": "random"})
    lineups = duplicate_lineups(a, b, SEATS, seed=7)
    assert len(lineups) == 8 and {lineup.seed for lineup in lineups} == {7}
    alone = Counter()
    for lineup in lineups:
        names = Counter(entrant.name for _, entrant in lineup.seats)
        [(single, one)] = [(name, count) for name, count in names.items() if count == 1]
        alone[single, next(s for s, e in lineup.seats if e.name == single)] += one
    assert alone == Counter({(name, seat): 1 for name in "ab" for seat in SEATS})
    two_seats = duplicate_lineups(a, b, SEATS[:2], seed=0)
    assert [[e.name for _, e in lineup.seats] for lineup in two_seats] == [["a", "b"], ["b", "a"]]


def test_an_entrant_built_differently_is_a_different_entrant():
    assert Entrant("x", {"agent": "scripted"}).fingerprint != Entrant(
        "x", {"agent": "scripted", "noise": 0.3}).fingerprint
    lineup = duplicate_lineups(Entrant("x", {"agent": "random"}),
                               Entrant("y", {"agent": "random"}), SEATS[:2], 0)[0]
    assert lineup.key.startswith("0|player_1=x@") and lineup.pair == ("x", "y")


def test_bradley_terry_with_a_role_effect_recovers_known_strengths():
    """Simulated comparisons with known ratings and a known advantage of the "spy" role: the
    fit finds them within its intervals, and the rank ranges are exact when well separated."""
    rng = np.random.default_rng(0)
    names, truth, spy_edge = ["strong", "middle", "weak"], np.array([1.0, 0.0, -1.0]), 0.6
    found = Comparisons()
    for game in range(3000):
        i, j = rng.choice(3, size=2, replace=False)
        role_i, role_j = ("spy", "civilian") if game % 2 else ("civilian", "civilian")
        logit = truth[i] - truth[j] + (spy_edge if role_i == "spy" else 0.0)
        found.first.append(names[i])
        found.second.append(names[j])
        found.first_role.append(role_i)
        found.second_role.append(role_j)
        found.score.append(float(rng.random() < 1 / (1 + math.exp(-logit))))
        found.game.append(game)
    ratings, covariance, roles = fit_ratings(found, names)
    expected = 1000 + ELO_PER_LOGIT * (truth - truth.mean())
    standard_errors = np.sqrt(np.diag(covariance))
    assert np.all(np.abs(ratings - expected) < 3 * standard_errors)
    assert abs(ratings.mean() - 1000) < 1e-6
    assert roles["civilian"] == 0.0 and abs(roles["spy"] - ELO_PER_LOGIT * spy_edge) < 40
    assert rank_ranges(ratings, covariance).tolist() == [[1, 1], [2, 2], [3, 3]]


def test_an_entrant_that_wins_every_comparison_gets_a_finite_rating():
    found = Comparisons(first=["a"] * 50, second=["b"] * 50, first_role=["r"] * 50,
                        second_role=["r"] * 50, score=[1.0] * 50, game=list(range(50)))
    ratings, covariance, _ = fit_ratings(found, ["a", "b"])
    assert np.all(np.isfinite(ratings)) and ratings[0] > ratings[1] + 200
    assert np.all(np.isfinite(covariance))


def league(folder: Path, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents.league", f"hydra.run.dir={folder}",
                           *overrides], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_default_league_ranks_scripted_above_random_and_a_rerun_plays_nothing(tmp_path):
    first = league(tmp_path, "env=spy")
    assert first.returncode == 0, first.stderr[-3000:]
    ratings = json.loads((tmp_path / "ratings.json").read_text())
    agents = ratings["agents"]
    assert set(agents) == {"scripted", "scripted_noise30", "scripted_noise70", "random"}
    assert agents["scripted"]["rank"] == 1 and agents["random"]["rank"] == 4
    assert agents["scripted"]["lower"] > agents["random"]["upper"]
    assert agents["scripted"]["invalid_move_rate"] == 0 < agents["random"]["invalid_move_rate"]
    assert set(agents["scripted"]["roles"]) == {"spy", "civilian"} == set(ratings["roles"])
    mirror = ratings["mirror"]["scripted"]
    assert mirror["games"] > 0 and mirror["lower"] <= 0.5 <= mirror["upper"]
    head_to_head = ratings["head_to_head"]
    assert head_to_head["scripted"]["random"]["score"] > 0.5
    assert math.isclose(head_to_head["scripted"]["random"]["score"]
                        + head_to_head["random"]["scripted"]["score"], 1.0)
    lines = (tmp_path / "matches.jsonl").read_text().splitlines()
    game = json.loads(lines[0])
    assert set(game) >= {"seed", "game_id", "seats", "roles", "returns", "invalid_moves",
                         "tokens", "replay"}
    assert (tmp_path / game["replay"]).is_file()
    assert (tmp_path / "leaderboard.html").is_file()

    again = league(tmp_path, "env=spy")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "matches.jsonl").read_text().splitlines() == lines
    assert "round 0: 0 games played" in again.stdout
    assert json.loads((tmp_path / "ratings.json").read_text())["agents"] == agents

    added = league(tmp_path, "env=spy", "+agents.lazy={agent: scripted, noise: 0.5}")
    assert added.returncode == 0, added.stderr[-3000:]
    new = [json.loads(line) for line in
           (tmp_path / "matches.jsonl").read_text().splitlines()[len(lines):]]
    assert new and all("lazy" in game["seats"].values() for game in new)

    rebuilt = league(tmp_path, "env=spy", "+agents.random.max_chars=20")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    games = [json.loads(line) for line in (tmp_path / "matches.jsonl").read_text().splitlines()]
    replayed = games[len(lines) + len(new):]
    assert replayed and all("random" in game["seats"].values() for game in replayed)
    ratings = json.loads((tmp_path / "ratings.json").read_text())
    assert ratings["agents"]["random"]["games"] == len(replayed)  # the old random's are out


def test_the_league_refuses_unknown_agents_and_mirrors(tmp_path):
    unknown = league(tmp_path, "+agents.bad={agent: nonsense}")
    assert unknown.returncode != 0 and "nonsense" in unknown.stderr
    mirror = league(tmp_path, "mirror=nobody")
    assert mirror.returncode != 0 and "mirror='nobody' is not an agent" in mirror.stderr


def test_a_duel_league_rates_both_roles(tmp_path):
    rated = league(tmp_path, "env=qa_duel", "seeds_per_round=4", "max_rounds=1")
    assert rated.returncode == 0, rated.stderr[-3000:]
    ratings = json.loads((tmp_path / "ratings.json").read_text())
    assert set(ratings["roles"]) == {"questioner", "solver"}
    assert ratings["schedule"] == ratings["schedule"] | {"rounds": 1, "stopped": "max_rounds"}
    # 6 pairs and a mirror, 4 seeds each, 2 games a seed (a two-seat game)
    assert ratings["games"] == 7 * 4 * 2
    assert [agent["games"] for agent in ratings["agents"].values()] == [3 * 4 * 2] * 4
