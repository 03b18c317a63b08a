"""QA duel — V-Zero's Questioner and Solver over one unlabeled image.

=================  =====================================================================
Seats              ``questioner_1``, ``solver_1`` (and ``student_1`` if ``student_answers``)
Phases             ``question`` (one turn), then ``answer`` (``num_answers`` turns, default 10,
                   and ``student_answers`` turns of the student, default 0)
Images             every seat sees the same image
=================  =====================================================================

**Question.** The questioner writes, in this exact format::

    <description>what the image shows</description>
    <question>The question?
    A) first option
    B) second option
    C) third option
    D) fourth option</question>
    <answer>B</answer>

Options are four lines starting ``A)`` .. ``D)`` (``A.``, ``A:`` and ``(A)`` are accepted too), in
order, after a non-empty question stem; the answer is a single letter, the questioner's
*intuitive* answer, given without working it out. Anything else is an invalid question: reward
-1 and the game ends with no answers. Letters are capitals; ``lowercase_letters=True`` also
reads a-d, in the questioner's answer and the solver's (as released).

**Answers.** The solver answers ``num_answers`` times, reasoning first and giving the final
letter in ``\\boxed{}`` (``<answer>X</answer>`` is accepted too). The pseudo-label is the
majority letter over valid answers; a tie goes to the letter answered first (as released: the
answers are exchangeable samples, so this picks uniformly among the tied letters, with no draw
from the game's generator and no pull towards "A"). Its confidence ``c`` is its count over *all*
answers, invalid ones included (as released). A solver answer earns 1 if it matches the
pseudo-label, else 0.

**Questioner reward** (``questioner_reward``, pluggable): ``"dual_track"`` (V-Zero):
``min(c, 1 - c)`` if the intuitive answer equals the majority, else ``0.5·c``; ``"uncertainty"``
(R-Zero): ``min(c, 1 - c)`` whatever the intuitive answer. Known exploit of dual-track: an easy
question with a deliberately wrong intuitive answer gets ``0.5·1 = 0.5``, the maximum. V-Zero's
defence is downstream: the difficulty filter drops such questions from the solver's training.
Which majority and ``c`` the reward reads is ``answer_votes``: ``"letters"`` (the default, the
paper's: the pseudo-label and its confidence) or ``"boxed_text"`` (the released reward server):
each answer votes with the text of its *last* ``\\boxed{`` if that box closes, verbatim ("B",
"b" and "B) 30" are three answers; an empty box votes for nothing), an answer without one votes
"None", which can win: the questioner then earns 0. ``c`` is the winner's count over all answers
(ties: the answer given first); it agrees with the intuitive letter when it is that letter up to
case, spaces, brackets and LaTeX commands ("b", "(B)", "\\text{B}": mathruler's
``grade_answer`` against one letter, short of its sympy cases).

**Paper or released code.** ``answer_votes="boxed_text"`` with ``lowercase_letters=True``
reproduces the released code's questioner reward (``train.py fidelity=released`` sets both).
Letters stay capitals by default: the prompts ask for capitals, and a lower-case reading also
takes the article of "a cube" for option A. Not switchable: the released format check only looks
for "A)".."D)" in the question and takes the first capital of the answer as the intuitive letter
("Option B" reads "O"); its pseudo-labels come from other solver samples than its rewards.

**Student** (``student_answers``, default 0: none). V-Zero trains its solver on fresh answers
labelled by the previous solver's majority, not on the answers that made the label. A third seat,
``student_1`` (role ``student``), answers the same question ``student_answers`` times beside the
solver's answers; its answers do not vote, and each earns 1 if it matches the pseudo-label, else
0. ``train.py selfplay.models=separate`` seats the solver in training there.

**Difficulty filter.** A game's ``in_band`` statistic is 1 when ``band[0] <= c <= band[1]``
(default 0.3 to 0.8; ``c`` the pseudo-label's confidence); trainers keep only those games'
answers for the solver.

**Statistics**: ``valid_question``, ``confidence`` (the pseudo-label's), ``agrees`` (the
reward's majority names the intuitive letter), ``in_band``, ``valid_answer_rate``; with a
student, ``student_agreement`` (the share of its answers that match the pseudo-label).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from games.checks import check_choice, check_int, check_number
from games.core import Game, Move, PromptTemplates, Turn
from games.images import ImageSource, SceneImage
from games.parsing import last_boxed, parse_choice, parse_letter, tagged

QUESTION_PROMPT = """\
Look at this {noun} and write one multiple-choice question about it that takes careful looking \
and reasoning to answer, with exactly four options of which exactly one is right.
First describe the {noun} in detail, then write the question with its four options, then give \
the answer you believe at first sight, without working it out.
Answer in exactly this format and nothing else:
<description>what the {noun} shows</description>
<question>the question
A) first option
B) second option
C) third option
D) fourth option</question>
<answer>one letter: A, B, C or D</answer>"""

ANSWER_PROMPT = """\
Answer this multiple-choice question about the {noun}.
{question}

