"""Advantages against hand-computed values."""

import pytest

from trainers import RoleBaselines, group_normalize


def test_role_baselines_use_the_old_baseline_then_update():
    baselines = RoleBaselines(decay=0.9)
    keys = [("spy", "spy"), ("spy", "civilian"), ("spy", "civilian")]
    first = baselines.advantages(keys, [-0.6, 0.2, 0.4])
    assert first == pytest.approx([-0.6, 0.2, 0.4])            # baselines start at 0
    assert baselines.values[("spy", "spy")] == pytest.approx(0.1 * -0.6)
    assert baselines.values[("spy", "civilian")] == pytest.approx(0.1 * 0.3)
    second = baselines.advantages(keys, [-0.6, 0.2, 0.4])
    assert second == pytest.approx([-0.6 + 0.06, 0.2 - 0.03, 0.4 - 0.03])
    assert baselines.values[("spy", "spy")] == pytest.approx(0.9 * -0.06 + 0.1 * -0.6)


def test_role_baselines_state_round_trip():
    baselines = RoleBaselines(decay=0.95)
    baselines.advantages([("spy", "spy")], [1.0])
    restored = RoleBaselines()
    restored.load_state_dict(baselines.state_dict())
    assert restored.values == baselines.values and restored.decay == 0.95
    with pytest.raises(ValueError, match="decay"):
        RoleBaselines(decay=1.0)
    with pytest.raises(ValueError, match="rewards"):
        baselines.advantages([("a", "b")], [])


def test_group_normalize():
    advantages = group_normalize(["g1", "g1", "g2", "g2", "g2"], [1.0, -1.0, 0.5, 0.5, 0.5])
    assert advantages == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0])
    votes = [1.0, 1.0, -0.5, -1.0]
    mean = sum(votes) / 4
    std = (sum((v - mean) ** 2 for v in votes) / 4) ** 0.5
    assert group_normalize([0] * 4, votes) == pytest.approx([(v - mean) / std for v in votes])
    assert group_normalize([0] * 4, votes, scale=False) == pytest.approx([v - mean for v in votes])
    with pytest.raises(ValueError, match="rewards"):
        group_normalize([0], [])
