"""Conformance tests for any game, with no model: run them on your own game before you train it.

>>> from envs.testing import check_game
>>> print(check_game("my_games:count"))    # a registered name, an id "module:name" or a Game class

:func:`check_game` plays many short games of the environment with seeded random text and with
garbage, checks every turn of them, and returns a :class:`Report` (what ran, how much). If any rule
is broken it raises one :class:`ConformanceError` (an ``AssertionError``) listing every broken rule,
each with the game, seed, seat, turn and action where it broke. Keywords it does not know go to
``envs.make`` (the game's options and the environment's, e.g. ``num_players=5``). In your own test
file, one line makes it a pytest test::

    test_count_conforms = conformance_test("my_games:count")

**What it plays.** For each of ``seeds``, a game of random text (random characters, often with a
``\\boxed{}`` answer: a number, a letter, N/A, words), or of ``player(observation) -> action`` if
you pass one (a game whose later phases need a well-formed move, like the duel's question, needs
one to be reached). Then, for every kind of garbage in :data:`GARBAGE`, a game where every seat
plays that garbage, and, for each seat that game never reached, a game where only that seat does
and the others play as above. The report's ``untested`` lists seats that never got some garbage.

**What it checks.**

* PettingZoo's own ``api_test`` and ``seed_test`` (their warnings that text observations are not
  NumPy arrays and the spaces not ``Box`` or ``Discrete`` are expected and silenced).
* Determinism: a second environment made with the same seed and fed the same actions shows the
  same agents, observations, rewards, terminations, truncations and infos at every turn, and the
  same transcript (checked for games that broke no other rule: a NaN is never equal to itself).
* The turn protocol: the agent to act is the seat of the first pending turn, each step answers
  exactly that turn of that seat, no turn is answered twice or without being opened (a game may
  close a pending turn unanswered), the game ends within ``max_turns`` turns, then every agent is
  terminated, the seats' returns name every seat, and the finished agents step out with ``None``
  (the AEC loop ends).
* Garbage never raises; content-free garbage (not a string, too long, NUL bytes, lone surrogates,
  empty, whitespace: :data:`MUST_BE_INVALID`) is an invalid move. The rest of :data:`GARBAGE` is
  text a game may accept (a spy clue can be any text), so only the other rules hold for it. The
  suite cannot know a game's penalty: a game states it as one of its invariants (below).
* Rewards, returns and statistics are finite numbers; observations lie in the declared spaces;
  no turn takes longer than ``turn_seconds`` (a parser that is quadratic in the text stalls
  training).
* Rendering: the transcript and the HTML replay of every finished game (and the picture of the
  seeds' games) are produced without error.
* The game's own invariants: :meth:`games.core.Game.check_invariants`, called after the reset and
  after every move (the spy game's zero-sum clue rewards and penalties, the duel's reward bounds).

Passing shows the game is safe to train on; it does not show the game is fun or its rewards right:
write rules tests for those (see ``tests/test_spy.py``).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

import numpy as np
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import api_test, seed_test

from envs.game_env import GameEnv
from envs.registry import ENV_OPTIONS, make
from envs.render import render_replay, render_replay_html, render_transcript
from envs.spaces import SAMPLE_CHARSET
from games.checks import check_int, check_number
from games.core import Game, Turn

#: The rules checked, as violations name them.
RULES = ("pettingzoo api_test", "pettingzoo seed_test", "determinism", "turn order", "game ends",
         "turns closed", "terminated at the end", "seat returns", "no exception",
         "garbage is invalid", "finite rewards", "observation in space", "turn time", "rendering",
         "game invariant")
#: Cycles of PettingZoo's ``api_test`` and ``seed_test``.
PETTINGZOO_CYCLES = 100
#: Garbage that must be an invalid move in any game: nothing a seat could mean by it.
MUST_BE_INVALID = ("none", "integer", "float-nan", "bytes", "dict", "list", "over-limit", "nul",
                   "surrogate", "empty", "whitespace")


def garbage(max_action_chars: int) -> dict[str, Any]:
    """Every kind of garbage action by name, for an environment taking ``max_action_chars``.

    The ``-at-limit`` kinds fill the whole size limit with what a model stuck repeating itself
    writes (openers of boxes, tags and options, braces, blank lines): a parser that rescans the
    text from each opener takes seconds on them and breaks the ``turn time`` rule.
    """
    answer = "\\boxed{1}"

    def filled(unit: str, prefix: str = "", suffix: str = "") -> str:
        """``prefix``, ``unit`` repeated, ``suffix``: ``max_action_chars`` characters in all."""
        repeats = max(0, max_action_chars - len(prefix) - len(suffix))
        return (prefix + (unit * repeats)[:repeats] + suffix)[:max_action_chars]

    question_end = "y</question><answer>?</answer>"  # no option letter: no answer either
    return {
        "none": None, "integer": 7, "float-nan": float("nan"), "bytes": answer.encode(),
        "dict": {"text": answer}, "list": [answer],
        "over-limit": answer + "x" * max_action_chars, "nul": answer + "\x00",
        "surrogate": answer + "\ud800", "empty": "", "whitespace": " \t\n\r\x0b\x0c\xa0\u3000 ",
        "at-limit": ("x" * max_action_chars + answer)[-max_action_chars:],
        "unclosed-boxes-at-limit": filled("\\boxed{"),
        "nested-boxes-at-limit": filled("\\boxed{{}"),
        "open-braces-at-limit": filled("{", prefix="\\boxed{"),
        "unclosed-tags-at-limit": filled("<answer><question><description>"),
        "blank-lines-question-at-limit": filled("\n", "<question>x", question_end),
        "option-markers-question-at-limit": filled("A) ", "<question>x\n", question_end),
        "control-characters": "\x01\x07\x1b[2J\x1b]0;title\x07\x7f\x9b6n\r\b" + answer,
        "unicode": "\u202e\ufeff🙂你好e\u0301Ωж\U0010fffd" + answer,
        "empty-box": "\\boxed{}", "blank-box": "\\boxed{ \n }", "unclosed-box": "\\boxed{",
        "broken-boxes": "}\\boxed{}{ \\boxed{\\boxed{\\boxed{",
        "nonsense-box": "\\boxed{%$#@! ??}", "negative-box": "\\boxed{-1}",
        "huge-number-box": "\\boxed{" + "9" * 5000 + "}",
        "markup": "<answer></answer><question>?</question><script>alert(1)</script>",
    }


#: The kinds of garbage, by name (see :func:`garbage`).
GARBAGE = tuple(garbage(16))

Player = Callable[[dict[str, Any]], Any]
_FAILED = object()  # what a guarded call gives when it raised


@dataclass(frozen=True)
class Violation:
    """One broken rule: which rule, where (game, seed, turn, seat, action) and what happened."""

    rule: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.detail}"


@dataclass
class Report:
    """What :func:`check_game` ran: games and turns played (every rule of :data:`RULES`
    checked), garbage turns per seat, and the seats some garbage never reached."""

    game: str
    seeds: tuple[int, ...]
    games: int = 0
    turns: int = 0
    garbage_turns: dict[str, int] = field(default_factory=dict)
    untested: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        garbage_turns = ", ".join(f"{seat} {n}" for seat, n in self.garbage_turns.items())
        lines = [f"{self.game}: conformant ({self.games} games, {self.turns} turns, seeds "
                 f"{list(self.seeds)}, {self.seconds:.1f} s)",
                 f"  rules: {', '.join(RULES)}",
                 f"  garbage turns by seat: {garbage_turns or 'none'}"]
        lines += [f"  untested: {entry}" for entry in self.untested]
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """Every rule a game broke, grouped by rule (the first examples of each)."""

    EXAMPLES = 3

    def __init__(self, game: str, violations: list[Violation], report: Report):
        self.violations, self.report = violations, report
        by_rule: dict[str, list[Violation]] = defaultdict(list)
        for violation in violations:
            by_rule[violation.rule].append(violation)
        lines = [f"{game} breaks {len(by_rule)} conformance rule(s) ({len(violations)} "
                 f"violations):"]
        for rule, found in by_rule.items():
            lines += [f"  - {v}" for v in found[: self.EXAMPLES]]
            if len(found) > self.EXAMPLES:
                lines.append(f"    ... and {len(found) - self.EXAMPLES} more [{rule}]")
        super().__init__("\n".join(lines))


def check_game(game: str | type[Game], *, seeds: Sequence[int] = (0, 1), max_turns: int = 1000,
               player: Player | None = None, turn_seconds: float = 2.0,
               **options: Any) -> Report:
    """Check that ``game`` conforms (see the module docstring for the rules).

    ``game`` is an environment id (``"spy"``, ``"my_games:count"``) or a Game subclass; ``seeds``
    seed the random games (and, in turn, the garbage games); a game not over after ``max_turns``
    turns breaks the rules, and so does a turn slower than ``turn_seconds``; ``player`` plays the
    turns that get no garbage (default: seeded random text); ``options`` go to ``envs.make``.
    Returns the :class:`Report`; raises :class:`ConformanceError` listing every broken rule.
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    check_int("max_turns", max_turns, 1)
    check_number("turn_seconds", turn_seconds, minimum=0)
    name, make_env = _factory(game, options)
    suite = _Suite(name, make_env, tuple(seeds), max_turns, player, turn_seconds)
    start = time.perf_counter()
    suite.run()
    suite.report.seconds = time.perf_counter() - start
    if suite.violations:
        raise ConformanceError(name, suite.violations, suite.report)
    return suite.report


