"""Environments by name: ``register`` a game once, ``make`` as many environments as you like.

>>> import envs
>>> env = envs.make("spy", num_players=5, decision="observer")
>>> envs.registered()
['qa_duel', 'spy']

An entry point is a :class:`games.core.Game` subclass or a ``"module:Class"`` string imported on
first use, so registering costs nothing. As in Gymnasium, an environment id ``"module:name"``
imports ``module`` first (which registers ``name``), so that a game in a user's own package needs
no import by hand: ``make("my_games:count")``. Defaults given to ``register`` are overridden by the
keywords of ``make``; keywords the game's config does not have are refused with the list of
those it has.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from envs.game_env import GameEnv
from games.core import Game
from games.registry import Registry

#: Keywords of ``make`` that configure the environment rather than the game.
ENV_OPTIONS = ("render_mode", "max_action_chars", "max_prompt_chars", "source")


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment: its name, game class (or import path) and default options."""

    name: str
    entry_point: type[Game] | str
    defaults: dict[str, Any] = field(default_factory=dict)

    def game_class(self) -> type[Game]:
        if not isinstance(self.entry_point, str):
            return self.entry_point
        module_name, _, attribute = self.entry_point.partition(":")
        try:
            game_class = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ImportError(f"environment {self.name!r}: cannot import entry point "
                              f"{self.entry_point!r}: {error}") from error
        if not (isinstance(game_class, type) and issubclass(game_class, Game)):
            raise TypeError(f"environment {self.name!r}: {self.entry_point!r} is not a Game class")
        return game_class


#: The registered environments (a :class:`games.registry.Registry` of :class:`EnvSpec`).
ENVIRONMENTS: Registry[EnvSpec] = Registry("environment")


def register(name: str, entry_point: type[Game] | str, *, replace: bool = False,
             **defaults: Any) -> EnvSpec:
    """Register a game under ``name`` with default options for its config."""
    if not isinstance(entry_point, str) and not (
            isinstance(entry_point, type) and issubclass(entry_point, Game)):
        raise TypeError(f"entry_point must be a Game subclass or 'module:Class', got "
                        f"{entry_point!r}")
    return ENVIRONMENTS.register(name, EnvSpec(name, entry_point, dict(defaults)),
                                 replace=replace)


def spec(name: str) -> EnvSpec:
    """The registration of ``name`` (or ``"module:name"``, the module imported first); an
    unknown name raises :class:`games.registry.UnknownNameError` listing the known ones."""
    return ENVIRONMENTS[name]


def resolve(name: str) -> str:
    """The registered name of an environment id: ``"module:name"`` imports ``module`` (which
    registers ``name``) and gives ``name``; a plain name is itself."""
    return ENVIRONMENTS.resolve(name)


def registered() -> list[str]:
    """The names of all registered environments."""
    return list(ENVIRONMENTS)


def make(name: str, **overrides: Any) -> GameEnv:
    """A new environment for ``name``: registered defaults updated with ``overrides``."""
    game_class, config, env_options = configure(name, **overrides)
    return GameEnv(game_class, config, name=resolve(name), **env_options)


def configure(name: str, **overrides: Any) -> tuple[type[Game], Any, dict[str, Any]]:
    """What ``make(name, **overrides)`` builds its environment from, checked, without building it:
    the game class, the game's config and the environment's own options."""
    env_spec = spec(name)
    game_class = env_spec.game_class()
    options = {**env_spec.defaults, **overrides}
    env_options = {key: options.pop(key) for key in ENV_OPTIONS if key in options}
    known = [f.name for f in dataclasses.fields(game_class.config_class)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for environment {name!r}; its options: "
                         f"{known + list(ENV_OPTIONS)}")
    return game_class, game_class.config_class(**options), env_options
