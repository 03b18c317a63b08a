"""Self-play training from game trajectories. So far: advantages (role baselines, group
normalisation); the GRPO trainer on TRL comes next."""

from trainers.advantages import RoleBaselines, group_normalize

__all__ = ["RoleBaselines", "group_normalize"]
