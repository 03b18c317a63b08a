"""Play many games at once and record exact trajectories.

The runner keeps ``parallel_games`` environments going. At every step it gathers every turn that
can be played now in every game (a game in a simultaneous phase offers several) and asks each
agent for all of its turns in one batched call — per number of samples: a seat that answers the
same prompt several times, like the observer's votes or the solver's answers, is one request for
``n`` samples through :meth:`~agents.base.Agent.sample` — then steps the games with the answers.
A finished game is replaced by a new one at once, so batches stay full to the end.

Why lockstep rather than async tasks: a game's turns are sequential (the next prompt exists only
once the last answer is in), so what keeps a GPU busy is many games per call, which lockstep gives
as well as an async pool; the order of calls, and so every result, is reproducible from the seed;
and vLLM's in-process ``LLM.generate`` is itself one synchronous batch call. What lockstep loses is
the overlap of a slow straggler in one call with the next call's work: with answers of very
different lengths an async server pool (``vllm serve`` plus many requests) recovers it.

Who plays is one shared agent, one agent per seat, or a *seating*: a function ``(seat, role) ->
agent`` asked at every turn, for line-ups that follow roles that change from game to game (one
policy in the spy's seat, whichever it is, another in every other seat). The runner only passes
the role label the environment reports; it knows nothing of what the roles mean.

Game ``i`` of a run is reset with ``seed + i``, whatever the parallelism, so a run replays exactly;
with ``repeats=k`` each seed is played ``k`` times in a row (game ``i`` gets ``seed + i // k``):
the same image and setup, different answers — a GRPO group of whole games.
Every turn is recorded as a :class:`~agents.trajectory.TurnRecord` with the exact token ids and
sampler log-probs the agent returned (no re-tokenisation anywhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from agents.base import Agent, Completion
from agents.trajectory import GameResult, TurnRecord
from envs import GameEnv


@dataclass
class RolloutTimings:
    """Where a run's wall time went: inside the agents' calls (also by the name recorded for
    the agent), and everything else."""

    total_seconds: float = 0.0
    agent_seconds: float = 0.0
    agent_calls: int = 0
    turns: int = 0
    seconds_by_agent: dict[str, float] = field(default_factory=dict)
    turns_by_agent: dict[str, int] = field(default_factory=dict)

    @property
    def outside_agents_share(self) -> float:
        """The share of wall time spent outside the agents (environments and orchestration)."""
        return 1.0 - self.agent_seconds / self.total_seconds if self.total_seconds else 0.0


@dataclass
class _Slot:
    """One environment of the runner and the game it is playing."""

    env: GameEnv
    number: int
    turns: dict[int, TurnRecord] = field(default_factory=dict)


class Request(NamedTuple):
    """One pending turn of one of the runner's games, on its way to an agent."""

    game: int  # the game's number in the run
    turn: int  # the turn's index in its game
    seat: str
    observation: dict[str, Any]


Seating = Callable[[str, str], Agent]  # (seat, role) -> the agent that plays that seat's turn


def _repeated_prompts(batch: list[Request]) -> dict[int, list[list[Request]]]:
    """The batch's requests grouped: turns of one game with the same prompt and images (a seat
    answering several times) form one group; groups are keyed by their size, ``n``."""
    groups: dict[tuple, list[Request]] = {}
    for request in batch:
        images = tuple(map(id, request.observation["images"]))  # alive: the batch holds them
        key = (request.game, request.seat, request.observation["prompt"], images)
        groups.setdefault(key, []).append(request)
    by_size: dict[int, list[list[Request]]] = {}
    for group in groups.values():
        by_size.setdefault(len(group), []).append(group)
    return by_size


