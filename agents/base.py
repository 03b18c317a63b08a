"""The interface every agent implements: a batch of observations in, one completion each out.

Observations are those of :mod:`envs` (``prompt``, ``images``, ``phase``, ``context``). Model-free
agents return text only; model backends also fill the token fields that trainers need.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Completion:
    """An agent's answer to one observation, with the tokens behind it when a model wrote it."""

    text: str
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None


class Agent(ABC):
    """Anything that plays: answers a batch of observations, one completion each, in order."""

    @abstractmethod
    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        """One completion per observation, in the order of ``observations``."""

    def sample(self, observations: Sequence[dict[str, Any]], n: int) -> list[list[Completion]]:
        """``n`` independent completions of each observation (a group, for GRPO or for the
        repeated votes of one seat). Backends that can share the prompt's work override this."""
        flat = self.act([observation for observation in observations for _ in range(n)])
        return [flat[i * n: (i + 1) * n] for i in range(len(observations))]


class TextAgent(Agent):
    """An agent that answers each observation on its own, with text only."""

    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        return [Completion(self.answer(observation)) for observation in observations]

    @abstractmethod
    def answer(self, observation: dict[str, Any]) -> str:
        """The text answering one observation."""
