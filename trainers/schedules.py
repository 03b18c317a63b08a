"""Which stage of Who Is the Spy is trained: Iterative-SPO's switch between clues and decisions.

Vision-Zero trains one stage at a time: the *decision* stage (votes, verifiable rewards) until the
civilians vote well, then the *clue* stage (zero-sum self-play) until the spy gets hard to find,
and back. The paper's rule (Eq. 7-10, Algorithm 1): exponential moving averages (``rho`` = 0.95,
both starting at 0) of the vote accuracy and the N/A rate; decision -> clue when accuracy >= 0.9
and N/A <= 0.1; clue -> decision when the error (1 - accuracy) >= 0.4 or N/A >= 0.5; a stage is
kept at least ``min_steps`` = 5 updates; decision first. Only the active stage gets gradients.
The released code instead alternates every ``cycle`` steps (``FixedAlternation``, cycle 1 in its
script). ``FixedAlternation`` with other stage names also runs V-Zero's loop: ``cycle`` steps of
the questioner, then ``cycle`` of the solver, per iteration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from games.checks import check_int, check_number

DECISION, CLUE = "decision", "clue"


@dataclass
class IterativeSPO:
    """The paper's hysteresis switch. Call :meth:`update` once per training step with that
    step's vote accuracy and N/A rate; :attr:`stage` is the stage to train next."""

    rho: float = 0.95
    to_clue_accuracy: float = 0.9
    to_clue_na: float = 0.1
    to_decision_error: float = 0.4
    to_decision_na: float = 0.5
    min_steps: int = 5
    stage: str = DECISION
    accuracy: float = 0.0
    na_rate: float = 0.0
    steps_in_stage: int = 0

    def __post_init__(self) -> None:
        for name in ("rho", "to_clue_accuracy", "to_clue_na", "to_decision_error",
                     "to_decision_na"):
            check_number(name, getattr(self, name), minimum=0)
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        check_int("min_steps", self.min_steps, 0)
        if self.stage not in (DECISION, CLUE):
            raise ValueError(f"stage must be {DECISION!r} or {CLUE!r}, got {self.stage!r}")

    def update(self, accuracy: float, na_rate: float) -> str:
        """Fold one step's statistics into the averages and return the stage to train next."""
        self.accuracy = self.rho * self.accuracy + (1 - self.rho) * accuracy
        self.na_rate = self.rho * self.na_rate + (1 - self.rho) * na_rate
        self.steps_in_stage += 1
        if self.steps_in_stage >= self.min_steps:
            if self.stage == DECISION and (self.accuracy >= self.to_clue_accuracy
                                           and self.na_rate <= self.to_clue_na):
                self._switch(CLUE)
            elif self.stage == CLUE and (1 - self.accuracy >= self.to_decision_error
                                         or self.na_rate >= self.to_decision_na):
                self._switch(DECISION)
        return self.stage

    def _switch(self, stage: str) -> None:
        self.stage, self.steps_in_stage = stage, 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


@dataclass
class FixedAlternation:
    """``cycle`` steps of the first stage, then ``cycle`` of the second, and again: the released
    Vision-Zero code's schedule (decision, clue) or V-Zero's iterations (question, answer)."""

    cycle: int = 1
    step: int = 0
    stages: tuple[str, str] = (DECISION, CLUE)

    def __post_init__(self) -> None:
        check_int("cycle", self.cycle, 1)
        self.stages = tuple(self.stages)
        if len(self.stages) != 2:
            raise ValueError(f"stages must name two stages, got {self.stages!r}")

    @property
    def stage(self) -> str:
        return self.stages[0] if self.step % (2 * self.cycle) < self.cycle else self.stages[1]

    def update(self, *statistics: float) -> str:
        """Count one step (statistics do not matter) and return the stage to train next."""
        self.step += 1
        return self.stage

    def skip(self) -> str:
        """Move on to the start of the other stage (when this one has nothing to train on)."""
        self.step = (self.step // self.cycle + 1) * self.cycle
        return self.stage

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.cycle, self.step = state["cycle"], state["step"]
        self.stages = tuple(state["stages"])
