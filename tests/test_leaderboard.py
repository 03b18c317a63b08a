"""The league's leaderboard page: its structure, read back with the standard library's HTML
parser, and the page and a game replay rendered by a real headless Chromium."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import envs
from agents import make_agent
from agents.leaderboard import write_leaderboard
from agents.rollout import RolloutRunner
from envs.render import save_replay

HOSTILE = "<b>x</b>"
AGENTS = ["scripted", "checkpoint-40", "checkpoint-20", HOSTILE]  # in rating order
REPLAY = "replays/scripted-vs-x.html"


def agent(rating: float, lower: float, upper: float, rank: int, ranks: tuple[int, int],
          games: int, win_rate: float, step: int | None = None, **more: Any) -> dict[str, Any]:
    """One agent's entry of ratings.json."""
    roles = {"spy": {"games": games // 4, "win_rate": win_rate - 0.1, "lower": win_rate - 0.2,
                     "upper": win_rate},
             "civilian": {"games": games - games // 4, "win_rate": win_rate + 0.05,
                          "lower": win_rate, "upper": win_rate + 0.1}}
    return {"rating": rating, "lower": lower, "upper": upper, "rank": rank,
            "rank_lower": ranks[0], "rank_upper": ranks[1], "games": games,
            "win_rate": win_rate, "win_rate_lower": win_rate - 0.05,
            "win_rate_upper": win_rate + 0.05, "invalid_move_rate": 0.0,
            "tokens_per_move": None, "seconds_per_move": 0.0001, "step": step,
            "roles": roles} | more


def head_to_head() -> dict[str, dict[str, dict[str, Any]]]:
    """Both orders of every pair; the better-rated agent scores higher; two pairs have replays."""
    table: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in AGENTS}
    replays = {("scripted", HOSTILE): REPLAY,
               ("checkpoint-40", "checkpoint-20"): "replays/40-vs-20.html"}
    for i, better in enumerate(AGENTS):
        for worse in AGENTS[i + 1:]:
            score = 1.0 if worse == HOSTILE else 0.5 + 0.1 * (AGENTS.index(worse) - i)
            replay = replays.get((better, worse))
            table[better][worse] = {"games": 40, "score": score, "replay": replay}
            table[worse][better] = {"games": 40, "score": 1 - score, "replay": replay}
    return table


def ratings() -> dict[str, Any]:
    """A league's ratings.json as the league writes it, with undefined values (None, NaN)."""
    agents = {
        "scripted": agent(1150.0, 1100.0, 1200.0, 1, (1, 1), 300, 0.62),
        "checkpoint-40": agent(1040.0, 990.0, 1090.0, 2, (2, 3), 200, 0.52, step=40,
                               tokens_per_move=12.5, seconds_per_move=0.8,
                               invalid_move_rate=0.02),
        "checkpoint-20": agent(1010.0, 960.0, 1060.0, 3, (2, 3), 200, 0.48, step=20,
                               tokens_per_move=30.25, seconds_per_move=1.2,
                               invalid_move_rate=0.1),
        HOSTILE: agent(800.0, 740.0, float("nan"), 4, (4, 4), 300, 0.2,
                       invalid_move_rate=float("nan"), seconds_per_move=None),
    }
    del agents[HOSTILE]["roles"]["spy"]  # never played the spy
    return {"env": "spy", "games": 1000,
            "scale": "Elo points (400/ln 10 x Bradley-Terry logit), pool mean 1000",
            "agents": agents,
            "roles": {"spy": {"games": 250, "win_rate": 0.3, "lower": 0.26, "upper": 0.34},
                      "civilian": {"games": 750, "win_rate": 0.7, "lower": 0.66, "upper": 0.74}},
            "head_to_head": head_to_head(),
            "mirror": {"scripted": {"games": 16, "score": 0.5, "lower": 0.3, "upper": 0.7},
                       HOSTILE: {"games": 16, "score": 0.9, "lower": 0.7, "upper": 0.97}},
            "schedule": {"rounds": 3, "stopped": "intervals separated", "budget": 4000}}


