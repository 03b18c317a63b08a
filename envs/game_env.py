"""One PettingZoo AEC environment that runs any game of :mod:`games`.

Each seat of the game is an agent. The agent to move is the seat of the game's first pending turn;
in a simultaneous phase (votes, repeated samples of one seat) the pending turns are presented one
after another and none sees the others' answers, so the AEC order changes nothing. A game that
alternates sequential and simultaneous phases does not fit PettingZoo's Parallel API (every live
agent acts at every step there), so there is none: batching happens across games instead.

The image source is built from the config's ``images`` option, or passed built as ``source=``
(environments that share one source share its pool, its folder scan and its caches).

Observation (a ``Dict``): ``prompt`` (text for the model), ``images`` (tuple of ``(H, W, 3)``
uint8 arrays), ``phase`` and ``context`` (the turn in structured form, as JSON, for scripted
agents). A seat with no pending turn observes an empty prompt. Actions are free text. Anything
that is not a usable string (not text, binary, longer than ``max_action_chars``) is passed to the
game as an invalid move and gets the game's penalty; the environment never raises on an action.

``infos[agent]`` holds the current turn's labels (game id, turn, seat, role, phase, round); when
the game ends, each seat's info also has ``turn_rewards`` (turn index -> reward),
``invalid_turns`` (the indices of its turns the game took as invalid moves), ``return`` and the
game's ``stats``. Rewards arrive once, at the end (the games' rewards depend on later votes).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv

from envs.render import render_replay, render_transcript
from envs.spaces import FreeText, ImageArray
from games.core import Game, Turn
from games.images import ImageSource, make_source


class GameEnv(AECEnv):
    """A game of :mod:`games` as a PettingZoo AEC environment (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "name": "game", "is_parallelizable": False}

    def __init__(self, game_class: type[Game], config: Any, *, name: str | None = None,
                 render_mode: str | None = None, max_action_chars: int = 16384,
                 max_prompt_chars: int = 65536, source: ImageSource | None = None):
        super().__init__()
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        self.metadata = {**self.metadata, "name": name or game_class.name}
        self.render_mode = render_mode
        self.game_class, self.config = game_class, config
        self.max_action_chars = max_action_chars
        if source is None:  # else a source built once is shared by many environments
            source_options = dict(config.images)
            source = make_source(source_options.pop("source", "clevr"), **source_options)
        self.source = source
        if game_class.needs not in self.source.provides:
            raise ValueError(f"{game_class.name} needs {game_class.needs} but the image source "
                             f"{type(self.source).__name__} only provides {self.source.provides}")
        self.possible_agents = list(game_class.seats(config))
        self._observation_spaces = {agent: spaces.Dict({
            "prompt": FreeText(max_prompt_chars),
            "images": spaces.Sequence(ImageArray()),
            "phase": FreeText(64),
            "context": FreeText(1 << 24),
        }) for agent in self.possible_agents}
        self._action_spaces = {agent: FreeText(max_action_chars) for agent in self.possible_agents}
        self._rng: np.random.Generator | None = None
        self.game: Game | None = None
        self._observations: dict[int, dict[str, Any]] = {}
        # id of a turn's context -> its JSON, per game (the game keeps the contexts alive, so
        # their ids are not reused before the next reset clears this)
        self._contexts: dict[int, str] = {}

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> FreeText:
        return self._action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        game_id = f"{self.metadata['name']}-{int(self._rng.integers(1 << 62)):016x}"
        self.game = self.game_class(self.config, self.source, self._rng, game_id)
        self._observations = {}
        self._contexts = {}
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        roles = self.game.roles
        self.infos = {agent: {"game_id": game_id, "seat": agent, "role": roles[agent]}
                      for agent in self.agents}
        self._select_next_turn()

    def observe(self, agent: str) -> dict[str, Any]:
        turn = self._turn_of(agent)
        if turn is None:
            return {"prompt": "", "images": (), "phase": "", "context": "{}"}
        return self._observation_of(turn)

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        turn = self._turn_of(agent)
        self._observations.pop(turn.index, None)
        self.game.play(turn.index, self._usable_text(action))
        self._cumulative_rewards[agent] = 0.0
        if self.game.done:
            self._end_game()
        else:
            self._select_next_turn()

    @property
    def game_over(self) -> bool:
        """True once the game has ended (no turn pending, rewards final), before the agents'
        last ``step(None)`` of the AEC loop."""
        return self.game is not None and self.game.done

    def pending_turns(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """Every turn that can be played now, as (agent, observation, info), in the order
        :meth:`step` takes them. They are simultaneous: answering them one after another with
        ``step`` is the AEC loop, so a runner may ask a model for all of them in one batch."""
        if self.game is None or self.game_over:
            return []
        return [(turn.seat, self._observation_of(turn), turn.info())
                for turn in self.game.pending()]

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None or self.game is None:
            return None
        if self.render_mode == "ansi":
            return render_transcript(self.game)
        return np.asarray(render_replay(self.game).convert("RGB"))

    def close(self) -> None:
        self.game = None

    # ----- internals -----

    def _observation_of(self, turn: Turn) -> dict[str, Any]:
        observation = self._observations.get(turn.index)
        if observation is None:
            # turns that share a context (repeated samples) share its JSON; the game keeps every
            # turn (and so every context) alive until the next reset clears this cache
            context = self._contexts.get(id(turn.context))
            if context is None:
                context = self._contexts[id(turn.context)] = json.dumps(turn.context)
            observation = {"prompt": turn.prompt, "images": turn.images, "phase": turn.phase,
                           "context": context}
            self._observations[turn.index] = observation
        return observation

    def _turn_of(self, agent: str) -> Turn | None:
        return next((t for t in self.game.pending() if t.seat == agent), None)

    def _select_next_turn(self) -> None:
        turn = self.game.pending()[0]
        self.agent_selection = turn.seat
        self.infos[turn.seat] = turn.info()

    def _end_game(self) -> None:
        returns, stats, roles = self.game.seat_rewards(), self.game.stats(), self.game.roles
        for agent in self.agents:
            self.rewards[agent] = returns[agent]
            self.terminations[agent] = True
            self.infos[agent] = {
                "game_id": self.game.game_id, "seat": agent, "role": roles[agent],
                "return": returns[agent], "stats": stats,
                "turn_rewards": {m.turn.index: m.reward for m in self.game.moves_of(agent)},
                "invalid_turns": [m.turn.index for m in self.game.moves_of(agent) if not m.valid],
            }
        self._accumulate_rewards()

    def _usable_text(self, action: Any) -> str | None:
        """The action as text, or None when it cannot be a move (the game then penalises it)."""
        if not isinstance(action, str) or len(action) > self.max_action_chars or "\x00" in action:
            return None
        try:
            action.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return action
