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

from games.images.base import MAX_SIDE, ImagePair, ImageSource, ProceduralSource, SceneImage
from games.images.charts import ChartSource
from games.images.clevr import ClevrSource
from games.images.folders import ImageFolderSource, PairFolderSource
from games.registry import Registry

__all__ = [
    "MAX_SIDE", "SOURCES", "ChartSource", "ClevrSource", "ImageFolderSource", "ImagePair",
    "ImageSource", "PairFolderSource", "ProceduralSource", "SceneImage", "make_source",
    "register_source",
]

def _check_source(name: str, source_class: type[ImageSource]) -> None:
    if not (isinstance(source_class, type) and issubclass(source_class, ImageSource)):
        raise TypeError(f"image source {name!r} must be a subclass of ImageSource, "
                        f"got {source_class!r}")


#: Image source classes by name; ``make_source(name, **options)`` builds one.
SOURCES: Registry[type[ImageSource]] = Registry("image source", check=_check_source)
SOURCES.register("clevr", ClevrSource)
SOURCES.register("charts", ChartSource)
SOURCES.register("pair_folder", PairFolderSource)
SOURCES.register("image_folder", ImageFolderSource)


def register_source(name: str, source_class: type[ImageSource], *, replace: bool = False) -> None:
    """Make ``source_class`` buildable as ``make_source(name, ...)``."""
    SOURCES.register(name, source_class, replace=replace)


def make_source(name: str, **kwargs: Any) -> ImageSource:
    """The image source registered as ``name``, built with ``kwargs``."""
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