Think it through step by step inside <think></think>, then give your final answer as a single \
letter A, B, C or D inside \\boxed{{}}, for example \\boxed{{C}}."""

PROMPT_FIELDS = {"question": frozenset({"noun"}), "answer": frozenset({"noun", "question"})}
PROMPTS = PromptTemplates({"question": QUESTION_PROMPT, "answer": ANSWER_PROMPT}, PROMPT_FIELDS)
NOUNS = {"scenes": "picture", "charts": "chart", "photos": "image"}
LETTERS = ("A", "B", "C", "D")
# linear time: the indent stays within its line (^\s* would rescan every run of blank lines from
# each of its line starts) and the text is greedy (.*?\s*$ rescans trailing spaces)
_OPTION = re.compile(r"^[^\S\n]*\(?([A-D])[).:]\s*(\S.*)$", re.MULTILINE)

#: How the solver's answers vote for the questioner's reward (see the module docstring).
ANSWER_VOTES = ("letters", "boxed_text")
#: The vote of an answer without a closed last box under ``answer_votes="boxed_text"`` (the
#: released server's word for it, which a ``\\boxed{None}`` matches too).
NO_BOX = "None"
_NOT_A_LETTER = re.compile(r"\\[A-Za-z]+|[\s()\[\]{}]")

QuestionerReward = Callable[[float, bool], float]
QUESTIONER_REWARDS: dict[str, QuestionerReward] = {
    "dual_track": lambda c, agrees: min(c, 1.0 - c) if agrees else 0.5 * c,
    "uncertainty": lambda c, agrees: min(c, 1.0 - c),
}


@dataclass(frozen=True)
class Question:
    """A parsed question: the stem, the four options and the questioner's intuitive letter."""

    stem: str
    options: dict[str, str]
    intuitive: str

    def text(self) -> str:
        return self.stem + "\n" + "\n".join(f"{k}) {v}" for k, v in self.options.items())


def parse_question(text: str, lowercase: bool = False) -> Question | None:
    """Read a questioner's answer in the documented format; None if it is not exactly that
    (``lowercase``: the intuitive answer may be a lower-case letter)."""
    body, answer = tagged(text, "question"), tagged(text, "answer")
    if body is None or answer is None:
        return None
    intuitive = parse_letter(answer, lowercase)
    options = _OPTION.findall(body)
    if intuitive is None or len(answer) > 3 or [k for k, _ in options] != list(LETTERS):
        return None
    stem = " ".join(body[: _OPTION.search(body).start()].split())
    if not stem:
        return None
    return Question(stem, {k: " ".join(v.split()) for k, v in options}, intuitive)


