"""Shared test fixtures: a tiny in-memory image source so rule tests need no rendering."""

from __future__ import annotations

import numpy as np
import pytest

from games.images import ImagePair, ImageSource, SceneImage


class SolidColourSource(ImageSource):
    """Pairs of 8x8 solid images (original grey, modified red): rules tests need no real images."""

    domain = "scenes"

    def sample_image(self, rng: np.random.Generator) -> SceneImage:
        return SceneImage(np.full((8, 8, 3), 128, np.uint8), "solid", {})

    def sample_pair(self, rng: np.random.Generator) -> ImagePair:
        original = np.full((8, 8, 3), 128, np.uint8)
        modified = original.copy()
        modified[..., 0] = 255
        return ImagePair(original, modified, "solid", changes=(
            {"object": 0, "attribute": "colour", "before": "gray", "after": "red"},))


@pytest.fixture
def solid_source() -> SolidColourSource:
    return SolidColourSource()
