"""Replays of any game of :mod:`games`: a plain-text transcript, a picture and an HTML page.

Only the :class:`games.core.Game` API is used (``name``, ``game_id``, ``roles``, ``seat_images``,
``moves``, ``done``, ``seat_rewards()``, ``stats()``), so every game gets replays for free, finished
or not; rewards, returns and statistics are shown once the game is done.

* :func:`render_transcript` — plain text, one entry per move (the environments' ``"ansi"`` mode).
* :func:`render_replay` — an RGB picture: the images each seat saw, then the moves, returns and
  statistics (the environments' ``"rgb_array"`` mode).
* :func:`render_replay_html` — a self-contained HTML page with the full model text of every move.
* :func:`save_replay` — writes the picture (``.png``) or the page (``.html``, ``.htm``).

Model text is untrusted. The transcript and the picture drop ANSI escape sequences and control
characters (a terminal cannot be hijacked), and the HTML page escapes every string the game
provides, embeds its images as data URLs and forbids scripts and external resources through its
Content-Security-Policy.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from games.core import Game, Move

#: Longest model text or ``shown`` text, in characters, in one transcript entry.
TRANSCRIPT_CHARS = 400
#: Height of every image thumbnail in the picture, in pixels.
THUMB_HEIGHT = 160
#: The picture's width bounds, in pixels; image panels wrap onto more rows beyond the maximum.
MIN_WIDTH, MAX_WIDTH = 720, 1400
#: Most moves listed in the picture, and most lines of text per move there.
PICTURE_MOVES, MOVE_LINES = 80, 3

_MARGIN, _GAP = 12, 8
_INK, _MUTED, _BAD, _GOOD = (30, 30, 30), (110, 110, 110), (180, 30, 30), (20, 120, 50)
_ANSI = re.compile(r"""
    \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?     # OSC: ESC ] ... BEL or ST
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?          # DCS, SOS, PM, APC strings
  | (?:\x1b\[|\x9b)[0-?]*[\x20-/]*[@-~]    # CSI: ESC [ params final
  | \x1b[\x20-/]*[0-~]                     # any other escape sequence
""", re.VERBOSE)


# ----- text -----

def _clean(text: Any) -> str:
    """``text`` without escape sequences or control/format characters (newlines and tabs kept)."""
    text = _ANSI.sub("", str(text))
    return "".join(c for c in text if c in "\n\t"
                   or unicodedata.category(c) not in ("Cc", "Cf", "Cs"))


def _one_line(text: Any, limit: int) -> str:
    """Cleaned ``text`` on one line (line breaks as " / ", whitespace collapsed), at most
    ``limit`` characters."""
    lines = (" ".join(line.split()) for line in _clean(text).splitlines())
    flat = " / ".join(line for line in lines if line)
    return flat if len(flat) <= limit else f"{flat[:limit]}… [+{len(flat) - limit} chars]"


def _number(value: Any, signed: bool = True) -> str:
    """A reward (``signed``) or statistic for display: numbers with three decimals, anything else
    as one line of text."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_):
        return f"{round(float(value), 3) + 0.0:{'+' if signed else ''}.3f}"  # no "-0.000"
    return _one_line(value, 80)


def _label(move: Move) -> str:
    turn = move.turn
    return f"#{turn.index} {turn.seat} ({turn.role}) {turn.phase} r{turn.round}"


def render_transcript(game: Game) -> str:
    """A plain-text transcript: seats, every move in order, then returns and statistics."""
    roles = game.roles
    width = max(map(len, roles), default=0)
    lines = [f"=== {_one_line(game.name, 80)} · {_one_line(game.game_id, 120)} ===",
             f"status: {'finished' if game.done else 'in progress'}, {len(game.moves)} moves",
             "seats:"]
    lines += [f"  {_one_line(seat, 80):<{width}}  {_one_line(role, 80)}"
              for seat, role in roles.items()]
    lines.append("moves:")
    for move in game.moves:
        outcome = "valid" if move.valid else "INVALID"
        reward = f"  reward {_number(move.reward)}" if game.done else ""
        lines += [f"  {_one_line(_label(move), 200)}  {outcome}{reward}",
                  f"      shown: {_one_line(move.shown, TRANSCRIPT_CHARS)}",
                  f"      text:  {_one_line(move.text, TRANSCRIPT_CHARS)}"]
    if not game.done:
        lines.append("(game in progress: rewards, returns and statistics come at the end)")
        return "\n".join(lines) + "\n"
    lines.append("returns:")
    lines += [f"  {_one_line(seat, 80):<{width}}  {_number(value)}"
              for seat, value in game.seat_rewards().items()]
    lines.append("stats:")
    lines += [f"  {_one_line(name, 80)}: {_number(value, signed=False)}"
              for name, value in game.stats().items()]
    return "\n".join(lines) + "\n"


# ----- images -----

def _image_groups(game: Game) -> list[tuple[tuple[np.ndarray, ...], list[str]]]:
    """The seats' images, each distinct tuple of images once with all seats that saw it."""
    groups: dict[tuple, tuple[tuple[np.ndarray, ...], list[str]]] = {}
    for seat, images in game.seat_images.items():
        key = tuple((a.shape, a.dtype.str, hashlib.sha1(np.ascontiguousarray(a)).hexdigest())
                    for a in map(np.asarray, images))
        groups.setdefault(key, (tuple(images), []))[1].append(seat)
    return list(groups.values())


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")


# ----- the picture -----

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=4)
def _font(size: int) -> _Font:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: _Font, width: int, max_lines: int, sep: str = " ") -> list[str]:
    """``text`` (one line) wrapped to ``width`` pixels at ``sep``, or inside words too long for a
    line; beyond ``max_lines`` it ends in "…"."""
    lines, line = [], ""
    for word in text.split(sep):
        candidate = f"{line}{sep}{word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while len(lines) <= max_lines and font.getlength(line) > width:
            low, high = 1, len(line)  # the longest prefix that fits, at least one character
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if font.getlength(line[:mid]) <= width else (low, mid - 1)
            lines.append(line[:low])
            line = line[low:]
        if len(lines) > max_lines:
            break
    lines.append(line)
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and font.getlength(last + "…") > width:
        last = last[:-1]
    return lines[:max_lines - 1] + [last + "…"]