@dataclass
class QADuelConfig:
    """Options of :class:`QADuelGame` (see the module docstring)."""

    num_answers: int = 10
    student_answers: int = 0
    questioner_reward: str | QuestionerReward = "dual_track"
    band: tuple[float, float] = (0.3, 0.8)
    answer_votes: str = "letters"
    lowercase_letters: bool = False
    images: dict[str, Any] = field(default_factory=lambda: {"source": "clevr"})
    prompts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int("num_answers", self.num_answers, 1)
        check_int("student_answers", self.student_answers, 0)
        check_choice("answer_votes", self.answer_votes, ANSWER_VOTES)
        if not isinstance(self.lowercase_letters, bool):
            raise ValueError(f"lowercase_letters must be true or false, got "
                             f"{self.lowercase_letters!r}")
        if isinstance(self.questioner_reward, str):
            if self.questioner_reward not in QUESTIONER_REWARDS:
                raise ValueError(f"questioner_reward must be one of {sorted(QUESTIONER_REWARDS)} "
                                 f"or a callable, got {self.questioner_reward!r}")
        elif not callable(self.questioner_reward):
            raise ValueError("questioner_reward must be a name or a callable (c, agrees) -> float")
        self.band = tuple(self.band)
        if len(self.band) != 2:
            raise ValueError(f"band must be (low, high), got {self.band!r}")
        for bound in self.band:
            check_number("band", bound, minimum=0)
        if not self.band[0] <= self.band[1] <= 1:
            raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {self.band!r}")
        self.templates = PROMPTS.with_overrides(self.prompts)

    def reward_rule(self) -> QuestionerReward:
        rule = self.questioner_reward
        return QUESTIONER_REWARDS[rule] if isinstance(rule, str) else rule


