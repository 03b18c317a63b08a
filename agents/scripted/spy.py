"""Scripted players of Who Is the Spy (:mod:`games.spy`), reading the scene in the turn's context.

* An **honest civilian** states a true, specific fact not used in earlier clues: an object of its
  scene with every attribute ("There is a large red metal cube in the back left."), or a chart
  item's value.
* A **cautious spy** names only the scene's stable attributes (CLEVR: size, material, position;
  charts: type and title), which the modification never changes: it cannot contradict the
  others, but its clues stay vague. With an empty scene (a blank image) it says something generic.
* A **voter** (civilian vote or observer sample) checks every other player's clues against its own
  scene: a clue that fits nothing there is inconsistent (2 points), a vague or missing clue is
  suspicious (1 point). It votes for the most suspicious player, drawing among ties, or N/A when
  no one stands out.

Two options make them fallible, for teachers of players that should not be perfect: with
probability ``boldness`` a spy gives an honest civilian's clue about its own picture instead (it
escapes unless it names a changed object), and with probability ``1 - vote_accuracy`` a voter
guesses a player at random.
"""

from __future__ import annotations

import json
import random
from typing import Any

from agents.base import TextAgent
from agents.scripted.phrases import (
    chart_fact,
    fact_fits,
    is_specific,
    matches,
    object_phrase,
    parse_chart_facts,
    parse_mentions,
)
from games.spy import INVALID_CLUE

GENERIC_CLUES = ("It shows several different things.", "There is more than one thing to see.",
                 "Several things of different sizes are visible.")
SUSPICION = {"inconsistent": 2, "vague": 1, "invalid": 1, "fine": 0}
_CHART_STABLE_FACTS = {"chart_type": "It is a {} chart.", "title": 'The title is "{}".'}


def clue_verdict(clue: str, scene: dict[str, Any]) -> str:
    """How a clue reads against ``scene``: "invalid", "inconsistent", "vague" or "fine"."""
    if clue == INVALID_CLUE:
        return "invalid"
    mentions = parse_mentions(clue)
    items = scene.get("items", [])
    facts = parse_chart_facts(clue, tuple(item["label"] for item in items)) if items else []
    if scene.get("kind") == "scene" and not all(
            any(matches(mention, obj) for obj in scene["objects"]) for mention in mentions):
        return "inconsistent"
    if scene.get("kind") == "chart" and not all(fact_fits(fact, items) for fact in facts):
        return "inconsistent"
    specific = any(map(is_specific, mentions)) or any("value" in f or "colour" in f for f in facts)
    return "fine" if specific else "vague"


def honest_clue(scene: dict[str, Any], clues: list[dict[str, Any]], rng: random.Random) -> str:
    """A civilian's answer: a true, specific fact about ``scene`` that no earlier clue states."""
    said = [clue["clue"] for clue in clues]
    if scene.get("kind") == "scene":
        mentioned = [mention for text in said for mention in parse_mentions(text)]
        objects = scene["objects"]
        fresh = [obj for obj in objects if not any(matches(m, obj) for m in mentioned)]
        fact = f"There is {object_phrase(rng.choice(fresh or objects))}."
    elif scene.get("kind") == "chart":
        items = scene["items"]
        own_labels = tuple(item["label"] for item in items)
        labels = {fact["label"] for text in said for fact in parse_chart_facts(text, own_labels)}
        fresh = [item for item in items if item["label"] not in labels]
        fact = chart_fact(rng.choice(fresh or items)) + "."
    else:
        fact = rng.choice(GENERIC_CLUES)
    return f"I describe something true that nobody has mentioned yet. \\boxed{{{fact}}}"


def cautious_clue(scene: dict[str, Any], clues: list[dict[str, Any]], rng: random.Random) -> str:
    """A spy's answer: only attributes the modification keeps, so it cannot contradict anyone."""
    said = " ".join(clue["clue"] for clue in clues)
    stable = tuple(scene.get("stable_attributes", ()))
    options: list[str] = []
    if scene.get("kind") == "scene":
        options = [f"There is {object_phrase(obj, stable)}." for obj in scene["objects"]]
    elif scene.get("kind") == "chart":
        options = [_CHART_STABLE_FACTS[name].format(scene[name]) for name in stable
                   if name in _CHART_STABLE_FACTS]
    options = options or list(GENERIC_CLUES)
    fresh = [option for option in options if option not in said]
    fact = rng.choice(fresh or options)
    return f"I only mention what is unlikely to differ. \\boxed{{{fact}}}"


def vote(context: dict[str, Any], rng: random.Random) -> str:
    """A civilian's or observer's vote: the player whose clues fit ``context["scene"]`` least."""
    voter, scene = context["player"], context["scene"]
    others = [p for p in range(1, context["num_players"] + 1) if p != voter]
    suspicion = dict.fromkeys(others, 0)
    for clue in context["clues"]:
        if clue["player"] != voter:
            suspicion[clue["player"]] += SUSPICION[clue_verdict(clue["clue"], scene)]
    top = max(suspicion.values())
    suspects = [p for p in others if suspicion[p] == top]
    if top == 0 or len(suspects) == len(others):
        return "No player's clues stand out from the others. \\boxed{N/A}"
    suspect = rng.choice(suspects)
    return f"Player {suspect}'s clues fit my picture least. \\boxed{{{suspect}}}"


def guess(context: dict[str, Any], rng: random.Random) -> str:
    """A vote for a random other player, without looking at the clues. It names the voter first,
    which shows a player imitating it whose number to leave out."""
    voter = context["player"]
    suspect = rng.choice([p for p in range(1, context["num_players"] + 1) if p != voter])
    return f"I am player {voter} and cannot tell who it is, so I guess. \\boxed{{{suspect}}}"


class ScriptedSpyAgent(TextAgent):
    """Plays every seat of Who Is the Spy: honest civilian or cautious spy in the clue phase,
    voter in the decision phase (see the module docstring). The same seed plays the same moves."""

    def __init__(self, seed: int | None = None, boldness: float = 0.0,
                 vote_accuracy: float = 1.0):
        self.boldness, self.vote_accuracy = boldness, vote_accuracy
        self._rng = random.Random(seed)

    def answer(self, observation: dict[str, Any]) -> str:
        context = json.loads(observation["context"])
        phase = observation["phase"]
        if phase == "clue":
            bold = context["role"] != "spy" or self._rng.random() < self.boldness
            write = honest_clue if bold else cautious_clue
            return write(context["scene"], context["clues"], self._rng)
        if phase == "decision":
            if self._rng.random() >= self.vote_accuracy:
                return guess(context, self._rng)
            return vote(context, self._rng)
        raise ValueError(f"ScriptedSpyAgent cannot play phase {phase!r} (only clue, decision)")
