"""Self-play training from game trajectories. So far: advantages (role baselines, group
normalisation) and Iterative-SPO's stage schedule; the GRPO trainer on TRL comes next."""

from trainers.advantages import RoleBaselines, group_normalize
from trainers.schedules import FixedAlternation, IterativeSPO

__all__ = ["FixedAlternation", "IterativeSPO", "RoleBaselines", "group_normalize"]
