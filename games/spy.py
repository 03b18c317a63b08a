"""Who Is the Spy — Vision-Zero's game over an image pair.

=================  =====================================================================
Seats              ``player_1`` .. ``player_N`` (default N = 4); ``observer_1`` in observer mode
Roles              ``spy`` (default 1 of them), ``civilian``, ``observer``
Phases             ``clue`` (``num_rounds`` rounds, seat order), then ``decision``
Images             civilians and the observer see the original; spies the modified image
                   (``spy_image="blank"``: a blank image, as in the paper's main text)
=================  =====================================================================

**Clue phase.** In each round every player, in seat order, gives one clue: the content of the last
``\\boxed{...}`` of its answer (whitespace collapsed, at most ``max_clue_chars``). Each player sees
every earlier clue and only its *own* earlier reasoning (its text before ``\\boxed{``). An answer
with no usable clue is an invalid move: the others read "No valid clue provided." and the move is
charged ``invalid_clue_penalty`` (not in the paper; garbage must cost something).

**Decision phase.** ``decision="civilians"`` (the paper): each civilian, seeing its own image and
all clues, votes a player number or N/A at the same time; spies do not vote.
``decision="observer"`` (the released code): one observer seat sees the original image and all
clues and answers ``observer_samples`` times; each sample is a vote. Votes are read from the last
``\\boxed{}``, else ``<answer>``; "N/A" abstains; a number that is no player, or the voter itself,
is an invalid vote.

**Rewards.** Clue phase, zero-sum (paper Eq. 1): with v_s the votes received by a spy, v_cj by
civilian j, v̄_c their mean over the n_c civilians (N/A and invalid votes count for no one),
``r_s = -β (v_s - v̄_c)`` and ``r_cj = (β / n_c) Σ_s (v_s - v̄_c) - λ (v_cj - v̄_c)``,
β = λ = 0.1; every clue move of a player gets the player's reward. Decision phase, per vote:
``decision_reward="paper"``: +1 a spy, -0.5 N/A, -1 wrong or invalid; ``"shaped"`` (the
released code): ``0.3·(±1 format) + 1.2·a + 0.99·[a > 0]`` with ``a`` the paper value and the
format good when the reasoning before ``\\boxed{}`` is longer than 10 characters and the box is not
empty. A seat's episode return is its clue reward, its penalties and its vote's reward (the
observer: the mean over its samples).

**Paper or released code** (the paper's value first): ``decision`` ``"civilians"`` or
``"observer"``; ``decision_reward`` ``"paper"`` or ``"shaped"``; ``spy_image`` ``"blank"`` (the
paper's main text) or ``"modified"`` (its appendix and the released code; the default);
``invalid_clue_penalty`` 0.5 (the project's) or 0 (the released code has none: an invalid clue
only shows the placeholder). When stages switch and how turns become advantages is the
trainer's (``selfplay.*``: ``schedule``, ``baseline_decay``, ``baseline_order``,
``singleton_groups``). ``train.py fidelity=released`` sets them all to the released code's values.

**Statistics** (:meth:`SpyGame.stats`): ``vote_accuracy``, ``na_rate``, ``invalid_vote_rate`` over
all votes, ``spy_caught`` (a spy has strictly the most votes), ``invalid_clue_rate``: what a trainer
needs for Iterative-SPO; turns carry role, phase, round, seat and game id for role baselines.

**Prompts** are the templates ``clue``, ``vote`` and ``observer``; override any of them with
``prompts={"clue": "..."}`` using the fields listed in ``PROMPT_FIELDS``. Their wording follows the
image source's domain (``scenes``, ``charts``, ``photos``). ``prompt_layout`` picks the set:
``seat_first`` (the default, which the tiny player learnt) opens each prompt with the seat, the
round and the role; ``shared_first`` puts first what many turns share, so that an engine's prefix
cache serves it: the rules for the seat's role, the public transcript of clues (each turn's extends
the last one's), and only then the seat, its own earlier reasoning and the turn's instruction. All
civilians see one image, so their turns, and each spy's own turns, share the longest prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from games.checks import check_choice, check_int, check_number
from games.core import Game, Move, PromptTemplates, Turn
from games.images import ImagePair, ImageSource
from games.parsing import last_boxed, parse_vote, text_before_last_boxed

INVALID_CLUE = "No valid clue provided."

CLUE_PROMPT = """\
You are Player {player} in a game of "Who Is the Spy?" with {num_players} players. \
This is clue round {round} of {num_rounds}.
{setup} {difference}
Your role: {role}. {role_rules}

