"""An agent that writes random text, sometimes shaped like an answer, so games see every kind of
move: valid ones, invalid ones, abstentions and garbage."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from agents.base import Agent, Completion, TextAgent

WORDS = ("the", "a", "I", "think", "is", "not", "maybe", "player", "spy", "clue", "vote", "answer",
         "red", "blue", "green", "gray", "large", "small", "metal", "rubber", "cube", "sphere",
         "cylinder", "left", "right", "back", "front", "chart", "value", "bar", "option", "none")
PUNCTUATION = (".", ",", "!", "?", ";", ":", "-", "(", ")", "'", '"', "\n")
UNICODE = ("é", "ß", "ñ", "—", "…", "°", "€", "Ω", "ж", "你好", "日本語", "🙂")
LETTERS = ("A", "B", "C", "D", "E")


class RandomAgent(TextAgent):
    """Random words, punctuation and unicode; with ``box_probability`` a ``\\boxed{}`` of random
    words, a small number, N/A or a letter, and with ``question_probability`` a (sometimes broken)
    multiple-choice question block. Ignores the observation; the same seed gives the same text."""

    def __init__(self, seed: int | None = None, max_chars: int = 200,
                 box_probability: float = 0.5, question_probability: float = 0.2):
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        self.max_chars = max_chars
        self.box_probability = box_probability
        self.question_probability = question_probability
        self._rng = random.Random(seed)

    def answer(self, observation: dict[str, Any]) -> str:
        roll = self._rng.random()
        if roll < self.question_probability:
            block = self._question()
        elif roll < self.question_probability + self.box_probability:
            block = "\\boxed{" + self._box_content() + "}"
        else:
            block = ""
        budget = max(0, self.max_chars - len(block))
        before = self._noise(self._rng.randint(0, budget))
        after = self._noise(self._rng.randint(0, budget - len(before)))
        return (before + block + after)[: self.max_chars]

    def _noise(self, length: int) -> str:
        text = ""
        while len(text) < length:
            kind = self._rng.random()
            source = WORDS if kind < 0.7 else PUNCTUATION if kind < 0.85 else UNICODE
            text += self._rng.choice(source) + " "
        return text[:length]

    def _words(self, count: int) -> str:
        return " ".join(self._rng.choice(WORDS) for _ in range(count))

    def _box_content(self) -> str:
        kind = self._rng.randrange(4)
        if kind == 0:
            return self._words(self._rng.randint(1, 6))
        if kind == 1:
            return str(self._rng.randint(0, 6))
        return "N/A" if kind == 2 else self._rng.choice(LETTERS)

    def _question(self) -> str:
        letters = list(LETTERS[:4])
        if self._rng.random() < 0.3:
            letters.pop(self._rng.randrange(4))
        options = "\n".join(f"{letter}) {self._words(self._rng.randint(1, 3))}"
                            for letter in letters)
        stem = self._words(self._rng.randint(0, 6))
        answer = f"<answer>{self._rng.choice(LETTERS)}</answer>" if self._rng.random() < 0.9 else ""
        return (f"<description>{self._words(4)}</description>\n"
                f"<question>{stem}?\n{options}</question>\n{answer}")


class NoisyAgent(Agent):
    """Another agent made weaker: each observation is answered by a :class:`RandomAgent` with
    probability ``noise``, else by ``agent`` (a spread of strengths for leagues)."""

    def __init__(self, agent: Agent, noise: float, seed: int | None = None):
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be within [0, 1], got {noise}")
        self.agent, self.noise = agent, noise
        self.random = RandomAgent(seed=seed)
        self._rng = random.Random(seed)

    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        noisy = [self._rng.random() < self.noise for _ in observations]
        random_answers = iter(self.random.act(
            [o for o, n in zip(observations, noisy, strict=True) if n]))
        own = [o for o, n in zip(observations, noisy, strict=True) if not n]
        own_answers = iter(self.agent.act(own) if own else [])
        return [next(random_answers) if n else next(own_answers) for n in noisy]