class QADuelGame(Game):
    """One question and its answers; see the module docstring for the rules."""

    name = "qa_duel"
    config_class = QADuelConfig
    needs = "images"
    config: QADuelConfig

    def __init__(self, config: QADuelConfig, source: ImageSource, rng: np.random.Generator,
                 game_id: str):
        super().__init__(config, source, rng, game_id)
        self.image: SceneImage = source.sample_image(rng)
        self._noun = NOUNS.get(source.domain, "image")
        self.question: Question | None = None
        self.pseudo_label: str | None = None
        self._stats: dict[str, float] = {}
        self._rewards: dict[str, float] = {}
        prompt = config.templates.render("question", noun=self._noun)
        context = {"game": "qa_duel", "role": "questioner", "scene": self.image.description}
        self._ask("questioner_1", "questioner", "question", 0, prompt, (self.image.image,),
                  context)

    @classmethod
    def seats(cls, config: QADuelConfig) -> tuple[str, ...]:
        return ("questioner_1", "solver_1") + (("student_1",) if config.student_answers else ())

    @property
    def roles(self) -> dict[str, str]:
        return {seat: seat.removesuffix("_1") for seat in self.seats(self.config)}

    @property
    def seat_images(self) -> dict[str, tuple[np.ndarray, ...]]:
        return {seat: (self.image.image,) for seat in self.seats(self.config)}

    def _judge(self, turn: Turn, text: str | None) -> Move:
        if turn.phase == "question":
            self.question = (None if text is None
                             else parse_question(text, self.config.lowercase_letters))
            if self.question is None:
                return Move(turn, text or "", valid=False, shown="invalid question", reward=-1.0)
            shown = f"{self.question.text()}\n(intuitive answer: {self.question.intuitive})"
            return Move(turn, text, valid=True, shown=shown, value=self.question.intuitive)
        letter = None if text is None else parse_choice(text, self.config.lowercase_letters)
        return Move(turn, text or "", valid=letter is not None,
                    shown=f"answer: {letter}" if letter else "invalid answer", value=letter)

    def _advance(self) -> None:
        if self.question is not None and not self.moves_of(phase="answer"):
            prompt = self.config.templates.render("answer", noun=self._noun,
                                                  question=self.question.text())
            context = {"game": "qa_duel", "role": "solver", "scene": self.image.description,
                       "question": self.question.stem, "options": self.question.options}
            for _ in range(self.config.num_answers):
                self._ask("solver_1", "solver", "answer", 0, prompt, (self.image.image,), context)
            for _ in range(self.config.student_answers):  # the same question, apart from the vote
                self._ask("student_1", "student", "answer", 0, prompt, (self.image.image,),
                          context | {"role": "student"})
            return
        self._finish()

    def _finish(self) -> None:
        answers = sorted(self.moves_of("solver_1", "answer"), key=lambda m: m.turn.index)
        student = self.moves_of("student_1", "answer")
        label, count = _majority([m.value for m in answers if m.valid])
        confidence = count / len(answers) if answers else 0.0
        vote, share = label, confidence
        if self.config.answer_votes == "boxed_text":
            vote, count = _majority([v for v in (_boxed_text(m.text) for m in answers) if v])
            share = count / len(answers) if answers else 0.0
        agrees = (self.question is not None and vote is not None
                  and _NOT_A_LETTER.sub("", vote).upper() == self.question.intuitive)
        question_move = self.moves[0]
        if self.question is not None:
            question_move.reward = (0.0 if vote == NO_BOX  # only a boxed_text vote can be
                                    else float(self.config.reward_rule()(share, agrees)))
        for move in answers + student:
            move.reward = float(label is not None and move.value == label)
        self._rewards = {"questioner_1": question_move.reward,
                         "solver_1": float(np.mean([m.reward for m in answers])) if answers
                         else 0.0}
        if self.config.student_answers:
            self._rewards["student_1"] = (float(np.mean([m.reward for m in student])) if student
                                          else 0.0)
        low, high = self.config.band
        self._stats = {
            "valid_question": float(self.question is not None),
            "confidence": confidence,
            "agrees": float(agrees),
            "in_band": float(self.question is not None and low <= confidence <= high),
            "valid_answer_rate": (sum(m.valid for m in answers) / len(answers)) if answers
            else 0.0,
        }
        if self.config.student_answers:
            self._stats["student_agreement"] = self._rewards["student_1"]
        self.pseudo_label = label

    def seat_rewards(self) -> dict[str, float]:
        return dict(self._rewards)

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def check_invariants(self) -> None:
        """Once the game is over: an invalid question scores -1 and ends the game; a named
        questioner reward lies in [0, 0.5]; an answer (solver or student) earns 0 or 1, an
        invalid one 0."""
        if not self.done:
            return
        question, answers = self.moves[0], self.moves[1:]
        if not question.valid:
            assert question.reward == -1.0 and not answers, (
                f"an invalid question scored {question.reward} and was followed by "
                f"{len(answers)} answers")
        elif isinstance(self.config.questioner_reward, str):
            assert 0.0 <= question.reward <= 0.5, (
                f"questioner reward {question.reward} is outside [0, 0.5]")
        for move in answers:
            assert move.reward in ((0.0, 1.0) if move.valid else (0.0,)), (
                f"turn {move.turn.index}: {'valid' if move.valid else 'invalid'} answer "
                f"rewarded {move.reward}")


def _majority(votes: list[str]) -> tuple[str | None, int]:
    """The most frequent vote and its count; a tie goes to the vote given first (a ``Counter``
    keeps the order votes first came in, and ``max`` the first of equals)."""
    counts = Counter(votes)
    if not counts:
        return None, 0
    winner = max(counts, key=counts.__getitem__)
    return winner, counts[winner]


def _boxed_text(text: str) -> str:
    """An answer's vote under ``answer_votes="boxed_text"``: the stripped content of its last
    ``\\boxed{`` if that box closes, else :data:`NO_BOX` (mathruler's ``extract_boxed_content``,
    which the released server reads answers with)."""
    start = text.rfind("\\boxed{")
    content = None if start == -1 else last_boxed(text[start:])
    return NO_BOX if content is None else content