Give one clue: a single sentence about your {noun} that is different from the clues already given.
Think it through privately first, then write only the clue inside \\boxed{{}}, for example \
\\boxed{{The small red cube is left of the large blue sphere.}}

{history}"""

VOTE_PROMPT = """\
You are Player {player} in a game of "Who Is the Spy?" with {num_players} players. \
The clue rounds are over: now vote.
{setup} {difference}
Your role: CIVILIAN. The {noun} shown here is the one most players saw.

All clues:
{clues}

Which player is the spy? Compare every clue with your {noun}: a clue that does not fit it, or one \
that stays vague, points to the spy. You may not vote for yourself. Reason first, then give the \
player's number inside \\boxed{{}}, for example \\boxed{{2}}. If you cannot tell, answer \
\\boxed{{N/A}}: it costs less than a wrong vote."""

OBSERVER_PROMPT = """\
You are the judge of a game of "Who Is the Spy?": {num_players} players have just given clues \
about the {noun} they were shown.
{setup} {difference}
The {noun} shown here is the ORIGINAL one that the non-spies saw.

All clues:
{clues}

Which player is the spy? Look for clues that do not fit this {noun}, vague or evasive clues, and \
clues that contradict the majority. Reason first, then give the player's number inside \
\\boxed{{}}, for example \\boxed{{2}}. If you cannot tell, answer \\boxed{{N/A}}."""

# The shared_first layout: the same opening (up to the transcript) for every turn of the seats that
# see one image and hold one role, the seat's own lines last.
_SHARED_OPENING = """\
"Who Is the Spy?" with {num_players} players: in each of {num_rounds} clue rounds every player, in \
turn, gives one clue about their {noun}; then the spy is voted for.
{setup} {difference}
Your role: {role}. {role_rules}
A clue is a single sentence about your {noun}, different from the clues already given. Think it \
through privately first, then write only the clue inside \\boxed{{}}, for example \
\\boxed{{The small red cube is left of the large blue sphere.}}

{transcript}

"""

SHARED_FIRST_CLUE_PROMPT = _SHARED_OPENING + """\
You are Player {player}.{reasoning}
Clue round {round} of {num_rounds}: give your clue."""

SHARED_FIRST_VOTE_PROMPT = _SHARED_OPENING + """\
You are Player {player}. The clue rounds are over: which player is the spy? Compare every clue \
with your {noun}: a clue that does not fit it, or one that stays vague, points to the spy. You may \
not vote for yourself. Reason first, then give the player's number inside \\boxed{{}}, for example \
\\boxed{{2}}. If you cannot tell, answer \\boxed{{N/A}}: it costs less than a wrong vote."""

_COMMON = {"num_players", "noun", "setup", "difference"}
PROMPT_FIELDS = {
    "clue": frozenset(_COMMON | {"player", "round", "num_rounds", "role", "role_rules", "history",
                                 "transcript", "reasoning"}),
    "vote": frozenset(_COMMON | {"player", "clues", "num_rounds", "role", "role_rules",
                                 "transcript"}),
    "observer": frozenset(_COMMON | {"clues"}),
}
PROMPTS = PromptTemplates({"clue": CLUE_PROMPT, "vote": VOTE_PROMPT,
                           "observer": OBSERVER_PROMPT}, PROMPT_FIELDS)
