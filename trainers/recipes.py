"""Training recipes: what is particular to one game's training, found by the game's name.

A recipe says which stages a game trains (only the active stage's rows get gradients), how many
times each seed is played (``repeats``: the plays of one seed form GRPO groups), how finished
games become training rows with advantages, and what moves the stage. ``make_recipe(game,
selfplay)`` builds the one registered for a game, with the ``selfplay`` options of ``train.yaml``,
or the default :class:`GroupRecipe`, so that any game whose moves carry rewards trains with no
training code of its own:

- :class:`GroupRecipe` (the default): one stage; each seed played ``repeats`` times; every turn of
  every seat trained, its advantage its reward normalised within the turns of the same seat over
  the plays of one seed (GRPO's group).
- :class:`SpyRecipe` (``spy``, Vision-Zero): the Iterative-SPO stage machine (or the released
  code's fixed alternation) moved by each round's vote accuracy and N/A rate, and the role
  baselines of the clue stage (:func:`trainers.rows.spy_rows`).
- :class:`DuelRecipe` (``qa_duel``, V-Zero): ``cycle`` steps of the questioner, then ``cycle`` of
  the solver; each image is played ``repeats`` times so that its questions form a GRPO group
  (:func:`trainers.rows.qa_duel_rows`). One policy plays both seats (self-play), or, with
  ``selfplay.models=separate``, each role is a model of its own (:data:`MODEL_PHASES`).

**Separate models.** A game may also register how its roles train as models of their own
(:func:`register_model_phases`): a cycle of :class:`ModelPhase` s, each training one model on one
stage of the recipe (:class:`OneStage`) while the other seats play frozen models. The duel's is
V-Zero's loop: the questioner against the frozen solver, then the solver (the duel's student
seat) on fresh answers to the frozen questioner's questions, labelled by the frozen solver's.

Every recipe normalises its GRPO groups as ``selfplay.group_std`` and ``selfplay.singleton_groups``
say (:class:`trainers.advantages.GroupNormalization`); the spy's role baselines follow
``selfplay.baseline_decay`` and ``selfplay.baseline_order``.

A game of one's own registers its recipe beside its environment::

    from trainers.recipes import register_recipe
    register_recipe("count", lambda selfplay: GroupRecipe(repeats=8))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.trajectory import GameResult
from games.registry import Registry
from trainers.advantages import PAPER_NORMALIZATION, GroupNormalization, RoleBaselines
from trainers.rows import TrainingRow, qa_duel_rows, spy_rows
from trainers.schedules import FixedAlternation, IterativeSPO
from trainers.selfplay_config import SelfPlayConfig


class Recipe(Protocol):
    """A game's training: its stages, how finished games become rows, what moves the stage."""

    stages: tuple[str, ...]
    repeats: int

    @property
    def stage(self) -> str: ...

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]: ...

    def observe(self, statistics: dict[str, float]) -> None: ...

    def skip(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class SpyRecipe:
    """Vision-Zero's training of Who Is the Spy (see the module docstring)."""

    schedule: IterativeSPO | FixedAlternation
    baselines: RoleBaselines
    normalization: GroupNormalization = PAPER_NORMALIZATION
    stages: tuple[str, ...] = ("decision", "clue")
    repeats: int = 1

    @property
    def stage(self) -> str:
        return self.schedule.stage

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        return spy_rows(results, self.baselines, self.normalization)

    def observe(self, statistics: dict[str, float]) -> None:
        self.schedule.update(statistics["vote_accuracy"], statistics["na_rate"])

    def skip(self) -> None:
        raise RuntimeError("every spy game has clue and vote turns: a stage without rows means "
                           "no game finished")

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "baselines": self.baselines.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.baselines.load_state_dict(state["baselines"])


@dataclass
class DuelRecipe:
    """V-Zero's Questioner/Solver iterations on one shared policy (see the module docstring).
    When no question lands in the difficulty band, the solver has nothing to learn from and its
    stage is skipped."""

    schedule: FixedAlternation
    repeats: int = 4
    normalization: GroupNormalization = PAPER_NORMALIZATION
    stages: tuple[str, ...] = ("question", "answer")

    def __post_init__(self) -> None:
        if tuple(self.schedule.stages) != self.stages:
            raise ValueError(f"the duel's schedule must alternate {self.stages}, "
                             f"not {self.schedule.stages}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    @property
    def stage(self) -> str:
        return self.schedule.stage

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        return qa_duel_rows(results, self.normalization)

    def observe(self, statistics: dict[str, float]) -> None:
        self.schedule.update()

    def skip(self) -> None:
        self.schedule.skip()

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])


