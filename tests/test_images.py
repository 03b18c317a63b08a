"""Image sources: procedural scenes and charts, folders of images, and the registry."""

from __future__ import annotations

import copy
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from pettingzoo.test import api_test
from PIL import Image

import envs
from envs.spaces import ImageArray
from games.images import (
    MAX_SIDE,
    SOURCES,
    ChartSource,
    ClevrSource,
    ImageFolderSource,
    ImageSource,
    PairFolderSource,
    SceneImage,
    make_source,
    register_source,
)
from games.images import clevr as clevr_module
from games.images.charts import CHART_TYPES


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_same_pair(first, second) -> None:
    assert first.pair_id == second.pair_id
    np.testing.assert_array_equal(first.original, second.original)
    np.testing.assert_array_equal(first.modified, second.modified)
    assert first.description == second.description
    assert first.changes == second.changes


def apply_changes(description: dict, changes, key: str, list_key: str, id_of) -> dict:
    """``description`` with the change log applied, to compare with the modified description."""
    expected = copy.deepcopy(description)
    by_id = {id_of(entry): entry for entry in expected[list_key]}
    for change in changes:
        entry = by_id[change[key]]
        assert entry[change["attribute"]] == change["before"]
        entry[change["attribute"]] = change["after"]
    return expected


# ----- CLEVR-like scenes -----

@pytest.fixture(scope="module")
def clevr() -> ClevrSource:
    return ClevrSource()


def test_clevr_is_deterministic_per_seed(clevr: ClevrSource) -> None:
    assert_same_pair(clevr.sample_pair(rng(7)), clevr.sample_pair(rng(7)))
    assert_same_pair(ClevrSource().sample_pair(rng(7)), clevr.sample_pair(rng(7)))
    other = clevr.sample_pair(rng(8))
    assert other.pair_id != clevr.sample_pair(rng(7)).pair_id
    assert not np.array_equal(other.original, clevr.sample_pair(rng(7)).original)


def test_clevr_images_have_the_requested_shape() -> None:
    pair = ClevrSource().sample_pair(rng(0))
    for image in (pair.original, pair.modified):
        assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    image = ClevrSource(width=200, height=150).sample_image(rng(0))
    assert isinstance(image, SceneImage)
    assert image.image.shape == (150, 200, 3) and image.image.dtype == np.uint8


def test_clevr_sample_image_is_the_pair_original(clevr: ClevrSource) -> None:
    image, pair = clevr.sample_image(rng(3)), clevr.sample_pair(rng(3))
    np.testing.assert_array_equal(image.image, pair.original)
    assert image.image_id == pair.pair_id and image.description == pair.description


@pytest.mark.parametrize("num_changes", [1, 2, 3])
def test_clevr_pair_differs_exactly_where_the_change_log_says(num_changes: int) -> None:
    source = ClevrSource(num_changes=num_changes)
    for seed in range(12):
        pair = source.sample_pair(rng(seed))
        objects = pair.description["objects"]
        assert 3 <= len(objects) <= 10
        changed = {change["object"] for change in pair.changes}
        assert len(changed) == num_changes and len(pair.changes) == 2 * num_changes
        for change in pair.changes:
            assert change["attribute"] in ("shape", "colour")
            assert change["before"] != change["after"]
        # The modified description is the original with exactly the logged changes.
        assert pair.modified_description == apply_changes(
            pair.description, pair.changes, "object", "objects", lambda obj: obj["id"])
        assert pair.description["stable_attributes"] == ["size", "material", "position"]
        # Pixels differ inside every changed object's footprint and nowhere else.
        differs = (pair.original != pair.modified).any(axis=-1)
        inside = np.zeros_like(differs)
        for obj in objects:
            if obj["id"] in changed:
                left, top, right, bottom = source.footprint(obj)
                assert differs[top:bottom, left:right].any()
                inside[top:bottom, left:right] = True
        assert differs.any() and not differs[~inside].any()