def _panel(images: tuple[np.ndarray, ...], seats: list[str], roles: dict[str, str],
           max_width: int) -> Image.Image:
    """Thumbnails of ``images`` side by side (scaled to a common height) above the seats that
    saw them."""
    thumbs = []
    for image in map(_pil, images):
        width = max(1, min(4 * THUMB_HEIGHT, round(image.width * THUMB_HEIGHT / image.height)))
        thumbs.append(image.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS,
                                   reducing_gap=3.0))
    if not thumbs:
        thumbs = [Image.new("RGB", (THUMB_HEIGHT, THUMB_HEIGHT), (225, 225, 225))]
    strip_width = sum(t.width for t in thumbs) + 4 * (len(thumbs) - 1)
    scale = min(1.0, max_width / strip_width)
    strip = Image.new("RGB", (strip_width, THUMB_HEIGHT), "white")
    x = 0
    for thumb in thumbs:
        strip.paste(thumb, (x, 0))
        x += thumb.width + 4
    if scale < 1.0:
        strip = strip.resize((max(1, round(strip_width * scale)),
                              max(1, round(THUMB_HEIGHT * scale))), Image.Resampling.LANCZOS)
    font = _font(13)
    labels = [_one_line(f"{seat} ({roles.get(seat, '?')})", 200) for seat in seats]
    lines = _wrap(", ".join(labels) + ("" if images else ", no image"), font,
                  max(strip.width, 140), 6, sep=", ")
    line_height = 17
    panel = Image.new("RGB", (max(strip.width, 140), strip.height + 4 + line_height * len(lines)),
                      "white")
    panel.paste(strip, (0, 0))
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        draw.text((0, strip.height + 4 + i * line_height), line, font=font, fill=_INK)
    return panel


def _rows(panels: list[Image.Image], width: int) -> list[list[Image.Image]]:
    """``panels`` laid out left to right in rows at most ``width`` pixels wide."""
    rows: list[list[Image.Image]] = [[]]
    used = 0
    for panel in panels:
        if rows[-1] and used + _GAP + panel.width > width:
            rows.append([])
            used = 0
        used += (_GAP if rows[-1] else 0) + panel.width
        rows[-1].append(panel)
    return rows


def _text_block(game: Game, width: int) -> list[tuple[str, int, tuple[int, int, int]]]:
    """The lines below the images, as (text, font size, colour)."""
    block = [(line, 18, _INK) for line in _wrap(
        f"{_one_line(game.name, 80)} · {_one_line(game.game_id, 120)} · "
        f"{'finished' if game.done else 'in progress'} · {len(game.moves)} moves",
        _font(18), width, 2)]
    font = _font(14)
    for move in game.moves[:PICTURE_MOVES]:
        reward = f" · reward {_number(move.reward)}" if game.done else ""
        valid = "" if move.valid else " · INVALID"
        text = f"{_label(move)}{reward}{valid}: {_one_line(move.shown, 600)}"
        colour = _INK if move.valid else _BAD
        block += [(line, 14, colour) for line in _wrap(_one_line(text, 800), font, width,
                                                        MOVE_LINES)]
    if len(game.moves) > PICTURE_MOVES:
        block.append((f"… {len(game.moves) - PICTURE_MOVES} more moves (see the HTML replay)",
                      14, _MUTED))
    if not game.done:
        block.append(("Game in progress: rewards, returns and statistics come at the end.", 14,
                      _MUTED))
        return block
    returns = " · ".join(f"{_one_line(seat, 80)} {_number(value)}"
                         for seat, value in game.seat_rewards().items())
    stats = " · ".join(f"{_one_line(name, 80)} {_number(value, signed=False)}"
                       for name, value in game.stats().items())
    block += [(line, 14, _GOOD) for line in _wrap(f"Returns: {returns}", font, width, 6,
                                                               sep=" · ")]
    block += [(line, 14, _MUTED) for line in _wrap(f"Stats: {stats}", font, width, 6,
                                                                 sep=" · ")]
    return block


