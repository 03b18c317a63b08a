"""Image sources shared by all games: the types they return and the interface they implement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from games.checks import check_int

#: The longest side, in pixels, of any image a source gives; environments declare it in their
#: observation space (``envs.spaces.ImageArray``), and folder sources scale larger images down.
MAX_SIDE = 8192


@dataclass(frozen=True)
class SceneImage:
    """One unlabeled image, as an ``(H, W, 3)`` uint8 array.

    ``description`` is the generator's structured account of what is drawn (objects and their
    attributes, or a chart's items); it is empty for images read from disk. Scripted agents and
    tests read it; models never see it.
    """

    image: np.ndarray
    image_id: str
    description: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImagePair:
    """An original image and a modified copy of it, for games of spotting the difference.

    ``changes`` lists what differs, one dict per change (which item, attribute, before, after);
    like ``description`` it is empty for pairs read from disk.
    """

    original: np.ndarray
    modified: np.ndarray
    pair_id: str
    description: dict[str, Any] = field(default_factory=dict)
    modified_description: dict[str, Any] = field(default_factory=dict)
    changes: tuple[dict[str, Any], ...] = ()


class ImageSource(ABC):
    """A deterministic supply of images: the same generator state gives the same images, each
    with sides of 1 to :data:`MAX_SIDE` pixels."""

    #: What the source can give: "pairs" sources also give single images (their originals).
    provides: tuple[str, ...] = ("pairs", "images")
    #: What the images show, so that prompts can use the right words: "scenes", "charts", "photos".
    domain: str = "photos"

    @abstractmethod
    def sample_image(self, rng: np.random.Generator) -> SceneImage:
        """One image, drawn with ``rng``."""

    def sample_pair(self, rng: np.random.Generator) -> ImagePair:
        """One (original, modified) pair, drawn with ``rng``."""
        raise ValueError(f"{type(self).__name__} holds single images only and cannot give pairs")


class ProceduralSource(ImageSource):
    """A source that renders each pair from one seed drawn from the caller's generator.

    Subclasses implement :meth:`render_pair` (and :meth:`render_image`, the same original without
    the modification) and call :meth:`_fill_pool` at the end of their constructor. With
    ``pool_size > 0`` that many pairs are rendered once, from
    ``numpy.random.default_rng(pool_seed)``, and samples are drawn uniformly from them.
    """

    def __init__(self, pool_size: int = 0, pool_seed: int = 0) -> None:
        owner = type(self).__name__
        self.pool_size = check_int(f"{owner}.pool_size", pool_size, 0)
        self.pool_seed = check_int(f"{owner}.pool_seed", pool_seed, 0)
        self._pool: tuple[ImagePair, ...] = ()

    @abstractmethod
    def render_pair(self, seed: int) -> ImagePair:
        """The pair that ``seed`` stands for."""

    @abstractmethod
    def render_image(self, seed: int) -> SceneImage:
        """The original image of ``render_pair(seed)``, without rendering the modified one."""

    def _fill_pool(self) -> None:
        """Render the pool; subclasses call this once their own attributes are set."""
        seeds = np.random.default_rng(self.pool_seed).integers(0, 2**63, size=self.pool_size)
        self._pool = tuple(self.render_pair(int(seed)) for seed in seeds)

    def sample_image(self, rng: np.random.Generator) -> SceneImage:
        if self._pool:
            pair = self._pool[int(rng.integers(len(self._pool)))]
            return SceneImage(pair.original, pair.pair_id, pair.description)
        return self.render_image(int(rng.integers(0, 2**63)))

    def sample_pair(self, rng: np.random.Generator) -> ImagePair:
        if self._pool:
            return self._pool[int(rng.integers(len(self._pool)))]
        return self.render_pair(int(rng.integers(0, 2**63)))
