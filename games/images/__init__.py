"""Image sources for the games, and a registry to build them by name.

=================  ===================================================  ====================
Name               Class                                                Gives
=================  ===================================================  ====================
``clevr``          :class:`~games.images.clevr.ClevrSource`             pairs, images
``charts``         :class:`~games.images.charts.ChartSource`            pairs, images
``pair_folder``    :class:`~games.images.folders.PairFolderSource`      pairs, images
``image_folder``   :class:`~games.images.folders.ImageFolderSource`     images
=================  ===================================================  ====================

``make_source("clevr", width=480, height=320)`` builds a source from a config's keywords;
``register_source("mine", MySource)`` adds a subclass of :class:`ImageSource` under a new name.
Each module's docstring documents its source.
"""

from __future__ import annotations

import inspect
from typing import Any

from games.images.base import ImagePair, ImageSource, ProceduralSource, SceneImage
from games.images.charts import ChartSource
from games.images.clevr import ClevrSource
from games.images.folders import ImageFolderSource, PairFolderSource

__all__ = [
    "SOURCES", "ChartSource", "ClevrSource", "ImageFolderSource", "ImagePair", "ImageSource",
    "PairFolderSource", "ProceduralSource", "SceneImage", "make_source",
    "register_source",
]

SOURCES: dict[str, type[ImageSource]] = {
    "clevr": ClevrSource,
    "charts": ChartSource,
    "pair_folder": PairFolderSource,
    "image_folder": ImageFolderSource,
}


def register_source(name: str, source_class: type[ImageSource]) -> None:
    """Make ``source_class`` buildable as ``make_source(name, ...)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an image source name must be a non-empty string, got {name!r}")
    if not (isinstance(source_class, type) and issubclass(source_class, ImageSource)):
        raise TypeError(f"image source {name!r} must be a subclass of ImageSource, "
                        f"got {source_class!r}")
    if SOURCES.get(name, source_class) is not source_class:
        raise ValueError(f"image source name {name!r} is taken by {SOURCES[name].__name__}")
    SOURCES[name] = source_class


def make_source(name: str, **kwargs: Any) -> ImageSource:
    """The image source registered as ``name``, built with ``kwargs``."""
    if name not in SOURCES:
        raise ValueError(f"unknown image source {name!r}; known sources: {', '.join(SOURCES)}")
    source_class = SOURCES[name]
    parameters = inspect.signature(source_class).parameters.values()
    if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        accepted = [parameter.name for parameter in parameters]
        for keyword in kwargs:
            if keyword not in accepted:
                raise TypeError(f"image source {name!r} ({source_class.__name__}) has no keyword "
                                f"{keyword!r}; it accepts: {', '.join(accepted)}")
    for parameter in parameters:
        if parameter.default is parameter.empty and parameter.kind in (
                parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) \
                and parameter.name not in kwargs:
            raise TypeError(f"image source {name!r} ({source_class.__name__}) needs keyword "
                            f"{parameter.name!r}")
    return source_class(**kwargs)
