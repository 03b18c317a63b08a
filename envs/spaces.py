"""Two spaces Gymnasium lacks: free text of any characters, and RGB images of any size.

Gymnasium's ``Text`` only contains strings over its charset (alphanumeric by default), so a prompt
with a space or a comma is not in it; and ``Box`` has one fixed shape, while images from disk have
many. These subclasses keep Gymnasium's sampling and seeding and widen ``contains``.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium import spaces

from games.images import MAX_SIDE

#: What random text is drawn from: printable ASCII, newlines, a few non-ASCII letters and symbols,
#: and the characters answers are made of, so sampled actions exercise the parsers.
SAMPLE_CHARSET = frozenset(string.printable) | frozenset("éüßçñøå—–…·°€你好日本語ΩπЖж🙂\\{}")


class FreeText(spaces.Text):
    """Any string of min_length to max_length characters; samples come from SAMPLE_CHARSET."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText({self.min_length}, {self.max_length})"


class ImageArray(spaces.Space[np.ndarray]):
    """An ``(H, W, 3)`` uint8 RGB image with sides from 1 to ``max_side`` pixels (by default
    ``games.images.MAX_SIDE``, the longest side any image source gives)."""

    def __init__(self, max_side: int = MAX_SIDE, seed: int | None = None):
        super().__init__(shape=None, dtype=np.uint8, seed=seed)
        self.max_side = max_side

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        return (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3
                and x.shape[2] == 3 and 1 <= x.shape[0] <= self.max_side
                and 1 <= x.shape[1] <= self.max_side)

    def sample(self, mask: None = None, probability: None = None) -> np.ndarray:
        """A small random image (sides up to 64 pixels)."""
        height, width = self.np_random.integers(1, min(64, self.max_side) + 1, size=2)
        return self.np_random.integers(0, 256, size=(height, width, 3), dtype=np.uint8)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ImageArray) and other.max_side == self.max_side

    def __repr__(self) -> str:
        return f"ImageArray(max_side={self.max_side})"
