"""The league's leaderboard page: :func:`write_leaderboard` turns the league's ratings (the dict
saved as ``ratings.json``) into one self-contained HTML file: inline CSS, script and SVG, nothing
loaded from elsewhere, so it opens from ``file://``.

The page shows the run (environment, games, rating scale, schedule); a sortable table of the
agents (click a column header, again to reverse; ``#sort=rating`` or ``#sort=-rating`` at the end
of the address sorts on load); per-role win rates beside each role's base rate; the head-to-head
heat map, whose cells link to replays; a forest plot of the ratings with their 95% intervals;
rating against training step when checkpoints were rated; and the mirror matches, a sanity check
whose scores should be near 0.5. Undefined numbers (``None`` or NaN) show as "—".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

MISSING = "—"

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[data-order=asc]::after{content:" \\25B2"}
table.sortable th[data-order=desc]::after{content:" \\25BC"}
.range{color:#777;font-size:.9em}
tr.base{background:#f3f3f3;font-style:italic}
table.heat td{text-align:center;border:1px solid #fff}
table.heat td.self{background:#eee}
table.heat a{color:inherit}
tr.flag td{color:#b00}
svg{display:block;margin:.5em 0 1.5em;font-size:12px}
.note{color:#555}
"""

# Sorting: each cell's data-sort holds its value ("" when undefined: always last); a header's
# data-type says whether to compare numbers or text. "#sort=KEY" or "#sort=-KEY" clicks once or
# twice on load. The last line marks the page as rendered, which only happens without an error.
_SCRIPT = """
"use strict";
function sortTable(table, column, descending) {
  const body = table.tBodies[0];
  const numeric = table.tHead.rows[0].cells[column].dataset.type === "num";
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
    if (x === "" || y === "") return (x === "") - (y === "");
    const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
    return descending ? -order : order;
  });
  for (const row of rows) body.appendChild(row);
}
for (const table of document.querySelectorAll("table.sortable")) {
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      const descending = th.dataset.order === "asc";
      for (const other of th.parentNode.cells) delete other.dataset.order;
      th.dataset.order = descending ? "desc" : "asc";
      sortTable(table, th.cellIndex, descending);
    });
  }
}
const wanted = /^#sort=(-?)([a-z_]+)$/.exec(location.hash);
const header = wanted && document.querySelector(`table.sortable th[data-key="${wanted[2]}"]`);
if (header) {
  header.click();
  if (wanted[1]) header.click();
}
document.body.dataset.rendered = "yes";
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _value(x: Any) -> float | None:
    """``x`` as a float, or None where it is undefined (None or NaN)."""
    if x is None:
        return None
    value = float(x)
    return None if math.isnan(value) else value


def _number(x: Any, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals; "—" when undefined, "∞" when infinite."""
    value = _value(x)
    if value is None:
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def _count(x: Any) -> str:
    """A whole number, or "—"."""
    value = _value(x)
    return MISSING if value is None or math.isinf(value) else str(round(value))


def _percent(x: Any) -> str:
    value = _value(x)
    return MISSING if value is None else f"{_number(100 * value, 1)}%"


def _interval(x: Any, lower: Any, upper: Any, digits: int = 2) -> str:
    """``x [lower, upper]``; just ``x`` when neither bound is defined."""
    if _value(lower) is None and _value(upper) is None:
        return _number(x, digits)
    return f"{_number(x, digits)} [{_number(lower, digits)}, {_number(upper, digits)}]"


def _sort_value(x: Any) -> str:
    """A data-sort attribute: the number as JavaScript's ``Number`` reads it, "" if undefined."""
    value = _value(x)
    return "" if value is None else json.dumps(value)


def _rank(stats: dict[str, Any]) -> str:
    """The rank with its range, as "2 (1–3)" (HTML)."""
    rank, lower, upper = (_count(stats.get(k)) for k in ("rank", "rank_lower", "rank_upper"))
    if MISSING in (lower, upper) or lower == upper:
        return rank
    return f'{rank} <span class="range">({lower}–{upper})</span>'


