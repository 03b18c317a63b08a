"""From rewards to advantages: role baselines for zero-sum self-play, group normalisation for
verifiable answers.

Role-advantage estimation (SPIRAL; Vision-Zero Eq. 2): one exponential moving average of the
reward per (game, role). In a zero-sum game the group mean is ~0 whatever the roles do, so plain
GRPO centring would mix the spy's and the civilians' returns; a per-role baseline does not. Each
batch of turns moves each baseline once, towards the batch's mean reward of that role; a turn's
advantage is its reward minus the baseline, taken (``order``):

- ``subtract_then_update`` (the default; SPIRAL's order, which the paper follows): the baseline
  *before* this batch moves it, so a turn is never compared with a baseline made from itself;
- ``update_then_subtract`` (Vision-Zero's released code): the baseline this batch moved it to.

Group normalisation (GRPO): answers to the same prompt form a group; the advantage is
``(r - mean) / (std + eps)``. A group whose spread is at most ``eps`` is only centred, i.e. zeros
(as Vision-Zero's released code does: dividing float noise by ``eps`` would blow it up).
:class:`GroupNormalization` holds the two released-code switches:

- ``std``: ``"population"`` (the default; the paper's formula, Vision-Zero's code; eps 1e-8) or
  ``"sample"`` (ddof 1, eps 1e-6: verl's GRPO, which V-Zero's released code trains with);
- ``singletons``: a group of one member has no spread: ``"zero"`` (the default: nothing to compare
  it with) or ``"reward"`` (both released codes: mean 0 and std 1, so ``r / (1 + eps)``, as verl
  computes it; Vision-Zero's code returns ``r`` itself, the same to one part in 10^8).

Computed in float64; the released codes compute in float32 (about 7 significant digits).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from games.checks import check_choice

BASELINE_ORDERS = ("subtract_then_update", "update_then_subtract")
GROUP_STDS = ("population", "sample")
SINGLETON_RULES = ("zero", "reward")


class RoleBaselines:
    """EMA reward baselines keyed by (game, role); ``decay`` is 0.95 in the paper, 0.9 in the
    released code; ``order`` as in the module docstring. Baselines start at 0."""

    def __init__(self, decay: float = 0.95, order: str = "subtract_then_update"):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        check_choice("order", order, BASELINE_ORDERS)
        self.decay = decay
        self.order = order
        self.values: dict[tuple[str, str], float] = {}

    def advantages(self, keys: Sequence[tuple[str, str]], rewards: Sequence[float]) -> list[float]:
        """Advantages of a batch of turns (reward minus the baseline of the turn's (game, role));
        each baseline is updated once with its role's mean batch reward."""
        if len(keys) != len(rewards):
            raise ValueError(f"{len(keys)} keys but {len(rewards)} rewards")
        before = dict(self.values)
        by_key: dict[tuple[str, str], list[float]] = defaultdict(list)
        for key, reward in zip(keys, rewards, strict=True):
            by_key[key].append(reward)
        for key, values in by_key.items():
            old = self.values.get(key, 0.0)
            self.values[key] = self.decay * old + (1.0 - self.decay) * float(np.mean(values))
        baselines = before if self.order == "subtract_then_update" else self.values
        return [r - baselines.get(k, 0.0) for k, r in zip(keys, rewards, strict=True)]

    def state_dict(self) -> dict:
        """The baselines and their decay (``order`` is a rule of the config, not state)."""
        return {"decay": self.decay, "values": [[g, r, v] for (g, r), v in self.values.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.values = {(g, r): v for g, r, v in state["values"]}


def group_normalize(groups: Sequence[Hashable], rewards: Sequence[float], eps: float = 1e-8,
                    scale: bool = True, ddof: int = 0, singletons: str = "zero") -> list[float]:
    """GRPO advantages: each reward standardised within the rows sharing its group key, the std
    with ``ddof`` (``scale=False``: only centred, as Dr. GRPO does); a group of one gets 0 or,
    with ``singletons="reward"``, its reward over ``1 + eps`` (over 1 when not scaled)."""
    if len(groups) != len(rewards):
        raise ValueError(f"{len(groups)} group keys but {len(rewards)} rewards")
    check_choice("singletons", singletons, SINGLETON_RULES)
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        values = np.asarray([rewards[i] for i in indices], dtype=np.float64)
        if len(values) == 1:
            lone = values[0] / (1.0 + eps if scale else 1.0)
            advantages[indices[0]] = float(lone) if singletons == "reward" else 0.0
            continue
        centred = values - values.mean()
        std = values.std(ddof=ddof)
        scaled = centred / (std + eps) if scale and std > eps else centred
        for i, value in zip(indices, scaled, strict=True):
            advantages[i] = float(value)
    return advantages


@dataclass(frozen=True)
class GroupNormalization:
    """How the rewards of GRPO groups become advantages: ``std`` and ``singletons`` as in the
    module docstring (``selfplay.group_std``, ``selfplay.singleton_groups``)."""

    std: str = "population"
    singletons: str = "zero"

    def __post_init__(self) -> None:
        check_choice("std", self.std, GROUP_STDS)
        check_choice("singletons", self.singletons, SINGLETON_RULES)

    @property
    def eps(self) -> float:
        return 1e-6 if self.std == "sample" else 1e-8

    def __call__(self, groups: Sequence[Hashable], rewards: Sequence[float]) -> list[float]:
        return group_normalize(groups, rewards, eps=self.eps, ddof=int(self.std == "sample"),
                               singletons=self.singletons)


#: The default: population std, a group of one gets 0.
PAPER_NORMALIZATION = GroupNormalization()
