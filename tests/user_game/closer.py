"""Closer wins: a user's two-seat game, kept in a folder of its own as a user would keep it.

Both players count the objects in one CLEVR-like scene. The first answers; the second is told the
first's answer, then answers. Whoever is closer to the true count wins: +1, the other -1; a tie is
0 each. An answer without a number in ``\\boxed{}`` is invalid and loses to any valid one.

``tests/test_user_game.py`` runs this folder as a user would: the conformance suite
(``test_closer.py``), ``train.py --config-dir conf env=closer`` and the arena, none of which needs
a project file changed.
"""

from dataclasses import dataclass, field

import envs
from games import Game, Move
from games.parsing import last_boxed

QUESTION = "How many objects are in this picture? Answer with a number in \\boxed{}."


@dataclass
class CloserConfig:
    images: dict = field(default_factory=lambda: {"source": "clevr"})


class CloserGame(Game):
    """Two players count the objects of one scene; the closer one wins."""

    name, config_class, needs = "closer", CloserConfig, "images"

    def __init__(self, config, source, rng, game_id):
        super().__init__(config, source, rng, game_id)
        self.scene = source.sample_image(rng)
        self.truth = len(self.scene.description["objects"])
        self._ask("player_1", "first", "count", 0, QUESTION, (self.scene.image,), {})

    @classmethod
    def seats(cls, config):
        return ("player_1", "player_2")

    @property
    def roles(self):
        return {"player_1": "first", "player_2": "second"}

    @property
    def seat_images(self):
        return {"player_1": (self.scene.image,), "player_2": (self.scene.image,)}

    def _judge(self, turn, text):
        guess = last_boxed(text or "")
        count = int(guess) if guess and guess.isascii() and guess.isdigit() and len(guess) < 6 \
            else None
        return Move(turn, text or "", valid=count is not None,
                    shown="invalid count" if count is None else f"says {count}", value=count)

    def _advance(self):
        if len(self.moves) == 1:  # the second player's turn, told the first's answer
            first = self.moves[0].shown
            self._ask("player_2", "second", "count", 0, f"The other player {first}. {QUESTION}",
                      (self.scene.image,), {"first": self.moves[0].value})
            return
        first, second = (abs(m.value - self.truth) if m.valid else float("inf")
                         for m in self.moves)
        if first != second:
            winner, loser = self.moves if first < second else reversed(self.moves)
            winner.reward, loser.reward = 1.0, -1.0

    def stats(self):
        rewards = self.seat_rewards()
        return {"first_won": float(rewards["player_1"] > 0),
                "second_won": float(rewards["player_2"] > 0)}

    def check_invariants(self):
        if self.done:
            assert sum(self.seat_rewards().values()) == 0, "the rewards are zero-sum"
            assert all(m.reward in (-1.0, 0.0, 1.0) for m in self.moves), "rewards are -1, 0, 1"


envs.register("closer", CloserGame)
