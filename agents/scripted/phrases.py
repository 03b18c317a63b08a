"""Facts about a described image in words, and back: the one vocabulary scripted agents share.

Clue-givers and questioners write with :func:`object_phrase` and :func:`chart_fact`; voters and
solvers read text back with :func:`parse_mentions` and :func:`parse_chart_facts`. The readers match
the image sources' vocabulary (with a few synonyms) anywhere in a text, so they also read clues that
models wrote, not only scripted ones.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from games.images.charts import COLOUR_NAMES as CHART_COLOURS
from games.images.charts import TOPICS
from games.images.clevr import COLOUR_NAMES, MATERIALS, SHAPES, SIZE_NAMES

#: A CLEVR object as a text speaks of it: some of its attributes (see ``OBJECT_ATTRIBUTES``).
Mention = dict[str, str]

OBJECT_ATTRIBUTES = ("size", "colour", "material", "shape", "position")
POSITIONS = tuple(f"{depth} {side}" for depth in ("back", "middle", "front")
                  for side in ("left", "center", "right"))
CHART_LABELS = frozenset(label for labels in TOPICS.values() for label in labels)

_SYNONYMS = {"gray": ("grey",), "large": ("big", "huge"), "small": ("tiny", "little"),
             "metal": ("metallic", "shiny"), "rubber": ("matte",),
             "cube": ("cubes", "block", "blocks"), "sphere": ("spheres", "ball", "balls"),
             "cylinder": ("cylinders",)}
#: Every word that names a CLEVR attribute value -> (attribute, canonical value).
WORDS: dict[str, tuple[str, str]] = {
    word: (attribute, value)
    for attribute, values in (("size", SIZE_NAMES), ("colour", COLOUR_NAMES),
                              ("material", MATERIALS), ("shape", SHAPES))
    for value in values for word in (value, *_SYNONYMS.get(value, ()))}
_GENERIC_NOUNS = frozenset({"object", "objects", "thing", "things", "item", "items", "one", "ones",
                            "shape", "shapes", "something"})
_NEGATIONS = frozenset({"no", "not", "none", "without", "never"})
_TOKEN = re.compile(r"[a-z]+")
# "in the back left", "at the front", "on the right"; not "to the left of the cube" (a relation).
_POSITION = re.compile(
    r"\b(?:in|at|on|near|toward|towards)\s+the\s+"
    r"((?:back|middle|front|center|centre)(?:[\s-]+(?:left|center|centre|right))?|left|right)\b"
    r"(?!\s+of\b(?!\s+(?:the\s+)?(?:scene|picture|image|floor)))")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_CHART_COLOUR = re.compile(r"\b(" + "|".join((*CHART_COLOURS, "grey")) + r")\b")


def object_phrase(obj: dict[str, Any], attributes: tuple[str, ...] = OBJECT_ATTRIBUTES,
                  article: str = "a") -> str:
    """``obj`` in words, naming only ``attributes``: "a large red metal cube in the back left";
    without shape it is an "object". ``article="a"`` becomes "an" before a vowel."""
    adjectives = [obj[name] for name in ("size", "colour", "material") if name in attributes]
    words = " ".join([*adjectives, obj["shape"] if "shape" in attributes else "object"])
    if article == "a" and words[0] in "aeiou":
        article = "an"
    place = f" in the {obj['position']}" if "position" in attributes else ""
    return f"{article} {words}{place}"


def parse_mentions(text: str) -> list[Mention]:
    """The objects ``text`` speaks of, each as the attributes it gives them.

    Adjectives (size, colour, material) gather until a noun (a shape, or "object", "one", ...)
    closes a mention; a place phrase ("in the back left") belongs to the mention before it.
    Mentions after "no"/"not" are dropped, and so are nouns with no attribute at all.
    """
    return [dict(mention) for mention in _parse_mentions(text)]


@functools.lru_cache(maxsize=4096)
def _parse_mentions(text: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """:func:`parse_mentions`, cached per text (every voter reads the same clues)."""
    lowered = text.lower()
    mentions: list[Mention] = []
    noun_ends: list[int] = []
    pending: Mention = {}
    negated = False
    for token in _TOKEN.finditer(lowered):
        word = token.group()
        attribute, value = WORDS.get(word, (None, None))
        if word in _NEGATIONS:
            negated = True
        elif attribute is not None and attribute != "shape":
            pending[attribute] = value
        elif attribute == "shape" or word in _GENERIC_NOUNS:
            if attribute == "shape":
                pending["shape"] = value
            if pending and not negated:
                mentions.append(pending)
                noun_ends.append(token.end())
            pending, negated = {}, False
    if pending and not negated:
        mentions.append(pending)
        noun_ends.append(len(lowered))
    for match in _POSITION.finditer(lowered):
        before = [index for index, end in enumerate(noun_ends) if end <= match.start()]
        index = before[-1] if before else 0
        if mentions and "position" not in mentions[index]:
            place = match.group(1).replace("centre", "center").replace("-", " ")
            mentions[index]["position"] = " ".join(place.split())
    return tuple(tuple(mention.items()) for mention in mentions)


def matches(mention: Mention, obj: dict[str, Any]) -> bool:
    """Whether ``obj`` has every attribute ``mention`` gives it; a place matches when its words
    are among the object's ("left" fits "back left")."""
    for attribute, value in mention.items():
        if attribute == "position":
            if not set(value.split()) <= set(obj["position"].split()):
                return False
        elif obj.get(attribute) != value:
            return False
    return True


def is_specific(mention: Mention) -> bool:
    """A mention is specific when it names a shape or a colour (what a modification changes)."""
    return "shape" in mention or "colour" in mention


def chart_fact(item: dict[str, Any]) -> str:
    """A (label, value) fact about one chart item: "Apple has a value of 42"."""
    return f"{item['label']} has a value of {item['value']}"


def parse_chart_facts(text: str, labels: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The chart items ``text`` speaks of: ``{"label"}`` plus the first number (``"value"``) and
    colour (``"colour"``) after the label, before the next one. Labels are the sources' category
    names and ``labels``, matched case-sensitively ("May" the month, not "may")."""
    found = list(_label_pattern(tuple(sorted(set(labels) - CHART_LABELS))).finditer(text))
    facts = []
    ends = [match.start() for match in found[1:]] + [len(text)]
    for match, end in zip(found, ends, strict=False):
        segment = text[match.end(): end]
        fact: dict[str, Any] = {"label": match.group(1)}
        if number := _NUMBER.search(segment):
            fact["value"] = float(number.group())
        if colour := _CHART_COLOUR.search(segment.lower()):
            fact["colour"] = colour.group(1).replace("grey", "gray")
        facts.append(fact)
    return facts


@functools.lru_cache(maxsize=256)
def _label_pattern(extra_labels: tuple[str, ...]) -> re.Pattern[str]:
    """A regex matching any known chart label, longest first (compiled once per label set)."""
    known = sorted(CHART_LABELS | set(extra_labels), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(map(re.escape, known)) + r")\b")


def fact_fits(fact: dict[str, Any], items: list[dict[str, Any]]) -> bool:
    """Whether some item of a chart has the fact's label, value and colour."""
    item = next((item for item in items if item["label"] == fact["label"]), None)
    return item is not None and fact.get("value", item["value"]) == item["value"] and fact.get(
        "colour", item["colour"]) == item["colour"]
