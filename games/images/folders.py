"""Images read from a folder: ``PairFolderSource`` (pairs) and ``ImageFolderSource`` (images).

``PairFolderSource(path)`` reads a flat folder of pairs named ``<base>_original.<ext>`` and
``<base>_modified.<ext>``: the layout of Vision-Zero's released datasets, which load unchanged.
``ImageFolderSource(path)`` reads a flat folder of unlabeled images and gives no pairs. Both accept
the extensions .png, .jpg, .jpeg, .webp and .bmp (any case); other files, hidden files and
subfolders are ignored. ``domain`` ("photos" by default) tells the games what the images show.

**Scanning** happens once, at construction, in sorted file-name order. A file is skipped if it is
*corrupt* (PIL cannot identify or verify it, or it is truncated), *oversized* (more than
``max_pixels`` pixels by its header, checked before decoding, or refused by PIL's own
decompression-bomb guard) or, for pairs, *unpaired* (no usable partner, or a name without the
``_original``/``_modified`` suffix) or a *duplicate* (a second file for the same base and role, say
``a_original.png`` and ``a_original.jpg``: the first in sorted order is kept). Skipped files are
reported in one warning, counted by reason with the first few names of each (every name is logged
at debug level), once per folder and process: the many environments of a run that each scan the
same folder warn once. A missing folder raises FileNotFoundError, a ``path`` that is no path
(``None``, empty) ValueError, and so does a folder with nothing usable.

**Large images are scaled down, not refused.** An image with a side longer than
:data:`~games.images.base.MAX_SIDE` (8192 pixels, the longest side the environments' observation
space holds) passes the scan and is scaled down when decoded, keeping its aspect ratio (9000 x 200
becomes 8192 x 182; no side drops below 1 pixel): a dataset of large photos stays usable, and what
the model sees is at most what its processor would keep anyway. Only ``max_pixels`` refuses a file,
before it is decoded.

**Sampling** draws uniformly with the caller's generator and decodes the chosen files to RGB uint8
arrays (EXIF rotation applied, transparency composited over white, scaled down as above). A file
that passed the scan but fails to decode is dropped with a warning and another is drawn.
``pair_id`` is the base name, ``image_id`` the file name; descriptions and change logs are empty.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
from PIL import Image, ImageOps

from games.checks import check_int
from games.images.base import MAX_SIDE, ImagePair, ImageSource, SceneImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PAIR_NAME = re.compile(r"(?P<base>.+)_(?P<role>original|modified)")
#: Reasons for skipping a file, in the order the warning lists them.
SKIP_REASONS = ("corrupt", "oversized", "unpaired", "duplicate")
#: How many skipped files of each reason the warning names (the debug log names them all).
NAMES_IN_WARNING = 3

logger = logging.getLogger(__name__)
#: (folder, report) of every skip report given in this process, so that each is given once.
_reported: set[tuple[Path, str]] = set()

_Entry = TypeVar("_Entry")
_Sample = TypeVar("_Sample")


def _check_image(path: Path, max_pixels: int) -> str | None:
    """Why the file at ``path`` is unusable ("corrupt" or "oversized"), or None if it is fine.

    PNG's verify reads every chunk and its checksum; other formats are also decoded (JPEG at 1/8
    scale, which is fast), since their verify does not notice truncation.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > max_pixels:
                    return "oversized"
                image.verify()
            with Image.open(path) as image:
                if image.format in ("JPEG", "MPO"):
                    image.draft("RGB", (1, 1))
                if image.format != "PNG":
                    image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "oversized"
    except Exception:  # PIL signals bad data with many exception types
        return "corrupt"
    return None