def test_clevr_footprints_lie_in_the_image_and_never_overlap() -> None:
    source = ClevrSource(width=256, height=192, min_objects=10, max_objects=10)
    for seed in range(20):
        objects = source.sample_image(rng(seed)).description["objects"]
        assert len(objects) == 10
        boxes = [source.footprint(obj) for obj in objects]
        for index, (left, top, right, bottom) in enumerate(boxes):
            assert 0 <= left < right <= 256 and 0 <= top < bottom <= 192
            for other_left, other_top, other_right, other_bottom in boxes[:index]:
                assert (right <= other_left or other_right <= left
                        or bottom <= other_top or other_bottom <= top)
        assert [obj["y"] for obj in objects] == sorted(obj["y"] for obj in objects)


@pytest.mark.parametrize("size", ["small", "large"])
def test_clevr_sprites_fit_their_footprint(clevr: ClevrSource, size: str) -> None:
    for shape in clevr_module.SHAPES:
        for material in clevr_module.MATERIALS:
            sprite = clevr_module._sprite(shape, "red", material, clevr._radius[size])
            alpha = np.asarray(sprite)[..., 3]
            assert alpha.shape == clevr._box[size][:1:-1]
            assert alpha.max() == 255  # the object is opaque ...
            assert not (alpha[0].any() or alpha[-1].any() or alpha[:, 0].any()
                        or alpha[:, -1].any())  # ... and nothing touches the edge: nothing cut


def test_clevr_descriptions_use_the_clevr_vocabulary(clevr: ClevrSource) -> None:
    seen = {"shape": set(), "colour": set(), "size": set(), "material": set(), "position": set()}
    for seed in range(30):
        for obj in clevr.sample_image(rng(seed)).description["objects"]:
            for attribute, values in seen.items():
                values.add(obj[attribute])
    assert seen["shape"] == {"cube", "sphere", "cylinder"}
    assert seen["colour"] == {"gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"}
    assert seen["size"] == {"small", "large"} and seen["material"] == {"rubber", "metal"}
    assert {"back left", "front center", "middle right"} <= seen["position"]


def test_clevr_pool_samples_pre_rendered_pairs() -> None:
    source = ClevrSource(pool_size=3, pool_seed=5)
    pool_ids = {pair.pair_id for pair in source._pool}
    assert len(pool_ids) == 3
    generator = rng(0)
    drawn = [source.sample_pair(generator) for _ in range(30)]
    assert {pair.pair_id for pair in drawn} == pool_ids
    image = source.sample_image(generator)
    pool_pair = next(pair for pair in source._pool if pair.pair_id == image.image_id)
    np.testing.assert_array_equal(image.image, pool_pair.original)
    assert not drawn[0].original.flags.writeable
    same_pool = ClevrSource(pool_size=3, pool_seed=5)
    assert_same_pair(same_pool.sample_pair(rng(1)), source.sample_pair(rng(1)))
    assert {pair.pair_id for pair in ClevrSource(pool_size=3, pool_seed=6)._pool} != pool_ids


