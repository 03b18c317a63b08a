"""Scripted agents: rule-based players that read the structured ``context`` of each turn.

One module per game, named like the game; :data:`SCRIPTED` maps game names to agent classes.
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.scripted.qa_duel import ScriptedQADuelAgent
from agents.scripted.spy import ScriptedSpyAgent

SCRIPTED: dict[str, type[Agent]] = {"spy": ScriptedSpyAgent, "qa_duel": ScriptedQADuelAgent}


def scripted_agent(game_name: str, seed: int | None = None, **options: Any) -> Agent:
    """The scripted agent of ``game_name``, seeded; ``options`` go to its constructor."""
    if game_name not in SCRIPTED:
        raise ValueError(f"no scripted agent for game {game_name!r}; known games: "
                         f"{', '.join(sorted(SCRIPTED))}")
    return SCRIPTED[game_name](seed=seed, **options)


__all__ = ["SCRIPTED", "ScriptedQADuelAgent", "ScriptedSpyAgent", "scripted_agent"]
