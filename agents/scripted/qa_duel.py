"""Scripted players of the QA duel (:mod:`games.qa_duel`), reading the scene in the turn's context.

* The **questioner** writes a question in the documented format from the scene: CLEVR ("How many
  metal cubes are there?", "What colour is the small rubber sphere in the front left?", "Where is
  the large red cube?") or charts ("What is the value of Apple?", "Which category has the highest
  value?", "How many categories does the chart show?"), four options of which one is right, and an
  intuitive answer that is right with probability ``intuition_accuracy``. Without a scene it asks
  a generic question whose answer it does not know.
* The **solver** reads the question back with the same vocabulary, works the answer out from the
  scene and boxes its letter; with probability ``1 - solver_accuracy``, and whenever it cannot read
  the question, it boxes a random letter instead.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from agents.base import TextAgent
from agents.scripted.phrases import POSITIONS, matches, object_phrase, parse_mentions
from games.images.charts import TOPICS
from games.images.clevr import COLOUR_NAMES

LETTERS = ("A", "B", "C", "D")
GENERIC_QUESTION = "What is the main colour of this image?"
_COUNT = re.compile(r"How many (.+) are there\?")
_COLOUR = re.compile(r"What colou?r is the (.+)\?")
_WHERE = re.compile(r"Where is the (.+)\?")
_VALUE = re.compile(r"What is the value of (.+)\?")
_EXTREME = re.compile(r"Which category has the (highest|lowest) value\?")
_CATEGORIES = re.compile(r"How many categories does the chart show\?")


@dataclass(frozen=True)
class WrittenQuestion:
    """A question the questioner wrote: stem, the four options in letter order and the right
    letter (None when the questioner cannot know it)."""

    stem: str
    options: tuple[str, ...]
    correct: str | None


def _with_answer(stem: str, answer: str, distractors: list[str],
                 rng: random.Random) -> WrittenQuestion:
    options = [answer, *rng.sample(distractors, 3)]
    rng.shuffle(options)
    return WrittenQuestion(stem, tuple(options), LETTERS[options.index(answer)])


def _count_question(stem: str, count: int, rng: random.Random) -> WrittenQuestion:
    """Four consecutive numbers, one of them ``count``."""
    start = rng.randint(max(0, count - 3), count)
    options = tuple(str(n) for n in range(start, start + 4))
    return WrittenQuestion(stem, options, LETTERS[count - start])


def _unique(mention: dict[str, str], objects: list[dict[str, Any]]) -> bool:
    return sum(matches(mention, obj) for obj in objects) == 1


#: kind -> (the attribute asked for, the question, its possible answers)
_ATTRIBUTE_QUESTIONS = {"colour": ("colour", "What colour is {}?", COLOUR_NAMES),
                        "where": ("position", "Where is {}?", POSITIONS)}


def scene_question(scene: dict[str, Any], rng: random.Random) -> WrittenQuestion:
    """A question about a CLEVR scene: a count, an object's colour or an object's place."""
    objects = scene["objects"]
    obj = rng.choice(objects)
    kind = rng.choice(("count", "colour", "where"))
    if kind != "count":  # ask for one attribute of an object the others pick out uniquely
        asked, question, values = _ATTRIBUTE_QUESTIONS[kind]
        referent = tuple(a for a in ("size", "colour", "material", "shape", "position")
                         if a != asked)
        if _unique({a: obj[a] for a in referent}, objects):
            return _with_answer(question.format(object_phrase(obj, referent, "the")),
                                obj[asked], [v for v in values if v != obj[asked]], rng)
    attributes = rng.sample(("size", "colour", "material", "shape"), rng.randint(1, 2))
    mention = {a: obj[a] for a in attributes}
    adjectives = [obj[a] for a in ("size", "colour", "material") if a in attributes]
    noun = f"{obj['shape']}s" if "shape" in attributes else "objects"
    count = sum(matches(mention, other) for other in objects)
    return _count_question(f"How many {' '.join([*adjectives, noun])} are there?", count, rng)


def chart_question(chart: dict[str, Any], rng: random.Random) -> WrittenQuestion:
    """A question about a chart: an item's value, the highest or lowest item, or the count."""
    items = chart["items"]
    kind = rng.choice(("value", "extreme", "categories"))
    if kind == "value":
        item = rng.choice(items)
        values = {str(other["value"]) for other in items} | {
            str(item["value"] + step) for step in (-2, -1, 1, 2) if item["value"] + step > 0}
        return _with_answer(f"What is the value of {item['label']}?", str(item["value"]),
                            sorted(values - {str(item["value"])}), rng)
    if kind == "extreme":
        which = rng.choice(("highest", "lowest"))
        pick = max if which == "highest" else min
        answer = pick(items, key=lambda item: item["value"])["label"]
        labels = [item["label"] for item in items]
        topic = next((t for t in TOPICS.values() if set(labels) <= set(t)), ())
        others = [label for label in labels if label != answer]
        others += [label for label in topic if label not in labels][: max(0, 3 - len(others))]
        return _with_answer(f"Which category has the {which} value?", answer, others, rng)
    return _count_question("How many categories does the chart show?", len(items), rng)


