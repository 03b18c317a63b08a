"""Scripted agents: rule-based players that read the structured ``context`` of each turn.

One module per game, named like the game; :data:`SCRIPTED` registers each class under its game's
name (``SCRIPTED.register("my_game", MyScriptedAgent)`` adds one for a user's game).
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.scripted.qa_duel import ScriptedQADuelAgent
from agents.scripted.spy import ScriptedSpyAgent
from games.registry import Registry

#: Scripted agent classes by game name.
SCRIPTED: Registry[type[Agent]] = Registry("scripted agent for the game")
SCRIPTED.register("spy", ScriptedSpyAgent)
SCRIPTED.register("qa_duel", ScriptedQADuelAgent)


def scripted_agent(game_name: str, seed: int | None = None, **options: Any) -> Agent:
    """The scripted agent of ``game_name``, seeded; ``options`` go to its constructor."""
    return SCRIPTED[game_name](seed=seed, **options)


__all__ = ["SCRIPTED", "ScriptedQADuelAgent", "ScriptedSpyAgent", "scripted_agent"]
