"""Behaviour-cloning examples: what the scripted agents answer, and drills that teach seeing.

An :class:`Example` is one turn to imitate: a prompt, the images shown with it and the answer to
learn. Two kinds, both deterministic per seed:

- **game turns** (:func:`scripted_turns`): games played by the scripted agents through the
  environments, every seat and phase recorded — Who Is the Spy with civilians voting (the paper)
  and with an observer (the released code), and the QA duel's questioner and solver — optionally
  with fallible scripted agents (a bold spy, a voter that sometimes guesses);
- **vision drills** (:func:`vision_drills`): CLEVR-like pictures with the answer read from the
  scene description — name the one object of a single-object picture, name any object of a
  scene, or list every object of a scene. Their answers use the scripted clue-givers' words
  (:func:`agents.scripted.phrases.object_phrase`), so what a model learns to see here is what it
  needs to say in the games.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.scripted import scripted_agent
from agents.scripted.phrases import object_phrase
from games.images.clevr import ClevrSource

#: The drills' prompts, by task.
DRILL_PROMPTS = {
    "name_single": "What is the object in this picture? Name its size, colour, material and "
                   "shape, and where it stands, inside \\boxed{}.",
    "name_any": "Name one object in this picture: its size, colour, material and shape, and "
                "where it stands, inside \\boxed{}.",
    "list_all": "List every object in this picture from back to front, each with its size, "
                "colour, material, shape and place, separated by semicolons.",
}


@dataclass(frozen=True)
class Example:
    """One answer to imitate: ``answer`` to ``prompt`` about ``images``; ``task`` names where it
    comes from (``spy/civilian/clue``, ``qa_duel/solver/answer``, ``drill/list_all``, ...)."""

    task: str
    prompt: str
    images: tuple[np.ndarray, ...]
    answer: str


def scripted_turns(game: str, num_games: int, seed: int,
                   agent_options: dict[str, Any] | None = None,
                   **env_options: Any) -> list[Example]:
    """Every turn of ``num_games`` games of ``game`` played by its scripted agents (seeded, built
    with ``agent_options``), with the environment built from ``env_options``."""
    import envs  # PettingZoo: imported only by what plays games
    from agents.rollout import RolloutRunner

    runner = RolloutRunner(lambda: envs.make(game, **env_options),
                           scripted_agent(game, seed=seed, **(agent_options or {})),
                           parallel_games=64)
    return [Example(f"{game}/{turn.role}/{turn.phase}", turn.prompt, tuple(turn.images),
                    turn.text)
            for result in runner.run(num_games, seed=seed) for turn in result.turns]


def vision_drills(task: str, count: int, seed: int) -> list[Example]:
    """``count`` drills of ``task`` (a key of :data:`DRILL_PROMPTS`) on fresh CLEVR-like
    pictures drawn from ``seed``."""
    if task not in DRILL_PROMPTS:
        raise ValueError(f"unknown drill {task!r}; known drills: {sorted(DRILL_PROMPTS)}")
    single = task == "name_single"
    source = ClevrSource(min_objects=1, max_objects=1, num_changes=1) if single else ClevrSource()
    rng = np.random.default_rng(seed)
    return [_drill(task, source.render_image(int(image_seed)), rng)
            for image_seed in rng.integers(0, 2**62, size=count)]


def _drill(task: str, scene: Any, rng: np.random.Generator) -> Example:
    objects = scene.description["objects"]
    if task == "list_all":
        answer = "; ".join(object_phrase(obj) for obj in objects) + "."
    else:
        chosen = objects[int(rng.integers(len(objects)))]
        answer = f"\\boxed{{There is {object_phrase(chosen)}.}}"
    return Example(f"drill/{task}", DRILL_PROMPTS[task], (scene.image,), answer)


def texts(examples: list[Example]) -> Iterator[str]:
    """Every prompt and answer, for training a tokenizer on what the games say."""
    for example in examples:
        yield example.prompt
        yield example.answer