def conformance_test(game: str | type[Game], **check_options: Any) -> Callable[[], None]:
    """A pytest test running ``check_game(game, **check_options)``. Give it a name starting
    with ``test_`` in your test module: ``test_count_conforms = conformance_test("count")``."""
    def test_conformance() -> None:
        check_game(game, **check_options)

    test_conformance.__doc__ = f"{game} passes envs.testing.check_game"
    return test_conformance


def _random_text(rng: np.random.Generator) -> str:
    """Random characters, more often than not followed by an answer-shaped ``\\boxed{}``."""
    noise = "".join(rng.choice(_CHARSET, size=int(rng.integers(0, 80))))
    return f"{noise} \\boxed{{{rng.choice(_ANSWERS)}}}" if rng.random() < 0.6 else noise


_CHARSET = sorted(SAMPLE_CHARSET)
_ANSWERS = ("0", "1", "2", "3", "4", "5", "9", "A", "B", "C", "D", "N/A", "yes", "a red cube")
_PETTINGZOO_WARNINGS = ("Observation is not a NumPy array", "Observation space for each agent",
                        "Action space for each agent")


def _factory(game: str | type[Game], options: dict[str, Any]) -> tuple[str, Callable[[], GameEnv]]:
    """The game's name and a function making fresh environments of it (options checked now)."""
    if isinstance(game, str):
        make(game, **options)
        return game, lambda: make(game, **options)
    if isinstance(game, type) and issubclass(game, Game):
        env_options = {key: options.pop(key) for key in ENV_OPTIONS if key in options}
        config = game.config_class(**options)
        return game.name, lambda: GameEnv(game, config, **env_options)
    raise TypeError(f"game must be an environment id or a Game subclass, got {game!r}")


