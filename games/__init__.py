"""Pure game rules: no PettingZoo, no models. See :mod:`games.core` for the API every game has."""

from games.core import Game, Move, PromptTemplates, Turn
from games.qa_duel import QADuelConfig, QADuelGame
from games.spy import SpyConfig, SpyGame

__all__ = ["Game", "Move", "PromptTemplates", "QADuelConfig", "QADuelGame", "SpyConfig",
           "SpyGame", "Turn"]
