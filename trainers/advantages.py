"""From rewards to advantages: role baselines for zero-sum self-play, group normalisation for
verifiable answers.

Role-advantage estimation (SPIRAL; Vision-Zero Eq. 2): one exponential moving average of the
reward per (game, role). A turn's advantage is its reward minus the baseline *before* this batch
updates it; then the baseline moves towards the batch's mean reward of that role. In a zero-sum
game the group mean is ~0 whatever the roles do, so plain GRPO centring would mix the spy's and
the civilians' returns; a per-role baseline does not.

Group normalisation (GRPO): answers to the same prompt form a group; the advantage is
``(r - mean) / (std + eps)`` with the population std. A group whose rewards are all equal only
gets centred, i.e. zeros (as the released Vision-Zero code does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


class RoleBaselines:
    """EMA reward baselines keyed by (game, role); ``decay`` is 0.95 in the paper, 0.9 in the
    released code. Baselines start at 0."""

    def __init__(self, decay: float = 0.95):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.values: dict[tuple[str, str], float] = {}

    def advantages(self, keys: Sequence[tuple[str, str]], rewards: Sequence[float]) -> list[float]:
        """Advantages of a batch of turns (reward minus the current baseline of the turn's
        (game, role)); then each baseline is updated once with its role's mean batch reward."""
        if len(keys) != len(rewards):
            raise ValueError(f"{len(keys)} keys but {len(rewards)} rewards")
        advantages = [r - self.values.get(k, 0.0) for k, r in zip(keys, rewards, strict=True)]
        by_key: dict[tuple[str, str], list[float]] = defaultdict(list)
        for key, reward in zip(keys, rewards, strict=True):
            by_key[key].append(reward)
        for key, values in by_key.items():
            old = self.values.get(key, 0.0)
            self.values[key] = self.decay * old + (1.0 - self.decay) * float(np.mean(values))
        return advantages

    def state_dict(self) -> dict:
        return {"decay": self.decay, "values": [[g, r, v] for (g, r), v in self.values.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.values = {(g, r): v for g, r, v in state["values"]}


def group_normalize(groups: Sequence[Hashable], rewards: Sequence[float],
                    eps: float = 1e-8, scale: bool = True) -> list[float]:
    """GRPO advantages: each reward standardised within the rows sharing its group key
    (``scale=False``: only centred, as Dr. GRPO does)."""
    if len(groups) != len(rewards):
        raise ValueError(f"{len(groups)} group keys but {len(rewards)} rewards")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        values = np.asarray([rewards[i] for i in indices], dtype=np.float64)
        centred = values - values.mean()
        std = values.std()
        scaled = centred / (std + eps) if scale and std > 0 else centred
        for i, value in zip(indices, scaled, strict=True):
            advantages[i] = float(value)
    return advantages
