"""Reading answers out of free model text: ``\\boxed{...}``, ``<tag>...</tag>``, votes and letters.

Every function here accepts any string and returns ``None`` rather than raising when it finds
nothing usable: garbage text is a game's invalid move, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOXED = "\\boxed{"
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
_NOT_AVAILABLE = re.compile(r"n\s*/?\s*a\.?", re.IGNORECASE)
_LETTER = re.compile(r"\(?\s*([A-D])\s*\)?(?:$|[\s.:)\]])")


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (nested braces allowed), stripped."""
    # a \boxed{ that never closes leaves every earlier one to close before it or never: each box
    # is scanned only up to the next one, so text full of unclosed boxes takes linear time
    start, end = text.rfind(_BOXED), len(text)
    while start != -1:
        begin = start + len(_BOXED)
        close, nested = text.find("}", begin, end), text.find("{", begin, end)
        if close != -1 and (nested == -1 or nested > close):  # the common case: no nesting
            return text[begin:close].strip()
        depth, i = 1, begin
        while i < end and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(_BOXED): i - 1].strip()
        start, end = text.rfind(_BOXED, 0, start), start
    return None


def text_before_last_boxed(text: str) -> str:
    """Everything before the last ``\\boxed{`` (the reasoning), stripped."""
    start = text.rfind(_BOXED)
    return (text if start == -1 else text[:start]).strip()


def tagged(text: str, tag: str) -> str | None:
    """The content of the first ``<tag>...</tag>``, stripped."""
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL | re.IGNORECASE)
    return match.group(1).strip() if match else None


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
    text after ``<answer>``. In it, "N/A" (or "NA") abstains; otherwise the first standalone number
    is the vote. A number outside 1..num_players, or the voter's own number, is invalid.
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


def parse_letter(text: str) -> str | None:
    """An option letter A-D at the start of ``text``: "B", "(B)", "B)", "B. 30 degrees"."""
    match = _LETTER.match(text.strip())
    return match.group(1) if match else None


def parse_choice(text: str) -> str | None:
    """The option letter of a solver's answer: from the last ``\\boxed{}``, else ``<answer>``."""
    region = last_boxed(text)
    if region is None:
        region = tagged(text, "answer")
    return None if region is None else parse_letter(region)