@dataclass
class GroupRecipe:
    """Any game's training (see the module docstring): one stage, every turn a model played."""

    repeats: int = 4
    normalization: GroupNormalization = PAPER_NORMALIZATION
    stages: tuple[str, ...] = ("play",)
    stage: str = field(default="play", init=False)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        turns = [t for r in results for t in r.turns if t.completion_ids]
        advantages = self.normalization([(t.game_id, t.seat) for t in turns],
                                        [t.reward for t in turns])
        return {"play": [TrainingRow(t, a) for t, a in zip(turns, advantages, strict=True)]}

    def observe(self, statistics: dict[str, float]) -> None:
        pass

    def skip(self) -> None:
        raise RuntimeError("no game of the round had a turn played by the model to train on")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


#: Recipe builders by game name, each called with the ``selfplay`` options.
RecipeFactory = Callable[[SelfPlayConfig], Recipe]
RECIPES: Registry[RecipeFactory] = Registry("recipe for the game")


def register_recipe(game: str, factory: RecipeFactory, *, replace: bool = False) -> None:
    """Train the game called ``game`` with ``factory(selfplay_options)``."""
    RECIPES.register(game, factory, replace=replace)


@dataclass
class OneStage:
    """One stage of ``recipe`` and no other (a phase of separate models trains one role): its
    rows only, no stage machine; a stage without rows is an error rather than a skip."""

    recipe: Recipe
    stage: str

    def __post_init__(self) -> None:
        if self.stage not in self.recipe.stages:
            raise ValueError(f"no stage {self.stage!r}; stages: {self.recipe.stages}")
        self.stages, self.repeats = (self.stage,), self.recipe.repeats

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        return {self.stage: self.recipe.rows(results)[self.stage]}

    def observe(self, statistics: dict[str, float]) -> None:
        pass

    def skip(self) -> None:
        raise RuntimeError(f"the {self.stage!r} phase trains that stage only, and its games gave "
                           f"too few rows for a step (see selfplay.rounds_per_stage)")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class ModelPhase:
    """A phase of separate models: the recipe's ``stage`` trains the model called ``model``,
    which plays the seat ``plays``; each seat of ``frozen`` is played by the latest weights of the
    model it names, frozen for the phase; ``env`` overrides game options for the phase."""

    stage: str
    model: str
    plays: str
    frozen: dict[str, str]
    env: dict[str, Any] = field(default_factory=dict)


#: The cycle of phases by game name, each built from the ``selfplay`` options.
MODEL_PHASES: Registry[Callable[[SelfPlayConfig], tuple[ModelPhase, ...]]] = Registry(
    "two-model loop (selfplay.models=separate) for the game")


def register_model_phases(game: str, phases: Callable[[SelfPlayConfig], tuple[ModelPhase, ...]],
                          *, replace: bool = False) -> None:
    """Train the roles of ``game`` as separate models in the cycle ``phases(selfplay)``."""
    MODEL_PHASES.register(game, phases, replace=replace)


def make_recipe(game: str, selfplay: SelfPlayConfig) -> Recipe:
    """The recipe registered for ``game``, else :class:`GroupRecipe` with ``selfplay.repeats``
    plays of each seed."""
    if game in RECIPES:
        return RECIPES[game](selfplay)
    return GroupRecipe(repeats=selfplay.repeats, normalization=group_normalization(selfplay))


def group_normalization(selfplay: SelfPlayConfig) -> GroupNormalization:
    """How ``selfplay``'s options normalise GRPO groups."""
    return GroupNormalization(std=selfplay.group_std, singletons=selfplay.singleton_groups)


def _spy(selfplay: SelfPlayConfig) -> SpyRecipe:
    schedule = (IterativeSPO(min_steps=selfplay.min_steps, **selfplay.switch)
                if selfplay.schedule == "paper" else FixedAlternation(cycle=selfplay.cycle))
    return SpyRecipe(schedule, RoleBaselines(decay=selfplay.baseline_decay,
                                             order=selfplay.baseline_order),
                     group_normalization(selfplay))


def _duel(selfplay: SelfPlayConfig) -> DuelRecipe:
    return DuelRecipe(FixedAlternation(cycle=selfplay.cycle, stages=("question", "answer")),
                      repeats=selfplay.questions_per_image,
                      normalization=group_normalization(selfplay))


def _duel_models(selfplay: SelfPlayConfig) -> tuple[ModelPhase, ...]:
    return (ModelPhase("question", "questioner", plays="questioner_1",
                       frozen={"solver_1": "solver"}),
            ModelPhase("answer", "solver", plays="student_1",
                       frozen={"questioner_1": "questioner", "solver_1": "solver"},
                       env={"student_answers": selfplay.student_answers}))


register_recipe("spy", _spy)
register_recipe("qa_duel", _duel)
register_model_phases("qa_duel", _duel_models)
