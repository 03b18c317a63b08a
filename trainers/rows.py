"""From finished games to training rows: which turns are trained, with which advantage.

Who Is the Spy (``spy_rows``), one stage at a time (Iterative-SPO: only the active stage gets
gradients):

- ``clue`` stage: every clue turn of every player; advantage = the turn's reward minus the EMA
  baseline of its (game, role) *before* this batch, then the baselines take the batch's mean
  reward per role (:class:`~trainers.advantages.RoleBaselines`). No group normalisation: the
  zero-sum rewards already compare the roles.
- ``decision`` stage: every vote; advantages normalised within the votes of one game (the
  civilians of a round, or the observer's samples): GRPO's group.

The role baselines move on every batch, the decision stage's included (as in the released code),
so they are current when the clue stage comes back.

QA duel (``qa_duel_rows``): the solver's answers of games whose confidence is inside the
difficulty band, normalised within each game's answers (the majority is the label).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.trajectory import GameResult, TurnRecord
from trainers.advantages import RoleBaselines, group_normalize


@dataclass(frozen=True)
class TrainingRow:
    """One turn to train on, and its advantage."""

    turn: TurnRecord
    advantage: float


def spy_rows(results: list[GameResult], stage: str,
             baselines: RoleBaselines) -> list[TrainingRow]:
    """The training rows of ``stage`` ("clue" or "decision") from finished spy games."""
    if stage not in ("clue", "decision"):
        raise ValueError(f"stage must be 'clue' or 'decision', got {stage!r}")
    clues = [t for r in results for t in r.turns if t.phase == "clue"]
    clue_advantages = baselines.advantages([(t.env, t.role) for t in clues],
                                           [t.reward for t in clues])
    if stage == "clue":
        return [TrainingRow(t, a) for t, a in zip(clues, clue_advantages, strict=True)]
    votes = [t for r in results for t in r.turns if t.phase == "decision"]
    advantages = group_normalize([t.game_id for t in votes], [t.reward for t in votes])
    return [TrainingRow(t, a) for t, a in zip(votes, advantages, strict=True)]


def qa_duel_rows(results: list[GameResult]) -> list[TrainingRow]:
    """The solver's answers of the games that pass the difficulty filter, group-normalised."""
    answers = [t for r in results if r.stats.get("in_band") for t in r.turns
               if t.phase == "answer"]
    advantages = group_normalize([t.game_id for t in answers], [t.reward for t in answers])
    return [TrainingRow(t, a) for t, a in zip(answers, advantages, strict=True)]
