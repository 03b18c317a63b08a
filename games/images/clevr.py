"""CLEVR-like scenes drawn offline with PIL: ``ClevrSource`` (domain ``"scenes"``).

Each scene shows ``min_objects`` to ``max_objects`` objects (default 3 to 10) on a grey floor, seen
from the front and above as in CLEVR. Every object has a shape (cube, sphere, cylinder), one of the
eight CLEVR colours (gray, red, blue, green, brown, purple, cyan, yellow), a size (small, large), a
material (rubber: matte; metal: shiny, with a specular highlight and reflections) and a place on the
floor. Objects cast soft shadows and are drawn back to front. They are sized for 320x240 (the
default; at least 128x96) and scaled by ``min(width / 320, height / 240)``.

**Placement.** An object's footprint is the screen box of its sprite and shadow; it depends only
on the object's size, never on its shape or colour. Footprints never overlap (rejection sampling),
so no object hides any part of another, and modifying a scene can never create an overlap.

**Pairs.** The modified image is the original with ``num_changes`` distinct objects changed in
place: each gets a different shape *and* a different colour; size, material and position are kept.

**Descriptions.** ``description`` (and ``modified_description``) is::

    {"kind": "scene",
     "objects": [{"id": 0, "shape": "cube", "colour": "red", "size": "large",
                  "material": "metal", "position": "back left", "x": 61, "y": 70}, ...],
     "stable_attributes": ["size", "material", "position"]}

with objects listed back to front; ``x``, ``y`` are the pixel where the object stands (the centre of
its base) and ``position`` is that point in words (back/middle/front, left/center/right).
``changes`` holds one dict per changed attribute:
``{"object": 3, "attribute": "shape", "before": "cube", "after": "sphere"}``.

**Determinism and speed.** Each sample draws one seed from the caller's generator; the seed alone
fixes the scene, and ``pair_id`` is ``"clevr-<seed in hex>"``. Sprites (one per shape, colour, size
and material) and the floor are rendered once and then pasted with alpha, so a 320x240 pair takes
well under a millisecond. ``pool_size > 0`` pre-renders that many pairs at construction from
``numpy.random.default_rng(pool_seed)`` and samples them uniformly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Any

import numpy as np
from PIL import Image

from games.checks import check_int
from games.images.base import ImagePair, ProceduralSource, SceneImage

SHAPES = ("cube", "sphere", "cylinder")
COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
COLOUR_NAMES = tuple(COLOURS)
#: Object radius in pixels at 320x240; other sizes scale it by min(width / 320, height / 240).
SIZES: dict[str, float] = {"small": 11.0, "large": 20.0}
SIZE_NAMES = tuple(SIZES)
MATERIALS = ("rubber", "metal")
STABLE_ATTRIBUTES = ("size", "material", "position")
MAX_OBJECTS = 10

_ELEVATION = math.radians(30)  # the camera looks down at the floor at this angle
_CUBE_YAW = math.radians(30)
_CUBE_SIDE = 1.5  # cube side, cylinder height: in object radii
_CYLINDER_HEIGHT = 1.8
# Sprite box around the point where the object stands, in object radii (screen y points up): wide
# enough for every shape and for the shadow, which falls to the right and back.
_BOX_LEFT, _BOX_RIGHT, _BOX_BOTTOM, _BOX_TOP = -1.1, 1.5, -0.6, 2.1
_SUPERSAMPLE = 4
_LIGHT = np.array([-0.5, 0.7, 0.5]) / np.linalg.norm([-0.5, 0.7, 0.5])
_CANDIDATES = 64  # positions tried at once when placing an object
_RESTARTS = 100


@dataclass(frozen=True)
class _Object:
    shape: str
    colour: str
    size: str
    material: str
    x: int
    y: int


def _box(radius: float) -> tuple[int, int, int, int]:
    """Sprite box of an object of ``radius`` pixels: (left, top, width, height), the first two
    relative to the point where it stands (screen y pointing down)."""
    left = math.floor(_BOX_LEFT * radius) - 1  # a pixel of margin all round
    top = -math.ceil(_BOX_TOP * radius) - 1
    return (left, top, math.ceil(_BOX_RIGHT * radius) + 1 - left,
            math.ceil(-_BOX_BOTTOM * radius) + 1 - top)


def _surface(shape: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage mask and camera-space unit normals (x right, y up, z to the viewer) of a shape of
    radius 1 standing at the origin, at screen points ``x``, ``y`` (y up)."""
    sin_e, cos_e = math.sin(_ELEVATION), math.cos(_ELEVATION)
    normals = np.zeros((*x.shape, 3))
    if shape == "sphere":
        dx, dy = x, y - cos_e
        mask = dx**2 + dy**2 <= 1
        normals[..., 0], normals[..., 1] = dx, dy
        normals[..., 2] = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
        return mask, normals
    if shape == "cylinder":
        depth = np.sqrt(np.clip(1 - x**2, 0, 1))  # the front of the body, toward the viewer
        top = _CYLINDER_HEIGHT * cos_e
        body = (np.abs(x) <= 1) & (y >= -depth * sin_e) & (y <= top - depth * sin_e)
        cap = x**2 + ((y - top) / sin_e) ** 2 <= 1
        normals[..., 0] = x
        normals[..., 1] = np.where(cap, cos_e, -depth * sin_e)
        normals[..., 2] = np.where(cap, sin_e, depth * cos_e)
        normals[cap, 0] = 0
        return body | cap, normals
    # A cube turned by _CUBE_YAW: each face facing the camera is a convex quadrilateral.
    mask = np.zeros(x.shape, bool)
    half = _CUBE_SIDE / 2
    turn = np.array([[math.cos(_CUBE_YAW), 0, math.sin(_CUBE_YAW)], [0, 1, 0],
                     [-math.sin(_CUBE_YAW), 0, math.cos(_CUBE_YAW)]])
    camera = np.array([[1, 0, 0], [0, cos_e, -sin_e], [0, sin_e, cos_e]])  # world -> camera
    for axis in range(3):
        for sign in (-1, 1):
            normal = camera @ turn @ np.eye(3)[axis] * sign
            if normal[2] <= 0:
                continue
            u, v = [np.eye(3)[a] * half for a in range(3) if a != axis]
            centre = np.eye(3)[axis] * sign * half + np.array([0, half, 0])
            corners = [(camera @ turn @ (centre + su * u + sv * v))[:2]
                       for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            edges = list(zip(corners, corners[1:] + corners[:1], strict=True))
            winding = np.sign(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges))
            face = np.ones(x.shape, bool)
            for (x0, y0), (x1, y1) in edges:
                face &= ((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) * winding >= 0
            mask |= face
            normals[face] = normal
    return mask, normals


def _shade(colour: np.ndarray, material: str, normals: np.ndarray, x: np.ndarray,
           y: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of surface points lit from the upper left front."""
    view = np.stack([-x / 2.5, -(y - 1) / 2.5, np.ones_like(x)], axis=-1)  # a camera close by
    view /= np.linalg.norm(view, axis=-1, keepdims=True)
    diffuse = np.clip(normals @ _LIGHT, 0, 1)[..., None]
    reflected = 2 * np.sum(normals * view, axis=-1, keepdims=True) * normals - view
    toward_light = np.clip(reflected @ _LIGHT, 0, 1)[..., None]
    if material == "rubber":
        return colour * (0.42 + 0.72 * diffuse) + 0.06 * toward_light**4
    # Metal mirrors a room, tinted by its colour: a bright sky above, the grey floor below and
    # bright windows around the horizon; the main light makes a sharp white highlight.
    upward = reflected[..., 1:2]
    azimuth = np.arctan2(reflected[..., 0:1], reflected[..., 2:3])
    sky = 0.25 + 0.75 * np.clip((upward + 0.1) / 0.6, 0, 1) ** 2
    windows = (np.clip(np.cos(3 * azimuth + 1), 0, 1) ** 4
               * np.clip(1 - 2 * np.abs(upward + 0.2), 0, 1))
    return (colour * (0.15 + 0.25 * diffuse + 0.7 * sky + 0.9 * windows)
            + 0.85 * toward_light**30 + 0.3 * windows**4)


@cache
def _sprite(shape: str, colour: str, material: str, radius: float) -> Image.Image:
    """RGBA sprite of one object with its shadow, antialiased by supersampling."""
    left, top, width, height = _box(radius)
    steps = _SUPERSAMPLE
    xs = (left + (np.arange(width * steps) + 0.5) / steps) / radius
    ys = -(top + (np.arange(height * steps) + 0.5) / steps) / radius
    x, y = np.meshgrid(xs, ys)
    mask, normals = _surface(shape, x, y)
    rgb = _shade(np.array(COLOURS[colour]) / 255, material, normals, x, y) * mask[..., None]
    # A soft elliptical shadow on the floor, to the right of and behind the object.
    spread = ((x - 0.4) / 1.05) ** 2 + ((y - 0.15) / 0.45) ** 2
    shadow = 0.5 * np.clip((1 - spread) / 0.7, 0, 1)
    alpha = np.where(mask, 1.0, shadow)

    def downsample(values: np.ndarray) -> np.ndarray:
        return values.reshape(height, steps, width, steps, *values.shape[2:]).mean(axis=(1, 3))

    alpha_small = downsample(alpha)
    rgb_small = downsample(np.clip(rgb, 0, 1)) / np.maximum(alpha_small, 1e-6)[..., None]
    pixels = np.dstack([np.clip(rgb_small, 0, 1), alpha_small])
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8), "RGBA")


@lru_cache(maxsize=8)
def _floor(width: int, height: int) -> Image.Image:
    """The empty floor: grey, brightest a little behind the middle, darker toward the edges."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    light = 0.44 + 0.16 * np.exp(-((x - 0.5) ** 2 / 0.18 + (y - 0.4) ** 2 / 0.25)) + 0.04 * y
    grey = np.round(np.clip(light, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(np.dstack([grey, grey, np.clip(grey.astype(int) + 3, 0, 255)]
                                     ).astype(np.uint8), "RGB")


class ClevrSource(ProceduralSource):
    """Procedural CLEVR-like scenes and pairs with a few objects changed (see the module doc)."""

    domain = "scenes"
    provides = ("pairs", "images")

    def __init__(self, *, width: int = 320, height: int = 240, min_objects: int = 3,
                 max_objects: int = 10, num_changes: int = 2, pool_size: int = 0,
                 pool_seed: int = 0) -> None:
        super().__init__(pool_size, pool_seed)
        owner = type(self).__name__
        self.width = check_int(f"{owner}.width", width, 128, 4096)
        self.height = check_int(f"{owner}.height", height, 96, 4096)
        self.min_objects = check_int(f"{owner}.min_objects", min_objects, 1, MAX_OBJECTS)
        self.max_objects = check_int(f"{owner}.max_objects", max_objects, self.min_objects,
                                     MAX_OBJECTS)
        self.num_changes = check_int(f"{owner}.num_changes", num_changes, 1, self.min_objects)
        unit = min(self.width / 320, self.height / 240)
        self._radius = {size: radius * unit for size, radius in SIZES.items()}
        self._box = {size: _box(radius) for size, radius in self._radius.items()}
        self._fill_pool()

    def footprint(self, obj: dict[str, Any]) -> tuple[int, int, int, int]:
        """The screen box (left, top, right, bottom; right and bottom exclusive) covered by an
        object of a description, shadow included."""
        left, top, width, height = self._box[obj["size"]]
        return obj["x"] + left, obj["y"] + top, obj["x"] + left + width, obj["y"] + top + height

    def render_image(self, seed: int) -> SceneImage:
        objects = self._scene(np.random.default_rng(seed))
        return SceneImage(self._draw(objects), f"clevr-{seed:016x}", self._describe(objects))

    def render_pair(self, seed: int) -> ImagePair:
        rng = np.random.default_rng(seed)
        objects = self._scene(rng)
        modified = list(objects)
        changes = []
        for index in sorted(rng.choice(len(objects), self.num_changes, replace=False).tolist()):
            old = objects[index]
            shape = SHAPES[(SHAPES.index(old.shape) + rng.integers(1, len(SHAPES))) % len(SHAPES)]
            colour = COLOUR_NAMES[(COLOUR_NAMES.index(old.colour) + rng.integers(1, len(COLOURS)))
                                  % len(COLOURS)]
            modified[index] = replace(old, shape=shape, colour=colour)
            changes += [
                {"object": index, "attribute": "shape", "before": old.shape, "after": shape},
                {"object": index, "attribute": "colour", "before": old.colour, "after": colour}]
        return ImagePair(self._draw(objects), self._draw(modified), f"clevr-{seed:016x}",
                         self._describe(objects), self._describe(modified), tuple(changes))

    def _scene(self, rng: np.random.Generator) -> list[_Object]:
        """Objects with random attributes at non-overlapping places, sorted back to front."""
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        sizes = [SIZE_NAMES[i] for i in rng.integers(len(SIZES), size=count)]
        places = self._place(rng, sizes)
        shapes = rng.integers(len(SHAPES), size=count)
        colours = rng.integers(len(COLOURS), size=count)
        materials = rng.integers(len(MATERIALS), size=count)
        objects = [_Object(SHAPES[shapes[i]], COLOUR_NAMES[colours[i]], sizes[i],
                           MATERIALS[materials[i]], *places[i]) for i in range(count)]
        return sorted(objects, key=lambda obj: (obj.y, obj.x))

    def _place(self, rng: np.random.Generator, sizes: list[str]) -> list[tuple[int, int]]:
        """Standing points for objects of ``sizes`` whose footprints lie in the image and do not
        overlap: each object takes the first free one of a batch of candidates; a scene in which
        some object finds no room starts over."""
        for _ in range(_RESTARTS):
            places: list[tuple[int, int]] = []
            taken = np.empty((0, 4), int)  # left, top, right, bottom
            for size in sizes:
                left, top, width, height = self._box[size]
                xs = rng.integers(-left, self.width - width - left + 1, size=_CANDIDATES)
                ys = rng.integers(-top, self.height - height - top + 1, size=_CANDIDATES)
                boxes = np.stack([xs + left, ys + top, xs + left + width, ys + top + height], 1)
                new, old = boxes[:, None, :], taken[None, :, :]
                clash = ((new[..., 0] < old[..., 2]) & (old[..., 0] < new[..., 2])
                         & (new[..., 1] < old[..., 3]) & (old[..., 1] < new[..., 3])).any(axis=1)
                free = np.flatnonzero(~clash)
                if not free.size:
                    break
                places.append((int(xs[free[0]]), int(ys[free[0]])))
                taken = np.vstack([taken, boxes[free[0]]])
            else:
                return places
        raise RuntimeError(f"could not place {len(sizes)} objects in {self.width}x{self.height}")

    def _draw(self, objects: list[_Object]) -> np.ndarray:
        canvas = _floor(self.width, self.height).copy()
        for obj in objects:
            sprite = _sprite(obj.shape, obj.colour, obj.material, self._radius[obj.size])
            left, top, _, _ = self._box[obj.size]
            canvas.paste(sprite, (obj.x + left, obj.y + top), sprite)
        return np.asarray(canvas)

    def _describe(self, objects: list[_Object]) -> dict[str, Any]:
        return {"kind": "scene",
                "objects": [{"id": index, "shape": obj.shape, "colour": obj.colour,
                             "size": obj.size, "material": obj.material,
                             "position": self._position(obj.x, obj.y), "x": obj.x, "y": obj.y}
                            for index, obj in enumerate(objects)],
                "stable_attributes": list(STABLE_ATTRIBUTES)}

    def _position(self, x: int, y: int) -> str:
        depth = ("back", "middle", "front")[min(3 * y // self.height, 2)]
        side = ("left", "center", "right")[min(3 * x // self.width, 2)]
        return f"{depth} {side}"
