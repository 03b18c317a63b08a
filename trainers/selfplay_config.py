"""The ``selfplay`` options of ``train.py``: how games are played for training rows and how the
game's recipe turns them into rows. The one source of their defaults (``train.py`` puts them in
Hydra's config store; ``--cfg job`` prints them) and of their checks, each error naming its field.

**Paper or released code.** Where the project follows a paper (or its own choice) rather than the
paper's released code, each difference is a switch of its own, here (how rows get advantages) or
in the game's config (its rules): each says which of its values is the paper's and which the
released code's, whose numbers it then reproduces. One switch per difference rather than one
flag in the code, because the differences are independent (one may want the released code's
baseline order with the paper's vote), and because such a flag would have to reach into two
config groups (``selfplay`` and ``env``) and mean different things per game. To set them all at
once for the game being trained, ``train.py fidelity=released`` picks a Hydra preset,
``configs/fidelity/game/<env>_released.yaml``, that lists every value (any key set on the command
line still wins); ``fidelity=paper``, the default, changes nothing. Defaults are the paper's
(``configs/recipe/spy.yaml`` trains the spy game with the released code's observer vote).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from games.checks import check_choice, check_int, check_number
from trainers.advantages import BASELINE_ORDERS, GROUP_STDS, SINGLETON_RULES
from trainers.schedules import IterativeSPO

#: Iterative-SPO's stage switch set for the tiny player, whose votes start near 0.3. For real
#: models take the paper's (:class:`trainers.schedules.IterativeSPO`'s defaults): rho 0.95,
#: to_clue_accuracy 0.9, to_clue_na 0.1, to_decision_error 0.4, to_decision_na 0.5.
TINY_PLAYER_SWITCH = {"rho": 0.8, "to_clue_accuracy": 0.3, "to_clue_na": 0.1,
                      "to_decision_error": 0.75, "to_decision_na": 0.5}


@dataclass
class SelfPlayConfig:
    """``selfplay.*`` (``trainers/selfplay.py`` plays the rounds, ``trainers/recipes.py`` makes
    the rows)."""

    #: Games played with the current policy whenever a step needs rows.
    games_per_round: int = 16
    #: spy: ``paper`` (Iterative-SPO's switch on vote accuracy) or ``alternate`` (the released
    #: code's fixed alternation of stages).
    schedule: str = "paper"
    #: spy, paper: the fewest steps in a stage.
    min_steps: int = 5
    #: spy, paper: when to switch stages: moving averages (``rho``) of vote accuracy and N/A rate;
    #: decision -> clue when accuracy >= ``to_clue_accuracy`` and N/A <= ``to_clue_na``; clue ->
    #: decision when 1 - accuracy >= ``to_decision_error`` or N/A >= ``to_decision_na``.
    switch: dict[str, float] = field(default_factory=lambda: dict(TINY_PLAYER_SWITCH))
    #: Steps per stage when alternating (the spy's ``alternate``; the duel always alternates).
    cycle: int = 1
    #: spy: the EMA decay of the role baselines (paper 0.95, released code 0.9).
    baseline_decay: float = 0.95
    #: spy: the role baseline a clue's advantage subtracts: ``subtract_then_update`` the one before
    #: the round's rewards move it (SPIRAL's order, the paper) or ``update_then_subtract`` the one
    #: they moved it to (the released code).
    baseline_order: str = "subtract_then_update"
    #: GRPO groups (votes of one game, questions about one image, answers of one game): divided by
    #: the ``population`` std (eps 1e-8: the paper's formula, Vision-Zero's released code) or the
    #: ``sample`` std (ddof 1, eps 1e-6: verl's GRPO in V-Zero's released code).
    group_std: str = "population"
    #: A GRPO group of one member (a spy game's only vote, an image asked once): advantage
    #: ``zero`` (nothing to compare it with) or its ``reward`` (both released codes).
    singleton_groups: str = "zero"
    #: qa_duel: plays of one image, the questioner's GRPO group.
    questions_per_image: int = 4
    #: ``shared``: one policy plays and learns every seat (self-play, the default: one model to
    #: hold and serve). ``separate`` (qa_duel; V-Zero's released loop): one model per role,
    #: trained in turn in phases of ``cycle`` steps, each against the others' latest weights,
    #: frozen (``train.py`` explains the phases).
    models: str = "shared"
    #: ``models=separate``, qa_duel: fresh answers per question of the solver in training (the
    #: duel's student), scored against the label of the previous solver's answers (V-Zero: 5).
    student_answers: int = 5
    #: Games without a recipe of their own: plays of one seed, the GRPO group of a seat's turns.
    repeats: int = 4
    #: Rounds a step may play for its stage's rows before the stage is skipped (the duel's solver
    #: when no question is in the band).
    rounds_per_stage: int = 8
    #: One step off: the next step's games play during this step's update (``agent=vllm_server``
    #: only; rows at most one policy version old).
    asynchronous: bool = False
    #: The most optimizer steps between a row's sampling and its training (1 with
    #: ``asynchronous``): rows a step does not take wait that long. Above 1 it lets a round play
    #: ahead for several steps (``games_per_round`` above the games a step needs), at the speed
    #: of many games at once, on rows weighted for their lag (``trainer.importance_cap``).
    max_policy_lag: int = 1

    def __post_init__(self) -> None:
        check_int("games_per_round", self.games_per_round, 1)
        check_choice("schedule", self.schedule, ("paper", "alternate"))
        check_int("min_steps", self.min_steps, 0)
        if not isinstance(self.switch, dict):
            raise ValueError(f"switch must be a mapping of {', '.join(TINY_PLAYER_SWITCH)}, "
                             f"got {self.switch!r}")
        try:
            IterativeSPO(min_steps=self.min_steps, **self.switch)
        except (TypeError, ValueError) as error:
            raise ValueError(f"switch.{error}") from None
        check_int("cycle", self.cycle, 1)
        check_number("baseline_decay", self.baseline_decay, 0)
        if self.baseline_decay >= 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay!r}")
        check_choice("baseline_order", self.baseline_order, BASELINE_ORDERS)
        check_choice("group_std", self.group_std, GROUP_STDS)
        check_choice("singleton_groups", self.singleton_groups, SINGLETON_RULES)
        check_int("questions_per_image", self.questions_per_image, 1)
        check_choice("models", self.models, ("shared", "separate"))
        check_int("student_answers", self.student_answers, 1)
        check_int("repeats", self.repeats, 1)
        check_int("rounds_per_stage", self.rounds_per_stage, 1)
        if not isinstance(self.asynchronous, bool):
            raise ValueError(f"asynchronous must be true or false, got {self.asynchronous!r}")
        check_int("max_policy_lag", self.max_policy_lag, 1 if self.asynchronous else 0)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))



def store_selfplay_defaults() -> None:
    """Puts the defaults in Hydra's config store as ``selfplay_defaults`` (``train.yaml``'s
    defaults list merges it at ``selfplay``: ``selfplay_defaults@selfplay``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="selfplay_defaults",
                                 node=dataclasses.asdict(SelfPlayConfig()))
