"""PettingZoo environments for the games of :mod:`games`, and the registry that names them."""

from envs.game_env import GameEnv
from envs.registry import ENVIRONMENTS, EnvSpec, make, register, registered, resolve, spec

register("spy", "games.spy:SpyGame")
register("qa_duel", "games.qa_duel:QADuelGame")

__all__ = ["ENVIRONMENTS", "EnvSpec", "GameEnv", "make", "register", "registered", "resolve",
           "spec"]
