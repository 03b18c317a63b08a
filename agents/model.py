"""What every VLM backend shares: sampling settings, and an observation as a chat message.

An observation becomes one user turn: one image part per image, in order, then the prompt text.
Each backend renders that message with the model's own chat template (Qwen2-VL: one
``<|vision_start|><|image_pad|><|vision_end|>`` placeholder per image), so a model sees the same
prompt whichever backend serves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    """Per-request sampling seeds from one base seed: the same calls get the same seeds."""

    def __init__(self, seed: int | None):
        self._rng = None if seed is None else np.random.default_rng(seed)

    def take(self, count: int) -> list[int | None]:
        if self._rng is None:
            return [None] * count
        return [int(s) for s in self._rng.integers(0, 2**31 - 1, size=count)]


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
