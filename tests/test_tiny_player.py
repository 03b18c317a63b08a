"""The shipped tiny player is checked before use; its imitation data and fallible teachers."""

import json
import shutil

import pytest

from agents.imitation import scripted_turns, vision_drills
from agents.model import model_path
from agents.tiny_player import ASSET_DIR, BUILD_RECORD, WEIGHTS, tiny_player_path


def test_the_shipped_player_passes_its_checksum_and_is_the_default_model():
    assert tiny_player_path() == ASSET_DIR
    assert model_path(None) == str(ASSET_DIR)
    assert (ASSET_DIR / WEIGHTS).stat().st_size < 10 * 2**20


def test_changed_or_missing_weights_are_refused_with_the_rebuild_command(tmp_path):
    copy = tmp_path / "player"
    shutil.copytree(ASSET_DIR, copy)
    with (copy / WEIGHTS).open("r+b") as weights:
        weights.seek(-1, 2)
        last = weights.read(1)
        weights.seek(-1, 2)
        weights.write(bytes([last[0] ^ 1]))
    with pytest.raises(ValueError, match="does not match its checksum.*agents.tiny_player"):
        tiny_player_path(copy)
    (copy / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="python -m agents.tiny_player"):
        tiny_player_path(copy)
    assert json.loads((ASSET_DIR / BUILD_RECORD).read_text())["stages"]


def test_drills_name_what_the_picture_holds_and_repeat_per_seed():
    first, again = vision_drills("name_single", 5, seed=3), vision_drills("name_single", 5, seed=3)
    assert [e.answer for e in first] == [e.answer for e in again]
    assert all(e.answer.startswith("\\boxed{There is a") for e in first)
    with pytest.raises(ValueError, match="unknown drill"):
        vision_drills("name_everything", 1, seed=0)


def test_fallible_teachers_guess_and_give_bold_spy_clues():
    careful = scripted_turns("spy", 12, seed=0)
    fallible = scripted_turns("spy", 12, seed=0, agent_options={"boldness": 1.0,
                                                                  "vote_accuracy": 0.0})
    def spy_clues(turns):
        return [e.answer for e in turns if e.task == "spy/spy/clue"]

    assert all(c.startswith("I only mention") for c in spy_clues(careful))
    assert all(c.startswith("I describe") for c in spy_clues(fallible))
    votes = [e.answer for e in fallible if e.task.endswith("decision")]
    assert votes and all("cannot tell who it is, so I guess." in v for v in votes)
