"""What every VLM backend shares: which model, sampling settings, an observation as a chat message.

An observation becomes one user turn: one image part per image, in order, then the prompt text.
Each backend renders that message with the model's own chat template (Qwen2-VL: one
``<|vision_start|><|image_pad|><|vision_end|>`` placeholder per image), so a model sees the same
prompt whichever backend serves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from games.checks import check_int, check_number


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled. ``temperature=0`` is greedy. ``seed`` makes sampling
    reproducible: each request gets its own seed drawn from it, in the order of requests."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_int("max_tokens", self.max_tokens, 1)
        check_number("temperature", self.temperature, minimum=0)
        check_number("top_p", self.top_p, minimum=0)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None:
            check_int("seed", self.seed, 0)


class RequestSeeds:
    """Per-request sampling seeds from one base seed: the same calls get the same seeds.
    :meth:`state_dict` / :meth:`load_state_dict` carry where the stream stands across a restart
    (a resumed run continues the stream instead of replaying it)."""

    def __init__(self, seed: int | None):
        self._rng = None if seed is None else np.random.default_rng(seed)

    @property
    def seeded(self) -> bool:
        return self._rng is not None

    def take(self, count: int) -> list[int | None]:
        if self._rng is None:
            return [None] * count
        return [int(s) for s in self._rng.integers(0, 2**31 - 1, size=count)]

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands, as JSON-able values (``None`` when unseeded)."""
        return {"generator": None if self._rng is None else self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues the stream from a :meth:`state_dict`; seeded and unseeded do not mix."""
        generator = state["generator"]
        if (generator is None) != (self._rng is None):
            have, got = ("seeded", "unseeded") if self.seeded else ("unseeded", "seeded")
            raise ValueError(f"cannot load the state of {got} request seeds into {have} ones")
        if generator is not None:
            self._rng.bit_generator.state = generator


#: The project's own models, by the names that stand for them wherever a model path is asked for:
#: the tiny player (shipped, checked against its checksum) and the random tiny model (built on
#: first use, for fast tests).
EMBEDDED_MODELS = ("tiny-player", "tiny-random")


def model_path(model: str | Path | None) -> str:
    """Where to load ``model`` from: the tiny player for None or ``"tiny-player"``, the random
    tiny model for ``"tiny-random"``, else ``model`` itself (a folder or a hub id)."""
    if model is None or str(model) == "tiny-player":
        from agents.tiny_player import tiny_player_path

        return str(tiny_player_path())
    if str(model) == "tiny-random":
        from agents.default_model import default_model_path

        return str(default_model_path())
    return str(model)


def chat_messages(observation: dict[str, Any]) -> list[dict[str, Any]]:
    """The observation as a one-turn chat: its images, then its prompt."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in observation["images"]]
    content.append({"type": "text", "text": observation["prompt"]})
    return [{"role": "user", "content": content}]


def pil_images(observation: dict[str, Any]) -> list[Image.Image]:
    """The observation's images as PIL images (RGB)."""
    return [Image.fromarray(np.asarray(image, dtype=np.uint8)) for image in
            observation["images"]]


def is_greedy(sampling: SamplingConfig) -> bool:
    return math.isclose(sampling.temperature, 0.0)


#: The end-of-turn and end-of-text markers of ChatML models (Qwen2-VL, Qwen2.5-VL): a completion
#: may end on them where a vocabulary has them, besides the tokenizer's end-of-sequence token.
TURN_END_TOKENS = ("<|im_end|>", "<|endoftext|>")

#: The logit bias that bans a token where sampling takes biases (vLLM, the OpenAI API): the lowest
#: they accept, which scales the token's probability by exp(-100) ~ 4e-44 (none, in float32).
BAN_LOGIT_BIAS = -100.0


def turn_end_ids(tokenizer: Any) -> set[int]:
    """The ids that end a completion: the tokenizer's end-of-sequence id and ChatML's markers."""
    added = tokenizer.added_tokens_encoder
    ids = {added[token] for token in TURN_END_TOKENS if token in added}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def banned_token_ids(tokenizer: Any) -> list[int]:
    """The ids a model must never sample: every added or special token of ``tokenizer`` (image
    and video placeholders, vision, box and object markers, ``<|im_start|>``, tool and
    fill-in-the-middle markers...) except those that end a turn. None is a move in a game, and an
    image placeholder in a completion would be taken for an image slot when training on it."""
    special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)
    return sorted(special - turn_end_ids(tokenizer))
