"""Reading answers out of free model text: ``\\boxed{...}``, ``<tag>...</tag>``, votes and letters.

Every function here accepts any string and returns ``None`` rather than raising when it finds
nothing usable: garbage text is a game's invalid move, never an error. Every function takes time
linear in the text's length, whatever it holds (thousands of unclosed ``\\boxed{`` or ``<answer>``
openers, runs of braces): one step of a game at the action size limit costs well under a
millisecond of parsing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_BOXED = "\\boxed{"
_OPEN, _CLOSE = ord("{"), ord("}")
# a whole number with no sign, letter, digit or decimal point attached (a full stop may follow)
_NUMBER = re.compile(r"(?<![\w.+\-\u2212])(\d+)(?!\w|\.\d)")
_NOT_AVAILABLE = re.compile(r"n\s*/?\s*a\.?", re.IGNORECASE)
_LETTER = re.compile(r"\(?\s*([A-D])\s*\)?(?:$|[\s.:)\]])")
_ANY_CASE_LETTER = re.compile(_LETTER.pattern, re.IGNORECASE)


def _code_points(text: str) -> np.ndarray:
    """The characters of ``text`` as an array of code points (lone surrogates included)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _closing_braces(codes: np.ndarray) -> np.ndarray:
    """For every position, the position of the ``}`` that closes the ``{`` there, else -1.

    Vectorised bracket matching: give each brace the nesting level it opens or closes (an opening
    brace the depth after it, a closing one the depth before it); a ``{`` is closed by the next
    brace of the same level, if that one is a ``}``.
    """
    braces = np.flatnonzero((codes == _OPEN) | (codes == _CLOSE))
    opens = codes[braces] == _OPEN
    depth_after = np.cumsum(np.where(opens, 1, -1))
    level = np.where(opens, depth_after, depth_after + 1)
    order = np.argsort(level, kind="stable")  # by level, then by position
    first, second = order[:-1], order[1:]
    matched = opens[first] & ~opens[second] & (level[first] == level[second])
    closing = np.full(len(codes), -1)
    closing[braces[first[matched]]] = braces[second[matched]]
    return closing


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (nested braces allowed), stripped."""
    start = text.rfind(_BOXED)
    if start == -1:
        return None
    begin = start + len(_BOXED)
    close = text.find("}", begin)
    if close != -1 and text.find("{", begin, close) == -1:  # the common case: no nesting
        return text[begin:close].strip()
    before_each_box = text.split(_BOXED)[:-1]
    lengths = np.fromiter(map(len, before_each_box), dtype=np.int64, count=len(before_each_box))
    openers = np.cumsum(lengths + len(_BOXED)) - 1  # where each box's "{" is
    closers = _closing_braces(_code_points(text))[openers]
    closed = np.flatnonzero(closers != -1)
    if not closed.size:
        return None
    last = closed[-1]
    return text[openers[last] + 1: closers[last]].strip()


def text_before_last_boxed(text: str) -> str:
    """Everything before the last ``\\boxed{`` (the reasoning), stripped."""
    start = text.rfind(_BOXED)
    return (text if start == -1 else text[:start]).strip()


def tagged(text: str, tag: str) -> str | None:
    """The content of the first ``<tag>...</tag>`` (the tag in any case), stripped."""
    opener = re.search(f"<{re.escape(tag)}>", text, re.IGNORECASE)
    if opener is None:  # a first opener with no closer after it means none closes: no match
        return None
    closer = re.compile(f"</{re.escape(tag)}>", re.IGNORECASE).search(text, opener.end())
    return None if closer is None else text[opener.end(): closer.start()].strip()


@dataclass(frozen=True)
class Vote:
    """A parsed vote: ``player`` for a vote, ``abstain`` for N/A; neither means invalid."""

    player: int | None = None
    abstain: bool = False

    @property
    def valid(self) -> bool:
        return self.player is not None or self.abstain


def parse_vote(text: str, num_players: int, voter: int | None = None) -> Vote:
    """Read a vote for a player number, or N/A.

    The answer region is the last ``\\boxed{}``, else the first ``<answer>...</answer>``, else the
    text after ``<answer>``. In it, "N/A" (or "NA") abstains; otherwise the first standalone whole
    number is the vote: digits with no sign, letter or decimal point attached ("3", "Player 3",
    "3." count; "-1", "+2", "1.5", "2nd" and "P3" are no player's number and are skipped). No such
    number, a number outside 1..num_players, or the voter's own number: an invalid vote.
    """
    region = last_boxed(text)
    if region is None:
        region = tagged(text, "answer")
    if region is None and "<answer>" in text:
        region = text.split("<answer>", 1)[1].strip()
    if region is None:
        return Vote()
    if _NOT_AVAILABLE.fullmatch(region.strip()):
        return Vote(abstain=True)
    number = _NUMBER.search(region)
    if number is None or len(number.group(1)) > 9:  # no player has such a number; int() refuses
        return Vote()                                # more than 4300 digits
    player = int(number.group(1))
    if not 1 <= player <= num_players or player == voter:
        return Vote()
    return Vote(player=player)


def parse_letter(text: str, lowercase: bool = False) -> str | None:
    """An option letter A-D at the start of ``text``: "B", "(B)", "B)", "B. 30 degrees"; with
    ``lowercase`` also a-d, read as upper case ("b", "(b)"; also the article of "a cube")."""
    match = (_ANY_CASE_LETTER if lowercase else _LETTER).match(text.strip())
    return match.group(1).upper() if match else None


def parse_choice(text: str, lowercase: bool = False) -> str | None:
    """The option letter of a solver's answer: from the last ``\\boxed{}``, else ``<answer>``
    (``lowercase``: as :func:`parse_letter`)."""
    region = last_boxed(text)
    if region is None:
        region = tagged(text, "answer")
    return None if region is None else parse_letter(region, lowercase)
