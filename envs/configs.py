"""Hydra config nodes for the registered environments, made from each game's config dataclass
so that its defaults have one source: ``env=spy`` and ``env.num_players=5`` need no
``configs/env/spy.yaml``. A config folder of the user's (``--config-dir``) may still hold an
``env/<name>.yaml``, for a game registered by a module that Hydra has not imported yet
(``name: my_games:count``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from envs.registry import configure, registered


def env_defaults(name: str) -> dict[str, Any]:
    """The ``env`` config of a registered environment: its name and its game's default options
    (the registered defaults included)."""
    _, config, env_options = configure(name)
    return {"name": name, **dataclasses.asdict(config), **env_options}


def store_env_configs() -> None:
    """Puts every registered environment in Hydra's config store as ``env/<name>``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in registered():
        store.store(group="env", name=name, node=env_defaults(name))
