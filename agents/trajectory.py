"""Trajectories: every turn a model played, exactly as it played it, and how to store them.

A :class:`TurnRecord` holds what the trainer needs for one turn: the prompt text and images the
agent saw, the exact prompt token ids, completion token ids and sampler log-probs it returned,
the turn's labels (game id, seat, role, phase, round) and its reward. A :class:`GameResult` groups
a game's turns with its returns and statistics.

On disk (:func:`save_results` / :func:`load_results`) a run is a folder with ``games.jsonl`` (one
game per line, its turns inline) and ``images/`` (each distinct image once, as a lossless PNG
named by its content hash). Loading gives back equal records: same ids, floats, text and pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class TurnRecord:
    """One turn: what the agent saw, what it answered (with tokens), and the reward it got."""

    game_id: str
    env: str
    turn: int
    seat: str
    role: str
    phase: str
    round: int
    agent: str
    prompt: str
    images: list[np.ndarray]
    text: str
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None
    reward: float = 0.0
    valid: bool = True  # False: the game took the answer as an invalid move

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TurnRecord):
            return NotImplemented
        return _fields_without_images(self) == _fields_without_images(other) and len(
            self.images) == len(other.images) and all(
            np.array_equal(a, b) for a, b in zip(self.images, other.images, strict=True))


@dataclass
class GameResult:
    """A finished game: its turns in order, each seat's role and return, and its statistics."""

    game_id: str
    env: str
    roles: dict[str, str]
    returns: dict[str, float]
    stats: dict[str, float]
    turns: list[TurnRecord]


def save_results(results: list[GameResult], folder: str | Path, append: bool = False) -> Path:
    """Write ``results`` to ``folder`` (created), after the games already there if ``append``;
    images already there are not written again."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    written: dict[int, str] = {}
    with open(folder / "games.jsonl", "a" if append else "w", encoding="utf-8") as out:
        for result in results:
            game = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
            game["turns"] = [_fields_without_images(turn) | {"images": [
                _image_file(image, folder, written) for image in turn.images]}
                for turn in result.turns]
            out.write(json.dumps(game, ensure_ascii=False) + "\n")
    return folder


def load_results(folder: str | Path) -> list[GameResult]:
    """Read back what :func:`save_results` wrote."""
    folder = Path(folder)
    images: dict[str, np.ndarray] = {}
    results = []
    with open(folder / "games.jsonl", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                game = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{folder / 'games.jsonl'} line {number} is not JSON: "
                                 f"{error}") from None
            turns = []
            for row in game.pop("turns"):
                names = row.pop("images")
                for name in names:
                    if name not in images:
                        with Image.open(folder / "images" / name) as image:
                            images[name] = np.asarray(image.convert("RGB"))
                turns.append(TurnRecord(**row, images=[images[name] for name in names]))
            results.append(GameResult(**game, turns=turns))
    return results


def _fields_without_images(turn: TurnRecord) -> dict[str, Any]:
    return {f.name: getattr(turn, f.name) for f in dataclasses.fields(turn) if f.name != "images"}


def _image_file(image: np.ndarray, folder: Path, written: dict[int, str]) -> str:
    """The file name of ``image`` in ``folder/images``, writing it once per distinct content."""
    name = written.get(id(image))
    if name is None:
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes(), usedforsecurity=False)
        digest.update(str(image.shape).encode())
        name = written[id(image)] = f"{digest.hexdigest()[:20]}.png"
        path = folder / "images" / name
        if not path.exists():
            Image.fromarray(image).save(path, format="PNG", compress_level=1)
    return name