def render_replay(game: Game) -> Image.Image:
    """A picture of the game: the images each seat saw, the moves, returns and statistics."""
    roles = game.roles
    content = MAX_WIDTH - 2 * _MARGIN
    panels = [_panel(images, seats, roles, content)
              for images, seats in _image_groups(game)]
    rows = _rows(panels, content)
    row_widths = [sum(p.width for p in row) + _GAP * (len(row) - 1) for row in rows]
    width = max(MIN_WIDTH, max(row_widths) + 2 * _MARGIN)
    block = _text_block(game, width - 2 * _MARGIN)
    heights = [max((p.height for p in row), default=0) for row in rows]
    height = (_MARGIN + sum(h + _GAP for h in heights) + _GAP
              + sum(size + 5 for _, size, _ in block) + _MARGIN)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = _MARGIN
    for row, row_height in zip(rows, heights, strict=True):
        x = _MARGIN
        for panel in row:
            canvas.paste(panel, (x, y))
            x += panel.width + _GAP
        y += row_height + _GAP
    y += _GAP
    for line, size, colour in block:
        draw.text((_MARGIN, y), line, font=_font(size), fill=colour)
        y += size + 5
    return canvas


# ----- the HTML page -----

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1e1e1e; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; max-width: 45em; }
figure img { height: 200px; margin-right: 4px; image-rendering: auto; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.shown, pre { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 50em; margin: 0; }
tr.invalid td { background: #fdecec; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _e(value: Any) -> str:
    """A game-provided value as HTML text: control characters dropped, everything escaped."""
    return html.escape(_clean(value), quote=True)


def _data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_number(value: Any, signed: bool = True) -> str:
    return html.escape(_number(value, signed))


def render_replay_html(game: Game) -> str:
    """A self-contained HTML page of the game: images (as data URLs), every move with its full
    model text, returns and statistics. Every game-provided string is escaped."""
    roles, done = game.roles, game.done
    returns = game.seat_rewards() if done else {}
    title = f"{_e(game.name)} · {_e(game.game_id)}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
             'img-src data:; style-src \'unsafe-inline\'">',
             f"<title>{title}</title><style>{_CSS}</style></head><body>",
             f"<h1>{title}</h1>",
             f"<p>{'Finished' if done else 'In progress'}, {len(game.moves)} moves.</p>",
             "<h2>Seats</h2>",
             "<table><tr><th>seat</th><th>role</th><th>return</th></tr>"]
    parts += [f"<tr><td>{_e(seat)}</td><td>{_e(role)}</td>"
              f"<td class=\"num\">{_html_number(returns[seat]) if seat in returns else '—'}</td>"
              f"</tr>" for seat, role in roles.items()]
    parts += ["</table>", "<h2>What each seat saw</h2>", "<div>"]
    for images, seats in _image_groups(game):
        caption = _e(", ".join(f"{seat} ({roles.get(seat, '?')})" for seat in seats))
        imgs = "".join(f'<img src="{_data_url(image)}" alt="{caption}">' for image in images)
        parts.append(f"<figure>{imgs or '<p>no image</p>'}<figcaption>{caption}</figcaption>"
                     f"</figure>")
    parts += ["</div>", "<h2>Moves</h2>",
              "<table><tr><th>turn</th><th>seat</th><th>role</th><th>phase</th><th>round</th>"
              "<th>amounted to</th><th>valid</th><th>reward</th><th>model text</th></tr>"]
    for move in game.moves:
        turn = move.turn
        reward = _html_number(move.reward) if done else "—"
        labels = "".join(f"<td>{_e(value)}</td>"
                         for value in (turn.index, turn.seat, turn.role, turn.phase, turn.round))
        parts.append(
            f'<tr class="{"valid" if move.valid else "invalid"}">{labels}'
            f'<td class="shown">{_e(move.shown)}</td><td>{"yes" if move.valid else "no"}</td>'
            f'<td class="num">{reward}</td>'
            f"<td><details><summary>{len(move.text)} characters</summary>"
            f"<pre>{_e(move.text)}</pre></details></td></tr>")
    parts.append("</table>")
    if done:
        parts += ["<h2>Statistics</h2>", "<table><tr><th>statistic</th><th>value</th></tr>"]
        parts += [f'<tr><td>{_e(name)}</td><td class="num">{_html_number(value, False)}</td></tr>'
                  for name, value in game.stats().items()]
        parts.append("</table>")
    else:
        parts.append("<p>Game in progress: rewards, returns and statistics come at the end.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def save_replay(game: Game, path: str | Path) -> Path:
    """Write the game's replay to ``path``: a picture for ``.png``, a page for ``.html`` or
    ``.htm``; any other suffix raises ``ValueError``. Missing folders are made. Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".png", ".html", ".htm"):
        path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        render_replay(game).save(path, format="PNG")
    elif suffix in (".html", ".htm"):
        path.write_text(render_replay_html(game), encoding="utf-8")
    else:
        raise ValueError(f"cannot save a replay as {path.suffix or 'a file without suffix'!r}; "
                         f"use .png, .html or .htm")
    return path
