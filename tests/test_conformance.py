"""The conformance suite (envs.testing): the built-in games and the README's count game pass it,
and it catches each kind of broken game with a message naming the seat, turn and action."""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, field

import pytest

import envs
import envs.registry
from envs.testing import GARBAGE, ConformanceError, check_game
from games.core import Game, Move, Turn
from games.parsing import last_boxed
from tests.test_qa_duel import QUESTION
from tests.test_readme import readme_block

SPY_VARIANTS = {
    "default": {},
    "5-players-observer": {"num_players": 5, "decision": "observer", "observer_samples": 3},
    "5-players-blank-charts-shaped": {"num_players": 5, "spy_image": "blank",
                                      "images": {"source": "charts"}, "decision_reward": "shaped"},
}


@pytest.mark.parametrize("options", SPY_VARIANTS.values(), ids=SPY_VARIANTS.keys())
def test_spy_conforms_with_garbage_in_every_seat(options):
    report = check_game("spy", **options)
    assert set(report.garbage_turns) == set(envs.make("spy", **options).possible_agents)
    assert not report.untested


def duel_player(observation: dict) -> str:
    return QUESTION if observation["phase"] == "question" else "\\boxed{B}"


def test_duel_conforms_and_a_player_reaches_the_solver():
    report = check_game("qa_duel", num_answers=3, player=duel_player)
    assert set(report.garbage_turns) == {"questioner_1", "solver_1"} and not report.untested
    with_student = check_game("qa_duel", num_answers=3, student_answers=2, player=duel_player)
    assert set(with_student.garbage_turns) == {"questioner_1", "solver_1", "student_1"}
    assert not with_student.untested
    unreached = check_game("qa_duel", num_answers=3, seeds=(0,))  # random text: no question
    assert unreached.untested == [
        "solver_1 never got any garbage: no game reached its turns (pass player= to reach them)"]


def test_readme_count_game_conforms(tmp_path, monkeypatch):
    (tmp_path / "my_games.py").write_text(readme_block("file: my_games.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        report = check_game("my_games:count")
    finally:  # 'count' stays with this test
        sys.modules.pop("my_games", None)
        envs.ENVIRONMENTS.unregister("count")
    assert report.garbage_turns == {"player_1": len(GARBAGE)} and not report.untested


# ----- broken games: each is caught, and the message says where -----

@dataclass
class GuessConfig:
    images: dict = field(default_factory=lambda: {"source": "clevr"})


class GuessGame(Game):
    """Two seats guess a number at the same time; a guess of 3 earns 1. Conformant."""

    name, config_class, needs = "guess", GuessConfig, "images"

    def __init__(self, config, source, rng, game_id):
        super().__init__(config, source, rng, game_id)
        self.image = source.sample_image(rng).image
        for seat in self.seats(config):
            self._ask(seat, "guesser", "guess", 0, self.prompt(), (self.image,), {})

    def prompt(self) -> str:
        return "Guess a number in \\boxed{}."

    @classmethod
    def seats(cls, config):
        return ("player_1", "player_2")

    @property
    def roles(self):
        return dict.fromkeys(self.seats(self.config), "guesser")

    @property
    def seat_images(self):
        return dict.fromkeys(self.seats(self.config), (self.image,))

    def _judge(self, turn: Turn, text: str | None) -> Move:
        guess = last_boxed(text or "")
        return Move(turn, text or "", valid=bool(guess), shown=f"guess {guess}", value=guess,
                    reward=float(guess == "3"))


class RaisesOnGarbage(GuessGame):
    def _judge(self, turn, text):
        move = super()._judge(turn, text)
        move.value = int(move.value)  # no guard: None or "N/A" raise
        return move


class NeverEnds(GuessGame):
    def _advance(self):
        self._ask("player_1", "guesser", "guess", len(self.moves), self.prompt(), (self.image,), {})


class NaNRewards(GuessGame):
    def _judge(self, turn, text):
        move = super()._judge(turn, text)
        move.reward = float("nan")
        return move


class Nondeterministic(GuessGame):
    def prompt(self):
        return f"Guess a number below {random.randint(4, 1000)} in \\boxed{{}}."  # not self.rng


class AcceptsGarbage(GuessGame):
    def _judge(self, turn, text):
        move = super()._judge(turn, text)
        move.valid = True
        return move


class ForgetsItsPenalty(GuessGame):
    def check_invariants(self):
        for move in self.moves:
            assert move.valid or move.reward == -1.0, (
                f"turn {move.turn.index}: an invalid guess is rewarded {move.reward}, not -1")


class AnswersTheOtherSeat(GuessGame):
    def _judge(self, turn, text):
        other = next((t for t in self.pending() if t.seat != turn.seat), turn)
        return super()._judge(other, text)


BROKEN = [
    (RaisesOnGarbage, "no exception",
     r"turn 0 \(seat player_1, role guesser, phase guess\), action None: step raised TypeError"),
    (NeverEnds, "game ends", r"not over after max_turns=30 turns; pending: turn 30 \(player_1"),
    (NaNRewards, "finite rewards", r"turn 0 \(seat player_1, phase guess\), action .*: "
                                   r"the move's reward is nan"),
    (Nondeterministic, "determinism", r"seed 0, turn 0 \(seat player_1, phase guess\), "
                                      r"action .*: the same seed and actions gave a different "
                                      r"observation"),
    (AcceptsGarbage, "garbage is invalid", r"turn 1 \(seat player_2, .*\), action None: "
                                           r"accepted as a valid move"),
    (ForgetsItsPenalty, "game invariant", r"action 7: turn 0: an invalid guess is rewarded 0.0"),
    (AnswersTheOtherSeat, "turn order", r"turn 0 \(seat player_1, .*the move recorded is turn "
                                        r"1 of 'player_2'"),
]


@pytest.mark.parametrize(("game", "rule", "where"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_a_broken_game_is_caught_where_it_breaks(game, rule, where, solid_source):
    with pytest.raises(ConformanceError) as caught:
        check_game(game, seeds=(0,), max_turns=30, source=solid_source)
    broken = [v for v in caught.value.violations if v.rule == rule]
    assert any(v.where.startswith("guess, ") for v in broken), caught.value
    assert any(re.search(where, str(v)) for v in broken), caught.value
    assert f"[{rule}] guess, " in str(caught.value)


def test_a_conformant_game_passes(solid_source):
    report = check_game(GuessGame, seeds=(0,), source=solid_source)
    assert report.garbage_turns == {"player_1": len(GARBAGE), "player_2": len(GARBAGE)}