def _ranked(agents: dict[str, dict[str, Any]]) -> list[str]:
    """Agent names, highest rating first; agents without a rating last."""
    def key(name: str) -> tuple[bool, float, str]:
        rating = _value(agents[name].get("rating"))
        return rating is None, -(rating or 0.0), name
    return sorted(agents, key=key)


def _td(sort: str, text: str, numeric: bool = True) -> str:
    """A table cell: ``sort`` escaped into its data-sort attribute, ``text`` as given (HTML)."""
    css = ' class="num"' if numeric else ""
    return f'<td{css} data-sort="{escape(sort)}">{text}</td>'


@dataclass(frozen=True)
class _Column:
    """A column of the leaderboard table: its key (for ``#sort=``), header, kind and cell."""

    key: str
    label: str
    numeric: bool
    cell: Callable[[str, dict[str, Any]], str]  # (name, stats) -> <td>


def _columns(with_steps: bool) -> list[_Column]:
    """The leaderboard's columns; a training-step column when checkpoints were rated."""
    def number_column(key: str, label: str, text: Callable[[Any], str]) -> _Column:
        return _Column(key, label, True,
                       lambda name, s: _td(_sort_value(s.get(key)), text(s.get(key))))

    columns = [
        _Column("rank", "rank", True, lambda name, s: _td(_sort_value(s.get("rank")), _rank(s))),
        _Column("agent", "agent", False, lambda name, s: _td(name, escape(name), numeric=False)),
        _Column("rating", "rating [95%]", True, lambda name, s: _td(
            _sort_value(s.get("rating")),
            _interval(s.get("rating"), s.get("lower"), s.get("upper"), digits=0))),
        number_column("games", "games", _count),
        _Column("win_rate", "win rate [95% Wilson]", True, lambda name, s: _td(
            _sort_value(s.get("win_rate")),
            _interval(s.get("win_rate"), s.get("win_rate_lower"), s.get("win_rate_upper")))),
        number_column("invalid_move_rate", "invalid moves", _percent),
        number_column("tokens_per_move", "tokens/move", lambda x: _number(x, 1)),
        number_column("seconds_per_move", "seconds/move", lambda x: _number(x, 3)),
    ]
    if with_steps:
        columns.append(number_column("step", "training step", _count))
    return columns