class Page(HTMLParser):
    """Every element (with the ids of the elements around it), the visible text, and the cell
    texts of each table body's rows, by table id."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self, html: str):
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.elements: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self.text: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self.feed(html)
        self.close()

    def within(self) -> tuple[str, ...]:
        return tuple(id_ for _, id_ in self.stack if id_)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in self.VOID:
            self.stack.append((tag, dict(attrs).get("id")))
        tables = [id_ for t, id_ in self.stack if t == "table"]
        if tag == "tr" and tables and "tbody" in (t for t, _ in self.stack):
            self.rows.setdefault(tables[-1] or "", []).append([])
        elif tag in ("td", "th") and tables and "tbody" in (t for t, _ in self.stack):
            self.rows[tables[-1] or ""][-1].append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), self.within()))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1][0] in ("script", "style"):
            return
        self.text.append(data)
        if any(t in ("td", "th") for t, _ in self.stack) and "tbody" in (t for t, _ in self.stack):
            tables = [id_ for t, id_ in self.stack if t == "table"]
            self.rows[tables[-1] or ""][-1][-1] += data

    def find(self, tag: str, inside: str | None = None) -> list[dict[str, str | None]]:
        """The attributes of every ``tag`` element (inside the element with id ``inside``)."""
        return [attrs for name, attrs, within in self.elements
                if name == tag and (inside is None or inside in within)]


@pytest.fixture
def page(tmp_path: Path) -> tuple[Path, Page]:
    path = tmp_path / "league" / "leaderboard.html"
    write_leaderboard(ratings(), path)
    return path, Page(path.read_text(encoding="utf-8"))


def test_leaderboard_table_ranks_agents_with_intervals(page):
    _, parsed = page
    rows = parsed.rows["leaderboard"]
    assert [row[1] for row in rows] == AGENTS
    assert rows[0][:3] == ["1", "scripted", "1150 [1100, 1200]"]
    assert rows[1][0] == "2 (2–3)"
    assert rows[1][4:] == ["0.52 [0.47, 0.57]", "2.0%", "12.5", "0.800", "40"]
    assert rows[3][2:] == ["800 [740, —]", "300", "0.20 [0.15, 0.25]", "—", "—", "—", "—"]
    headers = {attrs["data-key"]: attrs["data-type"] for attrs in parsed.find("th", "leaderboard")}
    assert headers == {"rank": "num", "agent": "text", "rating": "num", "games": "num",
                       "win_rate": "num", "invalid_move_rate": "num", "tokens_per_move": "num",
                       "seconds_per_move": "num", "step": "num"}
    sort_values = [attrs["data-sort"] for attrs in parsed.find("td", "leaderboard")]
    assert sort_values[:9] == ["1.0", "scripted", "1150.0", "300.0", "0.62", "0.0", "", "0.0001",
                               ""]


def test_role_table_shows_base_rates_and_each_agents_rates(page):
    _, parsed = page
    rows = parsed.rows["roles"]
    assert [row[0] for row in rows] == AGENTS
    assert rows[0][1:] == ["0.52 [0.42, 0.62] (75)", "0.67 [0.62, 0.72] (225)"]
    assert rows[3][1] == "—"  # never played the spy
    text = "".join(parsed.text)
    assert "all agents (base rate)0.30 [0.26, 0.34] (250)0.70 [0.66, 0.74] (750)" in text


def test_heat_map_colours_scores_and_links_replays(page):
    _, parsed = page
    rows = parsed.rows["head-to-head"]
    assert [row[0] for row in rows] == AGENTS
    assert rows[0][1:] == ["", "0.60", "0.70", "1.00"]
    assert rows[3][1:] == ["0.00", "0.00", "0.00", ""]
    cells = [attrs for attrs in parsed.find("td", "head-to-head") if attrs.get("style")]
    assert len(cells) == len(AGENTS) * (len(AGENTS) - 1)
    colours = {attrs["style"] for attrs in cells}
    assert {"background:rgb(44,160,44)", "background:rgb(214,39,40)"} <= colours
    assert all("over 40 games" in attrs["title"] for attrs in cells)
    links = sorted(attrs["href"] for attrs in parsed.find("a", "head-to-head"))
    assert links == sorted([REPLAY, REPLAY, "replays/40-vs-20.html", "replays/40-vs-20.html"])


def test_forest_plot_has_one_dot_and_interval_per_agent(page):
    _, parsed = page
    dots = parsed.find("circle", "forest")
    assert len(dots) == len(AGENTS)
    xs = [float(dot["cx"]) for dot in dots]
    assert xs == sorted(xs, reverse=True)  # best first, further right
    labels = [attrs for attrs in parsed.find("text", "forest") if attrs.get("text-anchor") == "end"]
    assert len(labels) == len(AGENTS)
    bars = [attrs for attrs in parsed.find("line", "forest") if attrs.get("stroke-width") == "2"]
    assert len(bars) == len(AGENTS) - 1  # the hostile agent's interval has no upper bound


def test_step_plot_only_with_two_checkpoints(page, tmp_path):
    path, parsed = page
    assert len(parsed.find("circle", "steps")) == 2
    assert len(parsed.find("polyline", "steps")) == 1
    assert "training step" in path.read_text()
    one_step = ratings()
    one_step["agents"]["checkpoint-20"]["step"] = None
    write_leaderboard(one_step, tmp_path / "one.html")
    assert not Page((tmp_path / "one.html").read_text()).find("svg", "steps")


def test_mirror_table_flags_a_biased_mirror(page):
    path, parsed = page
    assert parsed.rows["mirror"] == [["scripted", "0.50 [0.30, 0.70]", "16", "ok"],
                                     [HOSTILE, "0.90 [0.70, 0.97]", "16",
                                      "interval excludes 0.5"]]
    assert 'class=flag><td>&lt;b&gt;x&lt;/b&gt;' in path.read_text()


def test_page_is_self_contained_escaped_and_shows_no_undefined_numbers(page):
    path, parsed = page
    html = path.read_text()
    assert HOSTILE not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert not parsed.find("b")
    text = "".join(parsed.text)
    assert "Leaderboard: spy" in text and "1000 games" in text and "budget: 4000" in text
    titles = " ".join(attrs["title"] for _, attrs, _ in parsed.elements if "title" in attrs)
    for shown in (text, titles):
        assert not re.search(r"\b(None|nan|NaN|inf)\b", shown), shown
    assert not re.search(r"(src|href)=\"?(https?:|//)", html, re.IGNORECASE)
    assert not parsed.find("link") and not parsed.find("img")
    assert html.count("<script>") == 1 and 'document.body.dataset.rendered = "yes"' in html


def test_bad_ratings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="agents"):
        write_leaderboard({"env": "spy"}, tmp_path / "page.html")
    broken = ratings()
    broken["agents"]["scripted"] = math.nan
    with pytest.raises(ValueError, match="agents"):
        write_leaderboard(broken, tmp_path / "page.html")


# ----- a real browser -----

def chromium() -> str:
    """Debian's Chromium; skipped when missing, unless ZEROPLAY_REQUIRE_BROWSER=1 says the
    browser tests must run."""
    found = shutil.which("chromium")
    if found:
        return found
    message = "headless Chromium is missing: install Debian's package (apt-get install chromium)"
    if os.environ.get("ZEROPLAY_REQUIRE_BROWSER") == "1":
        pytest.fail(message + "; ZEROPLAY_REQUIRE_BROWSER=1 requires it")
    pytest.skip(message)


def dump_dom(url: str, profile: Path) -> Page:
    """The page's DOM after Chromium loaded it and ran its scripts."""
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--dump-dom", url], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "<body" in result.stdout, result.stderr[-3000:]
    return Page(result.stdout)


