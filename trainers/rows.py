"""From finished games to training rows: which turns are trained, with which advantage.

Both functions give the rows of every stage of a batch of games, by stage; a trainer uses the
active stage's (Iterative-SPO, V-Zero: only the active stage gets gradients). ``normalization``
says how GRPO groups are normalised (:class:`~trainers.advantages.GroupNormalization`: the paper's
population std by default, or the released codes' rules).

Who Is the Spy (``spy_rows``):

- ``clue`` stage: every clue turn of every player; advantage = the turn's reward minus the EMA
  baseline of its (game, role), which takes the batch's mean reward per role once; whether the
  baseline before or after that update is subtracted is the baselines' ``order``
  (:class:`~trainers.advantages.RoleBaselines`). No group normalisation: the zero-sum rewards
  already compare the roles.
- ``decision`` stage: every vote; advantages normalised within the votes of one game (the
  civilians of a round, or the observer's samples): GRPO's group. A game of one vote (one
  observer sample) is a group of one: see :class:`~trainers.advantages.GroupNormalization`.

The role baselines move on every batch, the decision stage's included (as in the released code),
so they are current when the clue stage comes back.

QA duel (``qa_duel_rows``), one role per stage (V-Zero: the questioner, then the solver):

- ``question`` stage: every valid or invalid question, normalised within the questions asked
  about one image. Games replayed from one seed (the rollout runner's ``repeats``) show the same
  image and share their ``game_id``: those form the group.
- ``answer`` stage: the solver's answers of games whose confidence is inside the difficulty band,
  normalised within each game's answers (the majority is the label). A duel with a student
  (``student_answers``, two models: ``selfplay.models=separate``) trains the student's answers
  instead, fresh samples scored against the solver's label.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.trajectory import GameResult, TurnRecord
from trainers.advantages import PAPER_NORMALIZATION, GroupNormalization, RoleBaselines


@dataclass(frozen=True)
class TrainingRow:
    """One turn to train on, its advantage, and the version of the policy that sampled it (the
    optimizer steps its weights had taken)."""

    turn: TurnRecord
    advantage: float
    policy_version: int = 0


def spy_rows(results: list[GameResult], baselines: RoleBaselines,
             normalization: GroupNormalization = PAPER_NORMALIZATION,
             ) -> dict[str, list[TrainingRow]]:
    """The training rows of both stages ("clue" and "decision") from finished spy games; the
    role baselines move once."""
    clues = [t for r in results for t in r.turns if t.phase == "clue"]
    clue_advantages = baselines.advantages([(t.env, t.role) for t in clues],
                                           [t.reward for t in clues])
    votes = [t for r in results for t in r.turns if t.phase == "decision"]
    vote_advantages = normalization([t.game_id for t in votes], [t.reward for t in votes])
    return {"clue": _rows(clues, clue_advantages), "decision": _rows(votes, vote_advantages)}


def qa_duel_rows(results: list[GameResult],
                 normalization: GroupNormalization = PAPER_NORMALIZATION,
                 ) -> dict[str, list[TrainingRow]]:
    """The training rows of both stages ("question" and "answer") from finished QA duels: the
    questions, and the answers of in-band games — the student's where the duel has one (its
    answers did not make the label), else the solver's."""
    questions = [t for r in results for t in r.turns if t.phase == "question"]
    question_advantages = normalization([t.game_id for t in questions],
                                        [t.reward for t in questions])
    games = [(number, t) for number, r in enumerate(results) if r.stats.get("in_band")
             for t in r.turns if t.phase == "answer"
             and t.role == ("student" if "student_agreement" in r.stats else "solver")]
    answer_advantages = normalization([number for number, _ in games],
                                      [t.reward for _, t in games])
    return {"question": _rows(questions, question_advantages),
            "answer": _rows([t for _, t in games], answer_advantages)}


def _rows(turns: list[TurnRecord], advantages: list[float]) -> list[TrainingRow]:
    return [TrainingRow(t, a) for t, a in zip(turns, advantages, strict=True)]