def _show(action: Any) -> str:
    """An action as a short repr for messages."""
    text = repr(action)
    if len(text) <= 60:
        return text
    size = f" ({len(action)} chars)" if isinstance(action, str | bytes) else ""
    return f"{text[:45]}…{text[-10:]}{size}"


def _finite(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(value))


@dataclass
class _Played:
    """One game the suite played: the actions fed, and what the environment showed before each
    (agent, observation, rewards, terminations, truncations, infos) and at the end."""

    label: str
    seed: int
    env: GameEnv
    actions: list[Any] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    shown: list[tuple] = field(default_factory=list)
    action_of_turn: dict[int, Any] = field(default_factory=dict)
    garbage_seats: set[str] = field(default_factory=set)
    given_garbage: set[str] = field(default_factory=set)
    finished: bool = False
    clean: bool = True


class _Suite:
    """The checks of one :func:`check_game` call, collecting violations instead of stopping."""

    def __init__(self, name: str, make_env: Callable[[], GameEnv], seeds: tuple[int, ...],
                 max_turns: int, player: Player | None, turn_seconds: float):
        self.name, self.make_env, self.seeds = name, make_env, seeds
        self.max_turns, self.player, self.turn_seconds = max_turns, player, turn_seconds
        self.violations: list[Violation] = []
        self.report = Report(name, seeds)

    def fail(self, rule: str, where: str, detail: str) -> None:
        self.violations.append(Violation(rule, where, detail))

    def run(self) -> None:
        self.run_pettingzoo_tests()
        for seed in self.seeds:
            played = self.play(seed, "random play", self.base_policy(seed))
            if played.finished:
                self.check_picture(played)
            if played.finished and played.clean:
                self.check_replay_matches(played)
        self.play_garbage()

    # ----- PettingZoo's own tests -----

    def run_pettingzoo_tests(self) -> None:
        tests = {"pettingzoo api_test": lambda: api_test(self.make_env(), PETTINGZOO_CYCLES),
                 "pettingzoo seed_test": lambda: seed_test(self.make_env, PETTINGZOO_CYCLES)}
        for rule, test in tests.items():
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                for message in _PETTINGZOO_WARNINGS:
                    warnings.filterwarnings("ignore", message=message)
                try:
                    test()
                except Exception as error:  # every failure is reported
                    self.fail(rule, self.name, f"{type(error).__name__}: {error}")

    # ----- playing -----

    def base_policy(self, seed: int) -> Callable[[Turn, dict[str, Any]], Any]:
        """The moves played when the suite is not playing garbage."""
        if self.player is not None:
            return lambda turn, observation: self.player(observation)
        rng = np.random.default_rng(seed)
        return lambda turn, observation: _random_text(rng)

    def play(self, seed: int, label: str, choose: Callable[[Turn, dict[str, Any]], Any],
             garbage_seats: frozenset[str] = frozenset(), must_be_invalid: bool = False) -> _Played:
        """Play one game to its end (or its first exception, or ``max_turns``), checking every
        turn; then check the end, the way out of the AEC loop and the renderings.
        ``garbage_seats`` play garbage, which must be invalid moves if ``must_be_invalid``."""
        played = _Played(label, seed, self.make_env(), garbage_seats=set(garbage_seats))
        where = f"{self.name}, {label}, seed {seed}"
        errors_before = len(self.violations)
        if self.guarded(where, "reset", lambda: played.env.reset(seed=seed)) is _FAILED:
            played.clean = False
            return played
        self.check_invariants(played.env.game, where + ", after the reset")
        opened = {turn.index for turn in played.env.game.pending()}
        while not played.env.game_over:
            if len(played.actions) == self.max_turns:
                self.fail("game ends", self.at_the_end(played), f"not over after max_turns="
                          f"{self.max_turns} turns; pending: "
                          f"{self.describe_pending(played.env.game)}")
                played.clean = False
                return played
            if not self.play_turn(played, choose, must_be_invalid):
                played.clean = False
                return played
            opened |= {turn.index for turn in played.env.game.pending()}
        played.finished = True
        self.report.games += 1
        where = self.at_the_end(played)
        self.check_end(played, opened, where)
        transcript = self.check_rendering(played.env.game, where)
        played.shown.append(self.snapshot(played.env, "", None) + (transcript,))
        self.step_out(played.env, where)
        played.clean = len(self.violations) == errors_before
        return played

    def play_turn(self, played: _Played, choose: Callable[[Turn, dict[str, Any]], Any],
                  must_be_invalid: bool) -> bool:
        """Play the next turn and check it; False if the environment raised."""
        env, game = played.env, played.env.game
        turn, agent = game.pending()[0], env.agent_selection
        where = (f"{self.name}, {played.label}, seed {played.seed}, turn {turn.index} (seat "
                 f"{turn.seat}, role {turn.role}, phase {turn.phase})")
        observation = self.guarded(where, "env.last()", lambda: env.last()[0])
        if observation is _FAILED:
            return False
        played.shown.append(self.snapshot(env, agent, observation))
        action = choose(turn, observation)
        played.actions.append(action)
        played.turns.append(turn)
        played.action_of_turn[turn.index] = action
        if turn.seat in played.garbage_seats:
            played.given_garbage.add(turn.seat)
            self.report.garbage_turns[turn.seat] = self.report.garbage_turns.get(turn.seat, 0) + 1
        where += f", action {_show(action)}"
        self.check_before_step(env, turn, agent, observation, where)
        moves_before, start = len(game.moves), time.perf_counter()
        if self.guarded(where, "step", lambda: env.step(action)) is _FAILED:
            return False
        elapsed = time.perf_counter() - start
        self.report.turns += 1
        if elapsed > self.turn_seconds:
            self.fail("turn time", where, f"the step took {elapsed:.1f} s (> turn_seconds="
                      f"{self.turn_seconds})")
        self.check_after_step(env, turn, agent, moves_before, where,
                              must_be_invalid and turn.seat in played.garbage_seats)
        return True

    def guarded(self, where: str, what: str, call: Callable[[], Any]) -> Any:
        """``call()``, or ``_FAILED`` once its exception is reported as a broken rule."""
        try:
            return call()
        except Exception as error:  # the rule is "never raise"
            self.fail("no exception", where, f"{what} raised {type(error).__name__}: {error}")
            return _FAILED

    @staticmethod
    def snapshot(env: GameEnv, agent: str, observation: Any) -> tuple:
        return (agent, observation, dict(env.rewards), dict(env.terminations),
                dict(env.truncations), {a: dict(info) for a, info in env.infos.items()})

    def at_the_end(self, played: _Played) -> str:
        where = f"{self.name}, {played.label}, seed {played.seed}, at the end"
        if not played.turns:
            return where
        last = played.turns[-1]
        return (f"{where} (last turn {last.index}, seat {last.seat}, action "
                f"{_show(played.actions[-1])})")

    @staticmethod
    def describe_pending(game: Game) -> str:
        return ", ".join(f"turn {t.index} ({t.seat}, {t.phase})" for t in game.pending()[:5])

    # ----- per-turn checks -----

    def check_before_step(self, env: GameEnv, turn: Turn, agent: str, observation: Any,
                          where: str) -> None:
        if agent != turn.seat:
            self.fail("turn order", where, f"the environment selected {agent!r} but the first "
                      f"pending turn is {turn.seat!r}'s")
        for other in env.agents:
            seen = (observation if other == agent else
                    self.guarded(where, f"observe({other!r})", lambda o=other: env.observe(o)))
            if seen is not _FAILED and not env.observation_space(other).contains(seen):
                self.fail("observation in space", where, f"{other}'s observation is not in its "
                          f"observation space: {_show(seen)}")

    def check_after_step(self, env: GameEnv, turn: Turn, agent: str, moves_before: int,
                         where: str, must_be_invalid: bool) -> None:
        game = env.game
        added = game.moves[moves_before:]
        if len(added) != 1:
            self.fail("turn order", where, f"answering one turn recorded {len(added)} moves")
        elif (added[0].turn.index, added[0].turn.seat) != (turn.index, agent):
            self.fail("turn order", where, f"the move recorded is turn {added[0].turn.index} of "
                      f"{added[0].turn.seat!r}, not the turn {agent!r} was asked")
        elif must_be_invalid and added[0].valid:
            self.fail("garbage is invalid", where, f"accepted as a valid move (shown: "
                      f"{_show(added[0].shown)})")
        bad = {a: r for a, r in env.rewards.items() if not _finite(r)}
        if bad:
            self.fail("finite rewards", where, f"the environment reports rewards {bad}")
        self.check_invariants(game, where)

    def check_invariants(self, game: Game, where: str) -> None:
        try:
            game.check_invariants()
        except AssertionError as error:
            self.fail("game invariant", where, str(error) or "check_invariants failed")
        except Exception as error:  # the rule is "never raise"
            self.fail("no exception", where, f"check_invariants raised {type(error).__name__}: "
                      f"{error}")

    # ----- the end of a game -----

    def check_end(self, played: _Played, opened: set[int], where: str) -> None:
        env, game = played.env, played.env.game
        answered = [move.turn.index for move in game.moves]
        if len(set(answered)) != len(answered) or not set(answered) <= opened:
            self.fail("turns closed", where, f"turns answered {answered} but opened "
                      f"{sorted(opened)}: a turn answered twice or never opened")
        alive = [a for a in env.agents if not env.terminations[a] and not env.truncations[a]]
        if alive:
            self.fail("terminated at the end", where, f"the game is over but {alive} are not "
                      f"terminated")
        for move in game.moves:
            if not _finite(move.reward):
                action = played.action_of_turn.get(move.turn.index)
                self.fail("finite rewards", f"{self.name}, {played.label}, seed {played.seed}, "
                          f"turn {move.turn.index} (seat {move.turn.seat}, phase "
                          f"{move.turn.phase}), action {_show(action)}",
                          f"the move's reward is {move.reward!r}")
        self.check_returns(game, where)

    def check_returns(self, game: Game, where: str) -> None:
        returns = self.guarded(where, "seat_rewards()", game.seat_rewards)
        stats = self.guarded(where, "stats()", game.stats)
        if returns is _FAILED or stats is _FAILED:
            return
        seats = game.seats(game.config)
        if set(returns) != set(seats):
            self.fail("seat returns", where, f"returns are given for {sorted(returns)}, the "
                      f"seats are {sorted(seats)}")
        for kind, values in (("return", returns), ("statistic", stats)):
            bad = {key: value for key, value in values.items() if not _finite(value)}
            if bad:
                self.fail("finite rewards", where, f"non-finite {kind}s {bad}")

    def step_out(self, env: GameEnv, where: str) -> None:
        """Finished agents step out with ``None`` until none is left, as in the AEC loop."""
        for _ in range(2 * len(env.possible_agents)):
            if not env.agents:
                return
            if self.guarded(where, "stepping a finished agent with None",
                            lambda: env.step(None)) is _FAILED:
                return
        self.fail("terminated at the end", where, f"agents {env.agents} remain after stepping "
                  f"every finished agent out")

    def check_rendering(self, game: Game, where: str) -> str | None:
        """Render the transcript and the HTML replay; the transcript, if there is one."""
        outputs = []
        for render in (render_transcript, render_replay_html):
            try:
                outputs.append(render(game))
            except Exception as error:  # every failure is reported
                self.fail("rendering", where, f"{render.__name__} raised "
                          f"{type(error).__name__}: {error}")
                return None
            if not (isinstance(outputs[-1], str) and outputs[-1].strip()):
                self.fail("rendering", where, f"{render.__name__} gave {_show(outputs[-1])}")
        return outputs[0]

    def check_picture(self, played: _Played) -> None:
        try:
            render_replay(played.env.game)
        except Exception as error:  # every failure is reported
            self.fail("rendering", f"{self.name}, {played.label}, seed {played.seed}",
                      f"render_replay raised {type(error).__name__}: {error}")

    # ----- determinism -----

    def check_replay_matches(self, first: _Played) -> None:
        """A fresh environment, the same seed and the same actions: the same game."""
        actions = iter(first.actions)  # None once they run out: the games differ in length
        second = self.play(first.seed, "replay of the random play",
                           lambda *_: next(actions, None))
        for index, (a, b) in enumerate(zip_longest(first.shown, second.shown)):
            if a is None or b is None or not data_equivalence(a, b, exact=True):
                self.fail("determinism", self.where_in(first, index), self.difference(a, b))
                return

    def where_in(self, played: _Played, index: int) -> str:
        where = f"{self.name}, seed {played.seed}"
        if index >= len(played.actions):
            return f"{where}, at the end"
        turn = played.turns[index]
        return (f"{where}, turn {turn.index} (seat {turn.seat}, phase {turn.phase}), action "
                f"{_show(played.actions[index])}")

    @staticmethod
    def difference(a: tuple | None, b: tuple | None) -> str:
        if a is None or b is None:
            return "the same seed and actions gave games of different lengths"
        names = ("agent to act", "observation", "rewards", "terminations", "truncations",
                 "infos", "transcript")
        differs = [name for name, x, y in zip(names, a, b, strict=False)
                   if not data_equivalence(x, y, exact=True)]
        return f"the same seed and actions gave a different {', '.join(differs)}"

    # ----- garbage -----

    def play_garbage(self) -> None:
        """Every kind of garbage in every seat, then in each seat that game did not reach."""
        seats = list(self.make_env().possible_agents)
        reached: dict[str, set[str]] = {seat: set() for seat in seats}
        kinds = garbage(self.make_env().max_action_chars)
        for number, (kind, action) in enumerate(kinds.items()):
            seed = self.seeds[number % len(self.seeds)]
            for targets in [seats, *([seat] for seat in seats)]:
                if len(targets) == 1 and kind in reached[targets[0]]:
                    continue
                label = f"garbage {kind!r} in {'every seat' if targets is seats else targets[0]}"
                played = self.play(seed, label, self.garbage_policy(seed, action, targets),
                                   frozenset(targets), kind in MUST_BE_INVALID)
                for seat in played.given_garbage:
                    reached[seat].add(kind)
        for seat, kinds_reached in reached.items():
            missing = [kind for kind in kinds if kind not in kinds_reached]
            if missing:
                which = "any garbage" if len(missing) == len(kinds) else f"garbage {missing}"
                self.report.untested.append(f"{seat} never got {which}: no game reached its "
                                            f"turns (pass player= to reach them)")

    def garbage_policy(self, seed: int, action: Any,
                       seats: list[str]) -> Callable[[Turn, dict[str, Any]], Any]:
        """``action`` in ``seats``, the base policy in the others."""
        policy = self.base_policy(seed)
        return lambda turn, observation: (action if turn.seat in seats
                                          else policy(turn, observation))