class RolloutRunner:
    """Plays games of ``make_env()`` with ``agents``: one shared policy, one per seat, or a
    seating function ``(seat, role) -> agent``; the ``parallel_games`` environments are made once
    and reused by every run. ``agent_names`` is the name recorded in each seat's turns (default:
    the class name of the agent that played it)."""

    def __init__(self, make_env: Callable[[], GameEnv],
                 agents: Agent | Mapping[str, Agent] | Seating, parallel_games: int = 64,
                 agent_names: dict[str, str] | None = None):
        if parallel_games < 1:
            raise ValueError(f"parallel_games must be >= 1, got {parallel_games}")
        self._envs = [make_env() for _ in range(parallel_games)]
        seats = self._envs[0].possible_agents
        if isinstance(agents, Agent):
            agents = dict.fromkeys(seats, agents)
        if isinstance(agents, Mapping):
            missing = sorted(set(seats) - set(agents))
            if missing:
                raise ValueError(f"no agent for seat(s) {missing}; seats: {seats}")
            self.seating: Seating = lambda seat, role: agents[seat]
            self.agents: dict[str, Agent] | None = dict(agents)  # None with a seating function
        elif callable(agents):
            self.seating, self.agents = agents, None
        else:
            raise TypeError(f"agents must be an Agent, a dict of seat -> Agent or a function "
                            f"(seat, role) -> Agent, got {type(agents).__name__}")
        self.agent_names = dict(agent_names or {})
        self.timings = RolloutTimings()

    def run(self, num_games: int, seed: int = 0,
            on_game_end: Callable[[int, GameEnv], None] | None = None,
            repeats: int = 1) -> list[GameResult]:
        """Play ``num_games`` games; results come in the order of the games' numbers.
        ``on_game_end(number, env)`` sees each finished game's environment (for replays);
        ``repeats`` plays each seed that many times in a row."""
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        start = time.perf_counter()
        slots = [self._start(env, number, seed + number // repeats) for number, env in
                 zip(range(num_games), self._envs, strict=False)]
        next_number, results = len(slots), {}
        while slots:
            self._play_one_step(slots)
            for slot in [s for s in slots if s.env.game_over]:
                results[slot.number] = self._finish(slot)
                if on_game_end is not None:
                    on_game_end(slot.number, slot.env)
                slots.remove(slot)
                if next_number < num_games:
                    slots.append(self._start(slot.env, next_number,
                                             seed + next_number // repeats))
                    next_number += 1
        self.timings.total_seconds += time.perf_counter() - start
        return [results[number] for number in range(num_games)]

    def _start(self, env: GameEnv, number: int, seed: int) -> _Slot:
        env.reset(seed=seed)
        return _Slot(env, number)

    def _agent_for(self, seat: str, role: str) -> Agent:
        agent = self.seating(seat, role)
        if not isinstance(agent, Agent):
            raise TypeError(f"the seating gave {agent!r} for seat {seat!r} (role {role!r}); "
                            f"it must give an Agent")
        return agent

    def _play_one_step(self, slots: Sequence[_Slot]) -> None:
        pending = {slot.number: slot.env.pending_turns() for slot in slots}
        batches: dict[int, tuple[Agent, list[Request]]] = {}  # one batch per agent
        played_by: dict[tuple[int, int], Agent] = {}
        for slot in slots:
            for seat, observation, info in pending[slot.number]:
                agent = played_by[slot.number, info["turn"]] = self._agent_for(seat, info["role"])
                batches.setdefault(id(agent), (agent, []))[1].append(
                    Request(slot.number, info["turn"], seat, observation))
        completions: dict[tuple[int, int], Completion] = {}
        timings = self.timings
        for agent, batch in batches.values():
            name = self.agent_names.get(batch[0].seat, type(agent).__name__)
            timings.turns_by_agent[name] = timings.turns_by_agent.get(name, 0) + len(batch)
            for n, groups in _repeated_prompts(batch).items():
                started = time.perf_counter()
                observations = [group[0].observation for group in groups]
                answers = (agent.sample(observations, n) if n > 1
                           else [[c] for c in agent.act(observations)])
                seconds = time.perf_counter() - started
                timings.agent_seconds += seconds
                timings.seconds_by_agent[name] = timings.seconds_by_agent.get(name, 0.0) + seconds
                timings.agent_calls += 1
                if [len(a) for a in answers] != [n] * len(groups):
                    raise RuntimeError(f"{type(agent).__name__} returned "
                                       f"{sum(map(len, answers))} completions for "
                                       f"{n * len(groups)} requests")
                for group, samples in zip(groups, answers, strict=True):
                    for request, completion in zip(group, samples, strict=True):
                        completions[request.game, request.turn] = completion
        for slot in slots:  # each game takes its answers in the order pending_turns gave them
            for seat, observation, info in pending[slot.number]:
                completion = completions[slot.number, info["turn"]]
                agent = played_by[slot.number, info["turn"]]
                slot.turns[info["turn"]] = TurnRecord(
                    game_id=info["game_id"], env=slot.env.metadata["name"], turn=info["turn"],
                    seat=seat, role=info["role"], phase=info["phase"], round=info["round"],
                    agent=self.agent_names.get(seat, type(agent).__name__),
                    prompt=observation["prompt"],
                    images=list(observation["images"]), text=completion.text,
                    prompt_ids=completion.prompt_ids, completion_ids=completion.completion_ids,
                    logprobs=completion.logprobs)
                if slot.env.agent_selection != seat:  # the contract of pending_turns
                    raise RuntimeError(f"{slot.env.metadata['name']}: pending_turns gave "
                                       f"{seat}'s turn, but step would take "
                                       f"{slot.env.agent_selection}'s")
                slot.env.step(completion.text)
                self.timings.turns += 1

    def _finish(self, slot: _Slot) -> GameResult:
        env = slot.env
        infos = {seat: env.infos[seat] for seat in env.agents}
        for info in infos.values():
            for turn, reward in info["turn_rewards"].items():
                slot.turns[turn].reward = reward
            for turn in info["invalid_turns"]:
                slot.turns[turn].valid = False
        any_info = next(iter(infos.values()))
        for _ in list(env.agents):  # let the finished agents leave, as the AEC loop does
            env.step(None)
        return GameResult(
            game_id=any_info["game_id"], env=env.metadata["name"],
            roles={seat: info["role"] for seat, info in infos.items()},
            returns={seat: info["return"] for seat, info in infos.items()},
            stats=dict(any_info["stats"]),
            turns=[slot.turns[t] for t in sorted(slot.turns)])