def _leaderboard_table(agents: dict[str, dict[str, Any]]) -> str:
    """The sortable table of agents, in rank order."""
    with_steps = any(_value(stats.get("step")) is not None for stats in agents.values())
    columns = _columns(with_steps)
    head = "".join(f'<th data-key="{c.key}" data-type="{"num" if c.numeric else "text"}" '
                   f'title="click to sort">{c.label}</th>' for c in columns)
    rows = ["<tr>" + "".join(c.cell(name, agents[name]) for c in columns) + "</tr>"
            for name in _ranked(agents)]
    return (f'<table class="sortable" id="leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _rate_cell(stats: dict[str, Any] | None, header: bool = False) -> str:
    """A win rate as "0.70 [0.60, 0.80] (n)", in a <td> (or <th>)."""
    tag = "th" if header else "td"
    if not stats:
        return f'<{tag} class="num">{MISSING}</{tag}>'
    games = _count(stats.get("games"))
    text = _interval(stats.get("win_rate"), stats.get("lower"), stats.get("upper"))
    return f'<{tag} class="num">{text} <span class="range">({games})</span></{tag}>'


def _role_table(agents: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]) -> str:
    """Win rate of each agent in each role, under each role's base rate over all agents."""
    roles = list(base) + sorted({role for stats in agents.values()
                                 for role in stats.get("roles") or {}} - set(base))
    if not roles:
        return '<p class="note">No per-role results.</p>'
    head = "".join(f"<th>{escape(role)}</th>" for role in roles)
    base_row = "".join(_rate_cell(base.get(role), header=True) for role in roles)
    rows = ["<tr><th>" + escape(name) + "</th>"
            + "".join(_rate_cell((agents[name].get("roles") or {}).get(role)) for role in roles)
            + "</tr>" for name in _ranked(agents)]
    return (f'<table id="roles"><thead><tr><th>agent</th>{head}</tr>'
            f'<tr class="base"><th>all agents (base rate)</th>{base_row}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _heat_colour(score: float) -> str:
    """Red at 0, white at 0.5, green at 1."""
    score = min(max(score, 0.0), 1.0)
    white, red, green = (255, 255, 255), (214, 39, 40), (44, 160, 44)
    end, weight = (red, 1 - 2 * score) if score < 0.5 else (green, 2 * score - 1)
    return "rgb({},{},{})".format(*(round(w + (e - w) * weight) for w, e in zip(white, end,
                                                                                strict=True)))


def _heat_cell(row: str, column: str, match: dict[str, Any] | None) -> str:
    """One head-to-head cell: the row agent's score, coloured, linked to a replay if any."""
    if row == column:
        return '<td class="self"></td>'
    score = _value((match or {}).get("score"))
    if score is None:
        return f'<td title="{escape(row)} vs {escape(column)}: no games">{MISSING}</td>'
    games = _count(match.get("games"))
    title = escape(f"{row} vs {column}: score {_number(score)} over {games} games")
    text = _number(score)
    if match.get("replay"):
        text = f'<a href="{escape(str(match["replay"]))}">{text}</a>'
    return f'<td style="background:{_heat_colour(score)}" title="{title}">{text}</td>'


def _heat_map(agents: dict[str, dict[str, Any]], head_to_head: dict[str, dict[str, Any]]) -> str:
    """The head-to-head matrix: row agent's mean result against the column agent."""
    names = _ranked(agents)
    head = "".join(f"<th>{escape(name)}</th>" for name in names)
    rows = ["<tr><th>" + escape(row) + "</th>"
            + "".join(_heat_cell(row, column, (head_to_head.get(row) or {}).get(column))
                      for column in names) + "</tr>" for row in names]
    return (f'<table class="heat" id="head-to-head"><thead><tr><th>row vs column</th>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _extent(values: Iterable[float | None]) -> tuple[float, float]:
    """The range of the finite values, padded by 5% (one unit around a single value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if low == high:
        return low - 1, high + 1
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick positions (steps of 1, 2 or 5 times a power of ten)."""
    rough = (high - low) / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_label(tick: float) -> str:
    return f"{round(tick, 9):g}"


@dataclass(frozen=True)
class _Scale:
    """A linear map from data values in [low, high] to pixels in [start, end]; values outside
    (infinite bounds included) are clipped to the edge."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        value = min(max(value, self.low), self.high)
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)


def _x_axis(scale: _Scale, y: float, top: float, label: str) -> str:
    """An x axis at height ``y``: grid lines up to ``top``, ticks, tick labels, axis label."""
    parts = [f'<line x1="{scale.start}" x2="{scale.end}" y1="{y}" y2="{y}" stroke="#333"/>']
    for tick in _ticks(scale.low, scale.high):
        x = f"{scale(tick):.1f}"
        parts.append(f'<line x1="{x}" x2="{x}" y1="{top}" y2="{y}" stroke="#eee"/>'
                     f'<line x1="{x}" x2="{x}" y1="{y}" y2="{y + 5}" stroke="#333"/>'
                     f'<text x="{x}" y="{y + 18}" text-anchor="middle">{_tick_label(tick)}</text>')
    middle = (scale.start + scale.end) / 2
    parts.append(f'<text x="{middle}" y="{y + 34}" text-anchor="middle">{escape(label)}</text>')
    return "".join(parts)


def _y_axis(scale: _Scale, x: float, right: float, label: str) -> str:
    """A y axis at ``x``: grid lines across to ``right``, ticks, tick labels, axis label."""
    parts = [f'<line x1="{x}" x2="{x}" y1="{scale.start}" y2="{scale.end}" stroke="#333"/>']
    for tick in _ticks(scale.low, scale.high):
        y = f"{scale(tick):.1f}"
        parts.append(f'<line x1="{x}" x2="{right}" y1="{y}" y2="{y}" stroke="#eee"/>'
                     f'<line x1="{x - 5}" x2="{x}" y1="{y}" y2="{y}" stroke="#333"/>'
                     f'<text x="{x - 8}" y="{y}" dy="4" text-anchor="end">'
                     f"{_tick_label(tick)}</text>")
    middle = (scale.start + scale.end) / 2
    parts.append(f'<text transform="translate({x - 48},{middle}) rotate(-90)" '
                 f'text-anchor="middle">{escape(label)}</text>')
    return "".join(parts)


def _point(x: float, y: float, tooltip: str) -> str:
    """A dot with a tooltip."""
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1f5fa8"><title>{escape(tooltip)}' \
           f"</title></circle>"


def _rating_text(name: str, stats: dict[str, Any]) -> str:
    return f"{name}: {_interval(stats.get('rating'), stats.get('lower'), stats.get('upper'), 0)}"


def _forest_plot(agents: dict[str, dict[str, Any]]) -> str:
    """One row per rated agent, best first: a dot at its rating, a line across its interval."""
    names = [n for n in _ranked(agents) if _value(agents[n].get("rating")) is not None]
    if not names:
        return '<p class="note">No ratings to plot.</p>'
    left = min(240, 16 + 7 * max(len(name) for name in names))
    row, top, width = 24, 10, left + 440
    bottom = top + row * len(names)
    low, high = _extent(_value(agents[n].get(k)) for n in names for k in ("lower", "rating",
                                                                          "upper"))
    scale = _Scale(low, high, left + 10, width - 20)
    parts = [_x_axis(scale, bottom, top, "rating (95% interval)")]
    for index, name in enumerate(names):
        stats = agents[name]
        y = top + row * index + row / 2
        rating = _value(stats["rating"])
        lower, upper = _value(stats.get("lower")), _value(stats.get("upper"))
        parts.append(f'<text x="{left}" y="{y}" dy="4" text-anchor="end">{escape(name)}</text>')
        if lower is not None and upper is not None:
            parts.append(f'<line x1="{scale(lower):.1f}" x2="{scale(upper):.1f}" y1="{y}" '
                         f'y2="{y}" stroke="#1f5fa8" stroke-width="2"/>')
        parts.append(_point(scale(rating), y, _rating_text(name, stats)))
    return (f'<svg id="forest" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{bottom + 42}" role="img" aria-label="ratings with 95% intervals">'
            f"{''.join(parts)}</svg>")


def _step_plot(agents: dict[str, dict[str, Any]]) -> str:
    """Rating against training step for the checkpoint agents (with interval bars), and the
    agents without a step as dashed reference lines; "" unless two agents have a step."""
    rated = [n for n in agents if _value(agents[n].get("rating")) is not None]
    checkpoints = sorted((n for n in rated if _value(agents[n].get("step")) is not None),
                         key=lambda n: _value(agents[n]["step"]))
    if len(checkpoints) < 2:
        return ""
    references = [n for n in _ranked(agents) if n in rated and n not in checkpoints]
    left, top, plot_width, plot_height = 70, 15, 460, 260
    steps = _extent(_value(agents[n]["step"]) for n in checkpoints)
    ratings = _extent(_value(agents[n].get(k)) for n in rated for k in ("lower", "rating",
                                                                        "upper"))
    x = _Scale(*steps, left, left + plot_width)
    y = _Scale(*ratings, top + plot_height, top)
    parts = [_x_axis(x, top + plot_height, top, "training step"),
             _y_axis(y, left, left + plot_width, "rating")]
    for name in references:
        level = f"{y(_value(agents[name]['rating'])):.1f}"
        parts.append(f'<line x1="{left}" x2="{left + plot_width}" y1="{level}" y2="{level}" '
                     f'stroke="#999" stroke-dasharray="4 3"/><text x="{left + plot_width + 6}" '
                     f'y="{level}" dy="4" fill="#666">{escape(name)}</text>')
    line = " ".join(f"{x(_value(agents[n]['step'])):.1f},{y(_value(agents[n]['rating'])):.1f}"
                    for n in checkpoints)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
    for name in checkpoints:
        stats = agents[name]
        at = x(_value(stats["step"]))
        lower, upper = _value(stats.get("lower")), _value(stats.get("upper"))
        if lower is not None and upper is not None:
            parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{y(lower):.1f}" '
                         f'y2="{y(upper):.1f}" stroke="#1f5fa8"/>')
        tooltip = f"{_rating_text(name, stats)} at step {_count(stats['step'])}"
        parts.append(_point(at, y(_value(stats["rating"])), tooltip))
    return (f'<svg id="steps" xmlns="http://www.w3.org/2000/svg" width="{left + plot_width + 160}"'
            f' height="{top + plot_height + 45}" role="img" '
            f'aria-label="rating against training step">{"".join(parts)}</svg>')


def _mirror_table(agents: dict[str, dict[str, Any]], mirror: dict[str, dict[str, Any]]) -> str:
    """Each agent against itself; a row whose interval excludes 0.5 is flagged."""
    names = [n for n in _ranked(agents) if n in mirror] + sorted(set(mirror) - set(agents))
    if not names:
        return '<p class="note">No mirror matches were played.</p>'
    rows = []
    for name in names:
        stats = mirror[name]
        lower, upper = _value(stats.get("lower")), _value(stats.get("upper"))
        off = lower is not None and upper is not None and not lower <= 0.5 <= upper
        check = "interval excludes 0.5" if off else ("ok" if lower is not None else MISSING)
        rows.append(f'<tr{" class=flag" if off else ""}><td>{escape(name)}</td>'
                    f'<td class="num">{_interval(stats.get("score"), lower, upper)}</td>'
                    f'<td class="num">{_count(stats.get("games"))}</td><td>{check}</td></tr>')
    return ('<p class="note">An agent against itself should score 0.5: a score whose interval '
            "excludes it points to a seat or role bias in the schedule.</p>"
            '<table id="mirror"><thead><tr><th>agent</th><th>score [95%]</th><th>games</th>'
            f"<th>check</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _header(ratings: dict[str, Any]) -> str:
    """Title, games, rating scale and schedule."""
    env = escape(str(ratings.get("env", "?")))
    schedule = ratings.get("schedule") or {}
    parts = [f"<h1>Leaderboard: {env}</h1>",
             f"<p>{_count(ratings.get('games'))} games. Ratings: "
             f"{escape(str(ratings.get('scale') or MISSING))}; intervals are 95%.</p>"]
    if schedule:
        items = " · ".join(f"{escape(str(key))}: {escape(str(value))}"
                           for key, value in schedule.items())
        parts.append(f"<p>Schedule: {items}</p>")
    return "".join(parts)


def _page(ratings: dict[str, Any]) -> str:
    """The leaderboard page (HTML) of the league's ``ratings`` (see :mod:`agents.leaderboard`)."""
    agents = ratings.get("agents")
    if not isinstance(agents, dict) or not all(isinstance(s, dict) for s in agents.values()):
        raise ValueError("ratings['agents'] must be a dict of agent name -> statistics dict, "
                         f"got {type(agents).__name__}")
    title = f"Leaderboard: {escape(str(ratings.get('env', '?')))}"
    sections = [
        _header(ratings),
        "<h2>Ratings</h2>", _leaderboard_table(agents),
        "<h2>Win rate by role</h2>", _role_table(agents, ratings.get("roles") or {}),
        "<h2>Head to head</h2>",
        '<p class="note">Row agent\'s mean result against the column agent (1 win, ½ tie, '
        "0 loss), red below 0.5, green above; hover for games, click for a replay.</p>",
        _heat_map(agents, ratings.get("head_to_head") or {}),
        "<h2>Ratings with 95% intervals</h2>", _forest_plot(agents),
    ]
    steps = _step_plot(agents)
    if steps:
        sections += ["<h2>Rating against training step</h2>",
                     '<p class="note">Dashed lines: agents that are not checkpoints.</p>', steps]
    sections += ["<h2>Mirror matches</h2>", _mirror_table(agents, ratings.get("mirror") or {})]
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{title}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(sections) + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")


def write_leaderboard(ratings: dict, path: Path) -> None:
    """leaderboard.html: the league's ``ratings`` as one self-contained page at ``path``
    (missing folders are made): sortable table, per-role table, head-to-head heat map linking to
    replays, forest plot, rating against training step, mirror matches."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(ratings), encoding="utf-8")