def _decode(path: Path, max_pixels: int) -> np.ndarray:
    """The image at ``path`` as an ``(H, W, 3)`` uint8 RGB array, with sides of at most
    ``MAX_SIDE`` pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ValueError(f"{image.width}x{image.height} exceeds max_pixels={max_pixels}")
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"),
                                              image.convert("RGBA"))
            rgb = image.convert("RGB")
    rgb.thumbnail((MAX_SIDE, MAX_SIDE))  # only ever shrinks; keeps the aspect ratio
    return np.asarray(rgb)


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
                  and path.is_file())


class _FolderSource(ImageSource):
    """What both folder sources share: checking arguments, reporting skips, robust sampling."""

    #: How usable files are named, for the error raised when there are none.
    _naming: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str], domain: str, max_pixels: int) -> None:
        owner = type(self).__name__
        if not isinstance(path, str | os.PathLike) or path == "":
            raise ValueError(f"{owner}: 'path' must name the image folder (a string or a path), "
                             f"got {path!r}")
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{owner}: image folder {str(self.path)!r} does not exist")
        if not self.path.is_dir():
            raise NotADirectoryError(f"{owner}: {str(self.path)!r} is not a folder")
        if not isinstance(domain, str) or not domain:
            raise ValueError(f"{owner}: domain must be a non-empty string, got {domain!r}")
        self.domain = domain
        self.max_pixels = check_int(f"{owner}.max_pixels", max_pixels, 1)

    def _skip_report(self, skipped: dict[str, list[str]]) -> str:
        """The skipped files counted by reason, with the first few names of each."""
        total = sum(map(len, skipped.values()))
        reasons = []
        for reason in SKIP_REASONS:
            names = sorted(skipped.get(reason, ()))
            if not names:
                continue
            shown = ", ".join(names[:NAMES_IN_WARNING])
            if len(names) > NAMES_IN_WARNING:
                shown += f" and {len(names) - NAMES_IN_WARNING} more"
            reasons.append(f"{len(names)} {reason} ({shown})")
        return f"skipped {total} file{'s' * (total != 1)} in {self.path}: {', '.join(reasons)}"

    def _finish_scan(self, usable: int, skipped: dict[str, list[str]], expected: str) -> None:
        """Raise if nothing is usable, else report the skipped files, once per folder and report
        (every environment of a run builds its own source over the same folder)."""
        if not usable:
            report = f" ({self._skip_report(skipped)})" if skipped else ""
            raise ValueError(f"{type(self).__name__}: no usable {expected} in {self.path}"
                             f"{report}; expected {expected} named {self._naming}")
        if not skipped:
            return
        report = self._skip_report(skipped)
        if (self.path.resolve(), report) in _reported:
            return
        _reported.add((self.path.resolve(), report))
        for reason in SKIP_REASONS:
            if skipped.get(reason):
                logger.debug("%s: skipped %s files: %s", self.path, reason,
                             ", ".join(sorted(skipped[reason])))
        warnings.warn(report, stacklevel=3)

    def _draw(self, rng: np.random.Generator, entries: list[_Entry],
              load: Callable[[_Entry], _Sample]) -> _Sample:
        """``load`` of an entry drawn uniformly; entries that fail to load are dropped."""
        while entries:
            index = int(rng.integers(len(entries)))
            try:
                return load(entries[index])
            except Exception as error:  # any decoding failure: drop the entry, draw again
                warnings.warn(f"dropped {entries[index]} from {self.path}: it could not be "
                              f"decoded ({error})", stacklevel=3)
                del entries[index]
        raise RuntimeError(f"{type(self).__name__}: no readable images are left in {self.path}")


class PairFolderSource(_FolderSource):
    """Pairs ``<base>_original.<ext>`` / ``<base>_modified.<ext>`` from a folder (see the module
    doc)."""

    provides = ("pairs", "images")
    _naming = ("<base>_original.<ext> and <base>_modified.<ext> with <ext> one of "
               + ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES))

    def __init__(self, path: str | os.PathLike[str], domain: str = "photos",
                 max_pixels: int = 50_000_000) -> None:
        super().__init__(path, domain, max_pixels)
        skipped: dict[str, list[str]] = defaultdict(list)
        roles: dict[str, dict[str, Path]] = {}
        for file in _image_files(self.path):
            match = PAIR_NAME.fullmatch(file.stem)
            if match is None:
                skipped["unpaired"].append(file.name)
                continue
            found = roles.setdefault(match["base"], {})
            reason = _check_image(file, self.max_pixels)
            if reason is None and match["role"] in found:
                reason = "duplicate"
            if reason is None:
                found[match["role"]] = file
            else:
                skipped[reason].append(file.name)
        self._pairs: list[tuple[str, Path, Path]] = []
        for base, files in sorted(roles.items()):
            if len(files) == 2:
                self._pairs.append((base, files["original"], files["modified"]))
            else:
                skipped["unpaired"] += [file.name for file in files.values()]
        self._finish_scan(len(self._pairs), skipped, "image pairs")

    def __len__(self) -> int:
        return len(self._pairs)

    def sample_pair(self, rng: np.random.Generator) -> ImagePair:
        def load(entry: tuple[str, Path, Path]) -> ImagePair:
            base, original, modified = entry
            return ImagePair(_decode(original, self.max_pixels),
                             _decode(modified, self.max_pixels), base)

        return self._draw(rng, self._pairs, load)

    def sample_image(self, rng: np.random.Generator) -> SceneImage:
        def load(entry: tuple[str, Path, Path]) -> SceneImage:
            original = entry[1]
            return SceneImage(_decode(original, self.max_pixels), original.name)

        return self._draw(rng, self._pairs, load)


class ImageFolderSource(_FolderSource):
    """Unlabeled images from a folder; gives no pairs (see the module doc)."""

    provides = ("images",)
    _naming = "<name>.<ext> with <ext> one of " + ", ".join(s[1:] for s in IMAGE_SUFFIXES)

    def __init__(self, path: str | os.PathLike[str], domain: str = "photos",
                 max_pixels: int = 50_000_000) -> None:
        super().__init__(path, domain, max_pixels)
        skipped: dict[str, list[str]] = defaultdict(list)
        self._files: list[Path] = []
        for file in _image_files(self.path):
            reason = _check_image(file, self.max_pixels)
            if reason is None:
                self._files.append(file)
            else:
                skipped[reason].append(file.name)
        self._finish_scan(len(self._files), skipped, "images")

    def __len__(self) -> int:
        return len(self._files)

    def sample_image(self, rng: np.random.Generator) -> SceneImage:
        return self._draw(rng, self._files,
                          lambda file: SceneImage(_decode(file, self.max_pixels), file.name))