#: The prompt sets by ``prompt_layout`` (see the module docstring).
LAYOUTS = {
    "seat_first": PROMPTS,
    "shared_first": PromptTemplates({"clue": SHARED_FIRST_CLUE_PROMPT,
                                     "vote": SHARED_FIRST_VOTE_PROMPT,
                                     "observer": OBSERVER_PROMPT}, PROMPT_FIELDS),
}

NOUNS = {"scenes": "picture", "charts": "chart", "photos": "photo"}
DIFFERENCES = {
    "scenes": "In the spy's picture {count} objects were replaced by objects of another shape "
              "and colour; every object kept its place.",
    "charts": "In the spy's chart two attributes (values, colours or labels) were swapped or "
              "changed.",
    "photos": "In the spy's photo some objects or parts of the scene differ.",
}
_COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass
class SpyConfig:
    """Options of :class:`SpyGame` (see the module docstring for what each rule does)."""

    num_players: int = 4
    num_spies: int = 1
    num_rounds: int = 2
    spy_image: str = "modified"
    decision: str = "civilians"
    observer_samples: int = 8
    decision_reward: str = "paper"
    beta: float = 0.1
    lam: float = 0.1
    invalid_clue_penalty: float = 0.5
    max_clue_chars: int = 300
    max_reasoning_chars: int = 1500
    images: dict[str, Any] = field(default_factory=lambda: {"source": "clevr"})
    prompts: dict[str, str] = field(default_factory=dict)
    prompt_layout: str = "seat_first"

    def __post_init__(self) -> None:
        check_choice("spy_image", self.spy_image, ("modified", "blank"))
        check_choice("prompt_layout", self.prompt_layout, tuple(LAYOUTS))
        check_choice("decision", self.decision, ("civilians", "observer"))
        check_choice("decision_reward", self.decision_reward, ("paper", "shaped"))
        check_int("num_players", self.num_players, 3)
        check_int("num_spies", self.num_spies, 1)
        check_int("num_rounds", self.num_rounds, 1)
        check_int("observer_samples", self.observer_samples, 1)
        check_int("max_clue_chars", self.max_clue_chars, 1)
        check_int("max_reasoning_chars", self.max_reasoning_chars, 0)
        if self.num_players - self.num_spies < 2:
            raise ValueError(f"num_spies={self.num_spies} leaves fewer than 2 civilians among "
                             f"num_players={self.num_players}")
        for name in ("beta", "lam", "invalid_clue_penalty"):
            check_number(name, getattr(self, name), minimum=0)
        self.templates = LAYOUTS[self.prompt_layout].with_overrides(self.prompts)


def _player_of(turn: Turn) -> int | None:
    """The player number of a turn's seat (``player_3`` -> 3); None for the observer. The rules
    read it from the seat, never from ``turn.context``, which is for scripted agents."""
    kind, _, number = turn.seat.rpartition("_")
    return int(number) if kind == "player" else None