@pytest.mark.parametrize(("keywords", "message"), [
    ({"width": 10}, "width"),
    ({"height": 320.5}, "height"),
    ({"min_objects": 0}, "min_objects"),
    ({"min_objects": 5, "max_objects": 4}, "max_objects"),
    ({"max_objects": 11}, "max_objects"),
    ({"num_changes": 4}, "num_changes"),
    ({"num_changes": 0}, "num_changes"),
    ({"pool_size": -1}, "pool_size"),
    ({"pool_seed": True}, "pool_seed"),
])
def test_clevr_rejects_bad_arguments(keywords: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClevrSource(**keywords)


# ----- charts -----

@pytest.mark.parametrize("kind", CHART_TYPES)
def test_charts_of_each_kind(kind: str) -> None:
    source = ChartSource(kinds=(kind,))
    for seed in range(6):
        pair = source.sample_pair(rng(seed))
        for image in (pair.original, pair.modified):
            assert image.shape == (240, 320, 3) and image.dtype == np.uint8
        description = pair.description
        assert description["kind"] == "chart" and description["chart_type"] == kind
        assert description["title"]
        items = description["items"]
        assert 3 <= len(items) <= 6
        for key in ("label", "value", "colour"):
            assert len({item[key] for item in items}) == len(items)
        assert all(isinstance(item["value"], int) and item["value"] > 0 for item in items)


def test_chart_pairs_change_exactly_two_logged_attributes() -> None:
    source = ChartSource()
    attributes = set()
    for seed in range(40):
        pair = source.sample_pair(rng(seed))
        assert len(pair.changes) == 2
        assert len({change["item"] for change in pair.changes}) == 2
        for change in pair.changes:
            assert change["before"] != change["after"]
            attributes.add(change["attribute"])
        assert pair.modified_description == apply_changes(
            pair.description, pair.changes, "item", "items", lambda item: item["label"])
        for stable in pair.description["stable_attributes"]:
            assert pair.description[stable] == pair.modified_description[stable]
        assert not np.array_equal(pair.original, pair.modified)
    assert attributes == {"value", "colour", "label"}


def test_charts_are_deterministic_and_pool_works() -> None:
    source = ChartSource()
    assert_same_pair(source.sample_pair(rng(4)), source.sample_pair(rng(4)))
    assert not np.array_equal(source.sample_pair(rng(4)).original,
                              source.sample_pair(rng(5)).original)
    image = ChartSource(width=400, height=300).sample_image(rng(0))
    assert image.image.shape == (300, 400, 3)
    pooled = ChartSource(pool_size=2, pool_seed=1)
    generator = rng(0)
    assert len({pooled.sample_pair(generator).pair_id for _ in range(20)}) == 2


def test_charts_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bar, line, pie"):
        ChartSource(kinds=("bar", "scatter"))
    for kinds in ((), 3, ["bar", None]):
        with pytest.raises(ValueError, match="kinds"):
            ChartSource(kinds=kinds)
    with pytest.raises(ValueError, match="width"):
        ChartSource(width=50)
    assert ChartSource(kinds="line").kinds == ("line",)


# ----- folders -----

def write_image(path: Path, size: tuple[int, int] = (8, 6), colour: int = 0,
                mode: str = "RGB") -> np.ndarray:
    """Write a small image (random pixels from ``colour`` as seed) and return its RGB pixels."""
    pixels = np.random.default_rng(colour).integers(0, 256, (size[1], size[0], 3), np.uint8)
    image = Image.fromarray(pixels)
    image = image.convert("CMYK") if mode == "CMYK" else image.convert(mode)
    image.save(path)
    return pixels


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_vision_zero_pair_folder_loads_unchanged(tmp_path: Path) -> None:
    expected = {}
    for index, base in enumerate(["scene_0001", "scene_0002", "chart_7"]):
        expected[base] = (write_image(tmp_path / f"{base}_original.png", colour=2 * index),
                          write_image(tmp_path / f"{base}_modified.png", colour=2 * index + 1))
    (tmp_path / "metadata.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = PairFolderSource(tmp_path)
    assert len(source) == 3 and source.provides == ("pairs", "images")
    generator = rng(0)
    for _ in range(10):
        pair = source.sample_pair(generator)
        original, modified = expected[pair.pair_id]
        np.testing.assert_array_equal(pair.original, original)
        np.testing.assert_array_equal(pair.modified, modified)
        assert pair.description == {} and pair.changes == ()
    image = source.sample_image(generator)
    assert image.image_id.endswith("_original.png") and image.image.dtype == np.uint8
    assert source.sample_pair(rng(3)).pair_id == PairFolderSource(tmp_path).sample_pair(
        rng(3)).pair_id


def test_pair_folder_skips_bad_files_with_one_warning_naming_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_image(tmp_path / "good_original.jpg")
    write_image(tmp_path / "good_modified.jpeg", colour=1)
    write_image(tmp_path / "lonely_original.png")                # unpaired
    (tmp_path / "broken_original.png").write_bytes(b"not a png")  # corrupt
    write_image(tmp_path / "broken_modified.png")               # unpaired (partner is corrupt)
    write_image(tmp_path / "cut_original.png", size=(30, 30))
    truncate(tmp_path / "cut_original.png")                     # corrupt
    write_image(tmp_path / "cut2_original.jpg", size=(30, 30))
    truncate(tmp_path / "cut2_original.jpg")                    # corrupt: passes verify
    write_image(tmp_path / "cut2_modified.jpg")                 # unpaired
    write_image(tmp_path / "cut_modified.png")                  # unpaired
    write_image(tmp_path / "big_original.png", size=(40, 40))   # oversized
    write_image(tmp_path / "big_modified.png")                  # unpaired
    write_image(tmp_path / "no_suffix.png")                     # unpaired
    write_image(tmp_path / "good_original.png")                 # duplicate
    with pytest.warns(UserWarning) as record, caplog.at_level(logging.DEBUG, "games.images"):
        source = PairFolderSource(tmp_path, max_pixels=1000)
    assert len(record) == 1
    assert str(record[0].message) == (
        f"skipped 11 files in {tmp_path}: "
        "3 corrupt (broken_original.png, cut2_original.jpg, cut_original.png), "
        "1 oversized (big_original.png), "
        "6 unpaired (big_modified.png, broken_modified.png, cut2_modified.jpg and 3 more), "
        "1 duplicate (good_original.png)")
    assert f"{tmp_path}: skipped unpaired files: big_modified.png, broken_modified.png, " \
           "cut2_modified.jpg, cut_modified.png, lonely_original.png, no_suffix.png" in caplog.text
    assert len(source) == 1
    assert source.sample_pair(rng(0)).pair_id == "good"


def test_pil_decompression_bombs_are_refused(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "fine.png", size=(6, 6))
    write_image(tmp_path / "warns.png", size=(8, 8))    # over PIL's limit: a bomb warning
    write_image(tmp_path / "bomb.png", size=(12, 12))   # over twice PIL's limit: a bomb error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.warns(UserWarning) as record:
        source = ImageFolderSource(tmp_path)
    assert len(record) == 1
    assert str(record[0].message) == (f"skipped 2 files in {tmp_path}: 2 oversized "
                                      "(bomb.png, warns.png)")
    assert source.sample_image(rng(0)).image_id == "fine.png"


def test_image_folder_converts_every_mode_to_rgb(tmp_path: Path) -> None:
    for index, mode in enumerate(["L", "P", "RGBA", "RGB"]):
        write_image(tmp_path / f"{mode}.png", size=(5, 4), colour=index, mode=mode)
    write_image(tmp_path / "cmyk.jpg", size=(5, 4), mode="CMYK")
    write_image(tmp_path / "photo.webp", size=(5, 4))
    write_image(tmp_path / "scan.bmp", size=(5, 4))
    source = ImageFolderSource(tmp_path, domain="scans")
    assert len(source) == 7 and source.domain == "scans" and source.provides == ("images",)
    generator = rng(0)
    names = set()
    for _ in range(60):
        image = source.sample_image(generator)
        assert image.image.shape == (4, 5, 3) and image.image.dtype == np.uint8
        names.add(image.image_id)
    assert len(names) == 7
    with pytest.raises(ValueError, match="cannot give pairs"):
        source.sample_pair(generator)


def test_files_that_fail_later_are_dropped(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_image(tmp_path / f"{name}.png")
    source = ImageFolderSource(tmp_path)
    (tmp_path / "a.png").write_bytes(b"gone bad")
    generator = rng(0)
    with pytest.warns(UserWarning, match="a.png"):
        ids = {source.sample_image(generator).image_id for _ in range(10)}
    assert ids == {"b.png"} and len(source) == 1
    (tmp_path / "b.png").unlink()
    with pytest.warns(UserWarning, match="b.png"), pytest.raises(RuntimeError, match="left"):
        source.sample_image(generator)


def test_missing_and_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for source_class in (PairFolderSource, ImageFolderSource):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            source_class(missing)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"_original\.<ext>") as error:
        PairFolderSource(tmp_path)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(ValueError, match="no usable images") as error:
        ImageFolderSource(tmp_path)
    assert str(tmp_path) in str(error.value)
    write_image(tmp_path / "x_original.png")
    with pytest.raises(ValueError, match=r"skipped 1 file in .*: 1 unpaired \(x_original\.png\)"):
        PairFolderSource(tmp_path)
    with pytest.raises(ValueError, match="max_pixels"):
        ImageFolderSource(tmp_path, max_pixels=0)


@pytest.mark.parametrize("path", [None, "", 3, b"folder"])
def test_a_path_that_is_no_path_is_a_clear_error(path) -> None:
    for source_class in (PairFolderSource, ImageFolderSource):
        with pytest.raises(ValueError, match=f"{source_class.__name__}: 'path' must name the "
                                             f"image folder .*got {re.escape(repr(path))}"):
            source_class(path)
    with pytest.raises(ValueError, match="'path' must name the image folder"):
        envs.make("spy", images={"source": "pair_folder", "path": path})


def test_skipped_files_are_reported_once_per_folder_not_once_per_environment(
        tmp_path: Path) -> None:
    """A run builds one environment per game slot over the same folder: one warning for all."""
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder in folders:
        folder.mkdir()
        write_image(folder / "a_original.png")
        write_image(folder / "a_modified.png", colour=1)
        write_image(folder / "lonely_original.png")
    with pytest.warns(UserWarning) as record:
        for _ in range(3):
            for folder in folders:
                envs.make("spy", images={"source": "pair_folder", "path": str(folder)})
        PairFolderSource(folders[0])
    assert [str(warning.message) for warning in record] == [
        f"skipped 1 file in {folder}: 1 unpaired (lonely_original.png)" for folder in folders]
    write_image(folders[0] / "b_modified.png")  # a different report: given again
    with pytest.warns(UserWarning, match="2 unpaired"):
        PairFolderSource(folders[0])


def test_images_longer_than_the_observation_space_allows_are_scaled_down(tmp_path: Path) -> None:
    """A 9000 x 200 pair passes the scan, is scaled to 8192 x 182 (aspect kept) and the
    environment over it passes PettingZoo's api_test; a 20000 x 2 sliver keeps a 1-pixel side."""
    write_image(tmp_path / "wide_original.png", size=(9000, 200), colour=0)
    write_image(tmp_path / "wide_modified.png", size=(9000, 200), colour=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = PairFolderSource(tmp_path)
    pair = source.sample_pair(rng(0))
    assert pair.original.shape == pair.modified.shape == (182, MAX_SIDE, 3)
    assert ImageArray().contains(pair.original) and ImageArray().max_side == MAX_SIDE
    env = envs.make("spy", images={"source": "pair_folder", "path": str(tmp_path)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PettingZoo's notes on text observations
        api_test(env, num_cycles=10)
    write_image(tmp_path / "sliver.png", size=(20000, 2))
    tall = Image.fromarray(np.zeros((10000, 3, 3), np.uint8))
    tall.save(tmp_path / "tall.png")
    shapes = {ImageFolderSource(tmp_path).sample_image(rng(seed)).image.shape
              for seed in range(20)}
    assert shapes == {(182, MAX_SIDE, 3), (1, MAX_SIDE, 3), (MAX_SIDE, 2, 3)}


# ----- the registry -----

def test_make_source_builds_registered_sources(tmp_path: Path) -> None:
    assert isinstance(make_source("clevr", width=160, height=120), ClevrSource)
    assert isinstance(make_source("charts", kinds=["pie"]), ChartSource)
    write_image(tmp_path / "x.png")
    assert isinstance(make_source("image_folder", path=tmp_path), ImageFolderSource)
    assert set(SOURCES) >= {"clevr", "charts", "pair_folder", "image_folder"}


def test_make_source_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown image source 'nope'.*clevr.*image_folder"):
        make_source("nope")
    with pytest.raises(TypeError, match="'clevr'.*'colour_count'"):
        make_source("clevr", colour_count=3)
    with pytest.raises(TypeError, match="'pair_folder'.*'path'"):
        make_source("pair_folder")
    with pytest.raises(ValueError, match=r"ClevrSource\.width"):
        make_source("clevr", width=-1)


def test_register_source_adds_a_user_source() -> None:
    class Blank(ImageSource):
        provides = ("images",)

        def __init__(self, side: int = 4) -> None:
            self.side = side

        def sample_image(self, rng: np.random.Generator) -> SceneImage:
            return SceneImage(np.zeros((self.side, self.side, 3), np.uint8), "blank")

    register_source("blank", Blank)
    try:
        assert make_source("blank", side=2).sample_image(rng(0)).image.shape == (2, 2, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_source("blank", ClevrSource)
    finally:
        SOURCES.unregister("blank")
    with pytest.raises(TypeError, match="subclass of ImageSource"):
        register_source("thing", dict)
