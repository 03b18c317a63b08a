"""Iterative-SPO's stage switch on synthetic statistics."""

import pytest

from trainers.schedules import CLUE, DECISION, FixedAlternation, IterativeSPO


def steps_until(schedule, stage, accuracy, na_rate, limit=500) -> int:
    for step in range(1, limit + 1):
        if schedule.update(accuracy, na_rate) == stage:
            return step
    raise AssertionError(f"never reached {stage}")


def test_decision_first_and_switches_once_the_averages_clear_the_thresholds():
    schedule = IterativeSPO()
    assert schedule.stage == DECISION
    # perfect votes: the accuracy EMA from 0 reaches 0.9 when 1 - 0.95^k >= 0.9, k = 45
    assert steps_until(schedule, CLUE, accuracy=1.0, na_rate=0.0) == 45
    assert schedule.accuracy >= 0.9 and schedule.steps_in_stage == 0


def test_too_many_abstentions_keep_the_decision_stage():
    schedule = IterativeSPO()
    for _ in range(300):
        assert schedule.update(accuracy=1.0, na_rate=0.2) == DECISION


def test_clue_stage_returns_to_decision_on_errors_but_not_before_min_steps():
    schedule = IterativeSPO(stage=CLUE, accuracy=0.62, na_rate=0.0)
    stages = [schedule.update(accuracy=0.0, na_rate=0.0) for _ in range(4)]
    assert 1 - schedule.accuracy >= 0.4              # the error EMA passed 0.4 at once...
    assert stages == [CLUE] * 4
    assert schedule.update(accuracy=0.0, na_rate=0.0) == DECISION  # ...but 5 steps first
    # from a good start, all-wrong votes need 9 steps: 1 - 0.95^9 * 0.95 >= 0.4
    schedule = IterativeSPO(stage=CLUE, accuracy=0.95, na_rate=0.0)
    assert steps_until(schedule, DECISION, accuracy=0.0, na_rate=0.0) == 9


def test_clue_stage_returns_to_decision_on_abstentions():
    schedule = IterativeSPO(stage=CLUE, accuracy=1.0, na_rate=0.0, min_steps=0)
    # N/A EMA from 0 towards 1 passes 0.5 when 1 - 0.95^k >= 0.5, k = 14
    assert steps_until(schedule, DECISION, accuracy=1.0, na_rate=1.0) == 14


def test_hysteresis_no_flapping_between_thresholds():
    schedule = IterativeSPO(stage=CLUE, accuracy=0.8, na_rate=0.2, min_steps=0)
    for _ in range(200):  # error 0.2 < 0.4 and N/A 0.2 < 0.5: stay; accuracy < 0.9: no return
        assert schedule.update(accuracy=0.8, na_rate=0.2) == CLUE


def test_state_round_trip_and_bad_values():
    schedule = IterativeSPO()
    for _ in range(7):
        schedule.update(0.5, 0.1)
    restored = IterativeSPO()
    restored.load_state_dict(schedule.state_dict())
    assert restored == schedule
    with pytest.raises(ValueError, match="rho"):
        IterativeSPO(rho=1.5)
    with pytest.raises(ValueError, match="stage"):
        IterativeSPO(stage="vote")


def test_fixed_alternation_as_released():
    every_step = FixedAlternation(cycle=1)
    assert every_step.stage == DECISION
    assert [every_step.update(0, 0) for _ in range(4)] == [CLUE, DECISION, CLUE, DECISION]
    slow = FixedAlternation(cycle=3)
    assert [slow.update(0, 0) for _ in range(6)] == [DECISION, DECISION, CLUE, CLUE, CLUE,
                                                     DECISION]
    with pytest.raises(ValueError, match="cycle"):
        FixedAlternation(cycle=0)


def test_fixed_alternation_runs_v_zero_iterations_and_resumes():
    duel = FixedAlternation(cycle=2, stages=("question", "answer"))
    assert [duel.stage] + [duel.update() for _ in range(4)] == [
        "question", "question", "answer", "answer", "question"]
    assert duel.update() == "question" and duel.skip() == "answer"
    assert duel.update() == "answer" and duel.update() == "question"
    resumed = FixedAlternation(stages=("x", "y"))
    resumed.load_state_dict(duel.state_dict())
    assert resumed == duel
    with pytest.raises(ValueError, match="two stages"):
        FixedAlternation(stages=("question",))
