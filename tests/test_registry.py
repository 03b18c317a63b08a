"""The one registry that names environments, image sources, agents, scripted players, recipes."""

import sys

import pytest

import envs
from agents import AGENTS, SCRIPTED
from games.images import SOURCES
from games.registry import Registry, UnknownNameError
from trainers.recipes import RECIPES


def test_every_kind_of_named_thing_is_registered_and_looked_up_alike():
    for registry, name in ((envs.ENVIRONMENTS, "spy"), (SOURCES, "clevr"), (AGENTS, "random"),
                           (SCRIPTED, "spy"), (RECIPES, "qa_duel")):
        assert isinstance(registry, Registry) and name in registry and registry[name]
        with pytest.raises(UnknownNameError, match=f"unknown {registry.kind} 'nope'; known: "):
            registry["nope"]


def test_register_look_up_replace_and_forget():
    colours = Registry("colour")
    assert colours.register("red", 1) == 1 and colours["red"] == 1 and list(colours) == ["red"]
    colours.register("red", 1)  # the same entry again is no conflict
    with pytest.raises(ValueError, match="colour 'red' is already registered; pass replace=True"):
        colours.register("red", 2)
    colours.register("red", 2, replace=True)
    assert dict(colours) == {"red": 2}
    colours.unregister("red")
    with pytest.raises(KeyError, match=r"^unknown colour 'red'; known: none$"):
        colours["red"]
    for bad in ("", "a:b", None):
        with pytest.raises(ValueError, match="non-empty string without ':'"):
            colours.register(bad, 3)
    with pytest.raises(UnknownNameError):
        colours[["unhashable"]]


def test_an_entry_of_the_wrong_kind_is_refused_by_the_check():
    def positive(name, value):
        if value <= 0:
            raise TypeError(f"{name} must be positive")

    sizes = Registry("size", check=positive)
    sizes.register("big", 10)
    with pytest.raises(TypeError, match="tiny must be positive"):
        sizes.register("tiny", 0)
    assert "tiny" not in sizes


def test_module_colon_name_imports_the_module_that_registers_name(tmp_path, monkeypatch):
    colours = Registry("colour")
    monkeypatch.setattr(sys.modules[__name__], "COLOURS", colours, raising=False)
    (tmp_path / "my_colours.py").write_text(
        f"import {__name__} as where\nwhere.COLOURS.register('teal', 7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert colours["my_colours:teal"] == 7 and colours["teal"] == 7
    finally:
        sys.modules.pop("my_colours", None)
    with pytest.raises(UnknownNameError, match="colour 'no_module:teal': cannot import module "
                                               "'no_module'.*Python path"):
        colours["no_module:teal"]