def write_question(scene: dict[str, Any], rng: random.Random) -> WrittenQuestion:
    """A question about ``scene``; a generic one (no known answer) when the scene is unknown."""
    if scene.get("kind") == "scene":
        return scene_question(scene, rng)
    if scene.get("kind") == "chart":
        return chart_question(scene, rng)
    return WrittenQuestion(GENERIC_QUESTION, tuple(rng.sample(COLOUR_NAMES, 4)), None)


def describe(scene: dict[str, Any]) -> str:
    """The questioner's ``<description>``."""
    if scene.get("kind") == "scene":
        return "The picture shows " + "; ".join(map(object_phrase, scene["objects"])) + "."
    if scene.get("kind") == "chart":
        return (f'A {scene["chart_type"]} chart titled "{scene["title"]}" with '
                f'{len(scene["items"])} categories.')
    return "An image."


def question_text(scene: dict[str, Any], question: WrittenQuestion, intuitive: str) -> str:
    """A question in exactly the format the game documents."""
    options = "\n".join(f"{letter}) {option}"
                        for letter, option in zip(LETTERS, question.options, strict=True))
    return (f"<description>{describe(scene)}</description>\n"
            f"<question>{question.stem}\n{options}</question>\n<answer>{intuitive}</answer>")


def solve(scene: dict[str, Any], stem: str, options: dict[str, str]) -> str | None:
    """The letter of the right option, worked out from ``scene``; None if the question cannot be
    read or its answer is among no option."""
    answer = _scene_answer(scene, stem) if scene.get("kind") == "scene" else (
        _chart_answer(scene, stem) if scene.get("kind") == "chart" else None)
    return next((letter for letter, text in options.items() if text == answer), None)


def _scene_answer(scene: dict[str, Any], stem: str) -> str | None:
    objects = scene["objects"]
    if match := _COUNT.fullmatch(stem):
        mentions = parse_mentions(match.group(1))
        mention = mentions[0] if mentions else {}
        return str(sum(matches(mention, obj) for obj in objects))
    for pattern, attribute in ((_COLOUR, "colour"), (_WHERE, "position")):
        if (match := pattern.fullmatch(stem)) and (mentions := parse_mentions(match.group(1))):
            found = [obj for obj in objects if matches(mentions[0], obj)]
            return found[0][attribute] if len(found) == 1 else None
    return None


def _chart_answer(chart: dict[str, Any], stem: str) -> str | None:
    items = chart["items"]
    if match := _VALUE.fullmatch(stem):
        return next((str(i["value"]) for i in items if i["label"] == match.group(1)), None)
    if match := _EXTREME.fullmatch(stem):
        pick = max if match.group(1) == "highest" else min
        return pick(items, key=lambda item: item["value"])["label"]
    if _CATEGORIES.fullmatch(stem):
        return str(len(items))
    return None


class ScriptedQADuelAgent(TextAgent):
    """Plays both seats of the QA duel (see the module docstring). The same seed plays the same
    moves."""

    def __init__(self, seed: int | None = None, intuition_accuracy: float = 0.7,
                 solver_accuracy: float = 0.8):
        self.intuition_accuracy = intuition_accuracy
        self.solver_accuracy = solver_accuracy
        self._rng = random.Random(seed)

    def answer(self, observation: dict[str, Any]) -> str:
        context = json.loads(observation["context"])
        role = context.get("role")
        if role == "questioner":
            question = write_question(context["scene"], self._rng)
            intuitive = question.correct
            if intuitive is None or self._rng.random() >= self.intuition_accuracy:
                intuitive = self._rng.choice([x for x in LETTERS if x != question.correct])
            return question_text(context["scene"], question, intuitive)
        if role in ("solver", "student"):  # a student answers as a solver does
            letter = solve(context["scene"], context["question"], context["options"])
            if letter is None or self._rng.random() >= self.solver_accuracy:
                guess = self._rng.choice(LETTERS)
                return f"<think>I cannot work this out, so I guess.</think> \\boxed{{{guess}}}"
            return f"<think>I compare each option with the image.</think> \\boxed{{{letter}}}"
        raise ValueError(f"ScriptedQADuelAgent cannot play role {role!r} "
                         f"(only questioner, solver, student)")
