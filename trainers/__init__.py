"""Self-play training from game trajectories: advantages (role baselines, group normalisation),
Iterative-SPO's stage schedule, and :mod:`trainers.grpo` (TRL's GRPO loss on recorded turns,
imported on its own: it needs torch and TRL). ``train.py`` comes next."""

from trainers.advantages import RoleBaselines, group_normalize
from trainers.schedules import FixedAlternation, IterativeSPO

__all__ = ["FixedAlternation", "IterativeSPO", "RoleBaselines", "group_normalize"]