def play_replay(path: Path) -> Any:
    """One scripted game of spy, its replay saved at ``path``; returns the game."""
    games = []

    def save(number: int, env: envs.GameEnv) -> None:
        save_replay(env.game, path)
        games.append(env.game)

    runner = RolloutRunner(lambda: envs.make("spy"), make_agent("scripted", game="spy"),
                           parallel_games=1)
    runner.run(1, seed=3, on_game_end=save)
    return games[0]


def test_chromium_renders_the_leaderboard_and_sorts_it(tmp_path):
    chromium()
    folder = tmp_path / "league"
    game = play_replay(folder / REPLAY)
    write_leaderboard(ratings(), folder / "leaderboard.html")
    url = (folder / "leaderboard.html").as_uri()

    loaded = dump_dom(url, tmp_path / "profile")
    assert loaded.find("body")[0].get("data-rendered") == "yes"  # every script ran to the end
    assert [row[1] for row in loaded.rows["leaderboard"]] == AGENTS
    assert len(loaded.find("circle", "forest")) == len(AGENTS)
    assert len(loaded.find("circle", "steps")) == 2
    assert (folder / REPLAY).is_file()

    by_tokens = dump_dom(url + "#sort=tokens_per_move", tmp_path / "profile")
    assert by_tokens.find("body")[0].get("data-rendered") == "yes"
    assert [row[1] for row in by_tokens.rows["leaderboard"]] == [
        "checkpoint-40", "checkpoint-20", "scripted", HOSTILE]  # undefined last
    assert {"tokens_per_move": "asc"} == {attrs["data-key"]: attrs.get("data-order")
                                         for attrs in by_tokens.find("th", "leaderboard")
                                         if attrs.get("data-order")}
    by_games = dump_dom(url + "#sort=-games", tmp_path / "profile")  # clicked twice: descending
    assert [row[3] for row in by_games.rows["leaderboard"]] == ["300", "300", "200", "200"]
    by_name = dump_dom(url + "#sort=-agent", tmp_path / "profile")
    assert [row[1] for row in by_name.rows["leaderboard"]] == sorted(AGENTS, reverse=True)

    replay = dump_dom((folder / REPLAY).as_uri(), tmp_path / "profile")
    text = "".join(replay.text)
    assert f"spy · {game.game_id}" in text and "Finished" in text
    assert len(replay.find("img")) >= 1
    moves = [attrs for attrs in replay.find("tr") if attrs.get("class") in ("valid", "invalid")]
    assert len(moves) == len(game.moves)
