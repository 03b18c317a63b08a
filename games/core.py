"""What every game is made of: turns a seat is asked to play, the moves it made, and the rules' API.

A game is pure rules. It knows nothing of PettingZoo and nothing of models: it hands out
:class:`Turn` objects (a prompt, the images shown and a structured ``context``), takes back text,
and, once finished, puts a reward on every :class:`Move`. Environments drive games through
:meth:`Game.pending` and :meth:`Game.play`; trainers read the finished moves.
"""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from games.images import ImageSource


@dataclass(frozen=True)
class Turn:
    """One request to one seat: answer ``prompt`` about ``images``.

    Several turns may be pending at once (a simultaneous phase, or several samples of one seat);
    they may be answered in any order. ``context`` is the same information in structured form
    (JSON-ready) for scripted agents; models read only ``prompt`` and ``images``.
    """

    index: int
    seat: str
    role: str
    phase: str
    round: int
    prompt: str
    images: tuple[np.ndarray, ...]
    context: dict[str, Any]
    game_id: str

    def info(self) -> dict[str, Any]:
        """The turn's labels, as environments report them and trainers group by them."""
        return {
            "game_id": self.game_id,
            "turn": self.index,
            "seat": self.seat,
            "role": self.role,
            "phase": self.phase,
            "round": self.round,
        }


@dataclass
class Move:
    """A turn and what the seat answered. ``value`` is the parsed answer (a clue, a player number,
    a letter; None if invalid or abstaining), ``shown`` what it amounted to in words ("vote: 3",
    "N/A", "invalid vote", the clue itself); ``reward`` is final once the game is over."""

    turn: Turn
    text: str
    valid: bool
    shown: str
    value: Any = None
    reward: float = 0.0


class Game(ABC):
    """Base class of all games. Subclasses set the class attributes and implement the rules.

    A game is built per episode from its config, an image source and a random generator; all of its
    randomness comes from that generator, so the same seed replays the same game.
    """

    #: Registry name and the config dataclass the game is built from.
    name: ClassVar[str]
    config_class: ClassVar[type]
    #: What the game draws from its image source: "pairs" or "images".
    needs: ClassVar[str]

    def __init__(self, config: Any, source: ImageSource, rng: np.random.Generator, game_id: str):
        self.config = config
        self.rng = rng
        self.game_id = game_id
        self.moves: list[Move] = []
        self._pending: dict[int, Turn] = {}
        self._next_index = 0

    # ----- the API environments use -----

    @classmethod
    @abstractmethod
    def seats(cls, config: Any) -> tuple[str, ...]:
        """All seats of a game built from ``config``, in seat order."""

    @property
    @abstractmethod
    def roles(self) -> dict[str, str]:
        """The role of every seat in this episode."""

    @property
    @abstractmethod
    def seat_images(self) -> dict[str, tuple[np.ndarray, ...]]:
        """The images each seat was shown (for replays)."""

    def seat_rewards(self) -> dict[str, float]:
        """Each seat's return for the episode, valid once :attr:`done`: by default the sum of
        its moves' rewards."""
        returns = dict.fromkeys(self.seats(self.config), 0.0)
        for move in self.moves:
            returns[move.turn.seat] += move.reward
        return returns

    def stats(self) -> dict[str, float]:
        """Per-game statistics (vote accuracy, confidence, ...), valid once :attr:`done`."""
        return {}

    def check_invariants(self) -> None:  # noqa: B027 - an optional hook; by default no rules
        """Raise ``AssertionError`` (a plain ``assert`` will do) naming the rule if the game's
        state breaks one of its own invariants (zero-sum rewards, a penalty, reward bounds).
        ``envs.testing.check_game`` calls it after the reset and after every move."""

    @property
    def done(self) -> bool:
        """True once no turn is pending: the game is over and rewards are final."""
        return not self._pending

    def pending(self) -> list[Turn]:
        """The turns that may be played now, in the order environments present them."""
        return list(self._pending.values())

    def play(self, turn_index: int, text: str | None) -> Move:
        """Answer a pending turn. ``text=None`` means the action was not usable text (binary,
        too long, not a string): the move is invalid and gets the game's penalty."""
        turn = self._pending.pop(turn_index, None)
        if turn is None:
            raise ValueError(f"turn {turn_index} is not pending in game {self.game_id}")
        move = self._judge(turn, text)
        self.moves.append(move)
        if not self._pending:
            self._advance()
        return move

    # ----- what subclasses implement -----

    @abstractmethod
    def _judge(self, turn: Turn, text: str | None) -> Move:
        """Parse ``text`` as an answer to ``turn`` and record its effect on the game."""

    def _advance(self) -> None:  # noqa: B027 - an optional hook; by default the game just ends
        """Called when every pending turn is answered: open the next phase's turns, or, if the
        game is over, put the final rewards on the moves. By default the game ends."""

    # ----- helpers -----

    def _ask(self, seat: str, role: str, phase: str, round: int, prompt: str,
             images: tuple[np.ndarray, ...], context: dict[str, Any]) -> Turn:
        turn = Turn(self._next_index, seat, role, phase, round, prompt, images, context,
                    self.game_id)
        self._pending[turn.index] = turn
        self._next_index += 1
        return turn

    def moves_of(self, seat: str | None = None, phase: str | None = None) -> list[Move]:
        """The moves made so far, optionally only those of one seat and/or one phase."""
        return [m for m in self.moves if (seat is None or m.turn.seat == seat)
                and (phase is None or m.turn.phase == phase)]


@dataclass(frozen=True)
class PromptTemplates:
    """Prompt templates of a game: ``str.format`` strings keyed by name, each allowed a known set
    of fields. Users override any of them from their config."""

    templates: dict[str, str]
    fields: dict[str, frozenset[str]] = field(repr=False)

    def with_overrides(self, overrides: dict[str, str] | None) -> PromptTemplates:
        """A copy with some templates replaced; unknown names or fields raise ``ValueError``."""
        merged = dict(self.templates)
        for name, text in (overrides or {}).items():
            if name not in self.fields:
                raise ValueError(f"unknown prompt {name!r}; known prompts: {sorted(self.fields)}")
            if not isinstance(text, str):
                raise ValueError(f"prompt {name!r} must be a string, got {type(text).__name__}")
            merged[name] = text
        checked = PromptTemplates(merged, self.fields)
        checked.validate()
        return checked

    def validate(self) -> None:
        for name, text in self.templates.items():
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as error:
                raise ValueError(f"prompt {name!r} is not a valid format string: {error}") from None
            unknown = used - self.fields[name]
            if unknown:
                raise ValueError(f"prompt {name!r} uses unknown fields {sorted(unknown)}; "
                                 f"it may use {sorted(self.fields[name])}")

    def render(self, name: str, **values: Any) -> str:
        return self.templates[name].format(**values)
