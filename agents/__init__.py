"""Agents that play the games of :mod:`envs`: all implement :class:`Agent` (observations in,
completions out). ``make_agent(name, **kwargs)`` builds one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.base import Agent, Completion, TextAgent
from agents.random_agent import RandomAgent
from agents.scripted import SCRIPTED, scripted_agent


def _scripted(game: str | None, **kwargs: Any) -> Agent:
    if game is None:
        raise ValueError(f"make_agent('scripted') needs game=, one of: "
                         f"{', '.join(sorted(SCRIPTED))}")
    return scripted_agent(game, **kwargs)


def _random(game: str | None, **kwargs: Any) -> Agent:
    return RandomAgent(**kwargs)


#: Agent builders by name, each called as ``builder(game, **kwargs)``; model backends go here too.
AGENTS: dict[str, Callable[..., Agent]] = {"random": _random, "scripted": _scripted}


def make_agent(name: str, *, game: str | None = None, **kwargs: Any) -> Agent:
    """The agent called ``name`` for the game ``game``, built with ``kwargs`` (the scripted
    agents need ``game``; others ignore it)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](game, **kwargs)


__all__ = ["AGENTS", "Agent", "Completion", "RandomAgent", "SCRIPTED", "TextAgent", "make_agent",
           "scripted_agent"]