class SpyGame(Game):
    """One game of Who Is the Spy; see the module docstring for the rules."""

    name = "spy"
    config_class = SpyConfig
    needs = "pairs"
    config: SpyConfig

    def __init__(self, config: SpyConfig, source: ImageSource, rng: np.random.Generator,
                 game_id: str):
        super().__init__(config, source, rng, game_id)
        self.pair: ImagePair = source.sample_pair(rng)
        chosen = rng.choice(config.num_players, size=config.num_spies, replace=False)
        self.spies = frozenset(int(i) + 1 for i in chosen)
        self.civilians = [p for p in range(1, config.num_players + 1) if p not in self.spies]
        spy_image = (self.pair.modified if config.spy_image == "modified"
                     else np.full_like(self.pair.original, 255))
        self._images = {p: (spy_image if p in self.spies else self.pair.original,)
                        for p in range(1, config.num_players + 1)}
        self._scenes = {p: self._scene_of(p) for p in range(1, config.num_players + 1)}
        self._words = self._domain_words(source.domain)
        self._clue_schedule = [(r, p) for r in range(1, config.num_rounds + 1)
                               for p in range(1, config.num_players + 1)]
        self._rewards: dict[str, float] = {}
        self._stats: dict[str, float] = {}
        self._advance()

    # ----- seats and roles -----

    @classmethod
    def seats(cls, config: SpyConfig) -> tuple[str, ...]:
        players = tuple(f"player_{p}" for p in range(1, config.num_players + 1))
        return players + (("observer_1",) if config.decision == "observer" else ())

    @property
    def roles(self) -> dict[str, str]:
        roles = {f"player_{p}": "spy" if p in self.spies else "civilian"
                 for p in range(1, self.config.num_players + 1)}
        if self.config.decision == "observer":
            roles["observer_1"] = "observer"
        return roles

    @property
    def seat_images(self) -> dict[str, tuple[np.ndarray, ...]]:
        images = {f"player_{p}": shown for p, shown in self._images.items()}
        if self.config.decision == "observer":
            images["observer_1"] = (self.pair.original,)
        return images

    # ----- game flow -----

    def _advance(self) -> None:
        if self._clue_schedule:
            self._ask_clue(*self._clue_schedule.pop(0))
        elif not self.moves_of(phase="decision"):
            self._ask_votes()
        else:
            self._finish()

    def _ask_clue(self, round: int, player: int) -> None:
        role = "spy" if player in self.spies else "civilian"
        prompt = self.config.templates.render(
            "clue", player=player, round=round, num_rounds=self.config.num_rounds,
            role=role.upper(), role_rules=self._role_rules(role), history=self._history(player),
            transcript=self._transcript(), reasoning=self._reasoning(player), **self._words)
        context = {"game": "spy", "player": player, "role": role, "round": round,
                   "num_players": self.config.num_players, "scene": self._scenes[player],
                   "clues": self._clues()}
        self._ask(f"player_{player}", role, "clue", round, prompt, self._images[player], context)

    def _ask_votes(self) -> None:
        clues, transcript = self._clue_lines(), self._transcript()
        if self.config.decision == "civilians":
            for player in self.civilians:
                prompt = self.config.templates.render(
                    "vote", player=player, clues=clues, num_rounds=self.config.num_rounds,
                    role="CIVILIAN", role_rules=self._role_rules("civilian"),
                    transcript=transcript, **self._words)
                context = {"game": "spy", "player": player, "role": "civilian",
                           "num_players": self.config.num_players,
                           "scene": self._scenes[player], "clues": self._clues()}
                self._ask(f"player_{player}", "civilian", "decision", 0, prompt,
                          self._images[player], context)
            return
        prompt = self.config.templates.render("observer", clues=clues, **self._words)
        context = {"game": "spy", "player": None, "role": "observer",
                   "num_players": self.config.num_players,
                   "scene": self.pair.description, "clues": self._clues()}
        for _ in range(self.config.observer_samples):
            self._ask("observer_1", "observer", "decision", 0, prompt, (self.pair.original,),
                      context)

    def _judge(self, turn: Turn, text: str | None) -> Move:
        if turn.phase == "clue":
            clue = None if text is None else last_boxed(text)
            clue = None if clue is None else " ".join(clue.split())
            if not clue or len(clue) > self.config.max_clue_chars:
                return Move(turn, text or "", valid=False, shown=INVALID_CLUE)
            return Move(turn, text, valid=True, shown=clue, value=clue)
        voter = _player_of(turn)
        vote = parse_vote(text or "", self.config.num_players, voter)
        shown = ("N/A" if vote.abstain else f"vote: {vote.player}" if vote.valid
                 else "invalid vote")
        move = Move(turn, text or "", valid=vote.valid, shown=shown, value=vote.player)
        move.reward = self._decision_reward(text or "", vote.player, vote.abstain)
        return move

    def _finish(self) -> None:
        votes = [m.value for m in self.moves_of(phase="decision")]
        received = {p: votes.count(p) for p in range(1, self.config.num_players + 1)}
        clue_rewards = self._clue_rewards(received)
        penalty = self.config.invalid_clue_penalty
        for move in self.moves:
            if move.turn.phase == "clue":
                move.reward = clue_rewards[_player_of(move.turn)] - (
                    0.0 if move.valid else penalty)
        for p in range(1, self.config.num_players + 1):
            seat = f"player_{p}"
            self._rewards[seat] = clue_rewards[p] - penalty * sum(
                not m.valid for m in self.moves_of(seat, "clue")) + sum(
                m.reward for m in self.moves_of(seat, "decision"))
        decisions = self.moves_of(phase="decision")
        if self.config.decision == "observer":
            self._rewards["observer_1"] = float(np.mean([m.reward for m in decisions]))
        self._stats = self._game_stats(votes, received, decisions)

    # ----- rewards and statistics -----

    def _clue_rewards(self, received: dict[int, int]) -> dict[int, float]:
        beta, lam = self.config.beta, self.config.lam
        mean_civilian = float(np.mean([received[c] for c in self.civilians]))
        spy_excess = sum(received[s] - mean_civilian for s in self.spies)
        rewards = {s: -beta * (received[s] - mean_civilian) for s in self.spies}
        for c in self.civilians:
            rewards[c] = (beta / len(self.civilians)) * spy_excess - lam * (
                received[c] - mean_civilian)
        return rewards

    def _decision_reward(self, text: str, player: int | None, abstain: bool) -> float:
        accuracy = 1.0 if player in self.spies else -0.5 if abstain else -1.0
        if self.config.decision_reward == "paper":
            return accuracy
        boxed = last_boxed(text)
        well_formed = bool(boxed) and len(text_before_last_boxed(text)) > 10
        return 0.3 * (1.0 if well_formed else -1.0) + 1.2 * accuracy + 0.99 * (accuracy > 0)

    def _game_stats(self, votes: list[int | None], received: dict[int, int],
                    decisions: list[Move]) -> dict[str, float]:
        top = max(received.values())
        leaders = [p for p, n in received.items() if n == top]
        clue_moves = self.moves_of(phase="clue")
        return {
            "vote_accuracy": sum(v in self.spies for v in votes) / len(votes),
            "na_rate": sum(m.shown == "N/A" for m in decisions) / len(decisions),
            "invalid_vote_rate": sum(not m.valid for m in decisions) / len(decisions),
            "spy_caught": float(top > 0 and len(leaders) == 1 and leaders[0] in self.spies),
            "invalid_clue_rate": sum(not m.valid for m in clue_moves) / len(clue_moves),
        }

    def seat_rewards(self) -> dict[str, float]:
        return dict(self._rewards)

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def check_invariants(self) -> None:
        """Once the game is over: every clue move of a player carries the player's clue reward,
        less ``invalid_clue_penalty`` if invalid; the clue rewards are zero-sum over the players;
        an invalid vote earns what a wrong vote earns."""
        if not self.done:
            return
        clue_rewards: dict[int, float] = {}
        for move in self.moves_of(phase="clue"):
            player = _player_of(move.turn)
            reward = move.reward + (0.0 if move.valid else self.config.invalid_clue_penalty)
            expected = clue_rewards.setdefault(player, reward)
            assert np.isclose(reward, expected), (
                f"turn {move.turn.index}: player {player}'s clue moves carry clue rewards "
                f"{expected} and {reward} (invalid clues less the penalty)")
        assert np.isclose(sum(clue_rewards.values()), 0.0, atol=1e-9), (
            f"clue rewards are not zero-sum: {clue_rewards}")
        for move in self.moves_of(phase="decision"):
            wrong_vote = self._decision_reward(move.text, player=None, abstain=False)
            assert move.valid or np.isclose(move.reward, wrong_vote), (
                f"turn {move.turn.index}: invalid vote rewarded {move.reward}, not as a wrong "
                f"vote {wrong_vote}")

    # ----- what prompts and contexts are made of -----

    def _clues(self) -> list[dict[str, Any]]:
        return [{"round": m.turn.round, "player": _player_of(m.turn), "clue": m.shown}
                for m in self.moves_of(phase="clue")]

    def _clue_lines(self) -> str:
        lines, last_round = [], 0
        for clue in self._clues():
            if clue["round"] != last_round:
                lines.append(f"Round {clue['round']}:")
                last_round = clue["round"]
            lines.append(f"  Player {clue['player']}: {clue['clue']}")
        return "\n".join(lines)

    def _transcript(self) -> str:
        """The public clues so far, as every seat reads them (``shared_first``)."""
        lines = self._clue_lines()
        return f"Clues so far:\n{lines}" if lines else "Clues so far: none yet."

    def _reasoning(self, player: int) -> str:
        """``player``'s private reasoning before each of its earlier clues (``shared_first``), a
        line each after a line break; empty before its first clue."""
        limit = self.config.max_reasoning_chars
        lines = [f"\nYour private reasoning before your round {move.turn.round} clue: {reasoning}"
                 for move in self.moves_of(f"player_{player}", "clue")
                 if limit and (reasoning := text_before_last_boxed(move.text)[-limit:].strip())]
        return "".join(lines)

    def _history(self, player: int) -> str:
        """Earlier clues for ``player``'s clue prompt, with its own earlier reasoning."""
        clue_moves = self.moves_of(phase="clue")
        if not clue_moves:
            return "No clues have been given yet: you speak first."
        lines, last_round = ["Clues so far:"], 0
        limit = self.config.max_reasoning_chars
        for move in clue_moves:
            if move.turn.round != last_round:
                lines.append(f"Round {move.turn.round}:")
                last_round = move.turn.round
            speaker = _player_of(move.turn)
            if speaker != player:
                lines.append(f"  Player {speaker}: {move.shown}")
                continue
            lines.append(f"  Player {speaker} (you): {move.shown}")
            reasoning = text_before_last_boxed(move.text)[-limit:] if limit else ""
            if reasoning:
                lines.append(f"    (your private reasoning then: {reasoning})")
        return "\n".join(lines)

    def _role_rules(self, role: str) -> str:
        noun = self._words["noun"]
        if role == "civilian":
            return (f"You were shown the same {noun} as most players. Give a specific, true clue "
                    f"that helps the others find the spy, without repeating earlier clues.")
        if self.config.spy_image == "blank":
            return (f"Your {noun} is blank. Work out from the other clues what the others see "
                    f"and describe something plausible, so that nobody suspects you.")
        return (f"You were shown the different {noun}, but you do not know what differs. Give "
                f"clues that are likely true of the others' {noun} too, and avoid revealing the "
                f"differences.")

    def _domain_words(self, domain: str) -> dict[str, str]:
        noun = NOUNS.get(domain, "picture")
        spies = ("one of you is the spy" if self.config.num_spies == 1
                 else f"{self.config.num_spies} of you are spies")
        if self.config.spy_image == "blank":
            setup = f"Exactly {spies}: they were shown a blank {noun} instead."
            difference = ""
        else:
            setup = f"Exactly {spies} and saw a slightly different {noun}."
            changed = {c.get("object", c.get("item")) for c in self.pair.changes}
            count = _COUNT_WORDS.get(len(changed), str(len(changed))) if changed else "some"
            difference = DIFFERENCES.get(domain, DIFFERENCES["photos"]).format(count=count)
        return {"noun": noun, "setup": setup, "difference": difference,
                "num_players": str(self.config.num_players)}

    def _scene_of(self, player: int) -> dict[str, Any]:
        if player not in self.spies:
            return self.pair.description
        return self.pair.modified_description if self.config.spy_image == "modified" else {}
