"""Training recipes by game name: the spy game's and the duel's, and the default one that trains
any other game from its rewards alone."""

from __future__ import annotations

import pytest

from agents.trajectory import GameResult, TurnRecord
from trainers.recipes import (
    RECIPES,
    DuelRecipe,
    GroupRecipe,
    SpyRecipe,
    make_recipe,
    register_recipe,
)
from trainers.selfplay_config import SelfPlayConfig

SELFPLAY = SelfPlayConfig(repeats=3)


def turn(game_id: str, seat: str, reward: float, played: bool = True) -> TurnRecord:
    return TurnRecord(game_id=game_id, env="count", turn=0, seat=seat, role="counter",
                      phase="count", round=0, agent="model", prompt="?", images=[], text="5",
                      prompt_ids=[1], completion_ids=[2] if played else None, logprobs=[-1.0],
                      reward=reward)


def result(*turns: TurnRecord) -> GameResult:
    return GameResult(game_id=turns[0].game_id, env="count", roles={}, returns={}, stats={},
                      turns=list(turns))


def test_built_in_games_have_their_recipes_and_any_other_game_the_default():
    assert isinstance(make_recipe("spy", SELFPLAY), SpyRecipe)
    duel = make_recipe("qa_duel", SELFPLAY)
    assert isinstance(duel, DuelRecipe) and duel.repeats == 4
    default = make_recipe("count", SELFPLAY)
    assert isinstance(default, GroupRecipe) and default.repeats == 3
    assert default.stages == ("play",) and default.stage == "play"


def test_the_default_recipe_normalises_each_seats_turns_over_the_plays_of_one_seed():
    # three plays of seed "a" (shared game id), one of seed "b"; two seats
    results = [result(turn("a", "p1", 1.0), turn("a", "p2", 0.0)),
               result(turn("a", "p1", 0.0), turn("a", "p2", 0.0)),
               result(turn("a", "p1", 1.0), turn("a", "p2", 1.0), turn("a", "p3", 1.0, False)),
               result(turn("b", "p1", 1.0))]
    rows = GroupRecipe(repeats=3).rows(results)["play"]
    assert len(rows) == 7  # every turn a model played; p3's scripted turn is not trained
    p1_a = [r.advantage for r in rows if r.turn.game_id == "a" and r.turn.seat == "p1"]
    assert p1_a == pytest.approx([0.7071, -1.4142, 0.7071], abs=1e-4)
    p2_a = [r.advantage for r in rows if r.turn.game_id == "a" and r.turn.seat == "p2"]
    assert p2_a == pytest.approx([-0.7071, -0.7071, 1.4142], abs=1e-4)
    assert [r.advantage for r in rows if r.turn.game_id == "b"] == [0.0]  # a group of one


def test_a_registered_recipe_is_used_and_not_silently_replaced():
    register_recipe("count_twice", lambda selfplay: GroupRecipe(repeats=2))
    assert make_recipe("count_twice", SELFPLAY).repeats == 2
    with pytest.raises(ValueError, match="already registered"):
        register_recipe("count_twice", lambda selfplay: GroupRecipe())
    register_recipe("count_twice", lambda selfplay: GroupRecipe(repeats=5), replace=True)
    assert make_recipe("count_twice", SELFPLAY).repeats == 5
    RECIPES.unregister("count_twice")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        GroupRecipe(repeats=0)


def test_selfplay_config_is_the_one_source_of_defaults_and_names_a_bad_field():
    from trainers.selfplay_config import TINY_PLAYER_SWITCH

    assert SelfPlayConfig().switch == TINY_PLAYER_SWITCH and SelfPlayConfig().repeats == 4
    for options, message in (({"games_per_round": 0}, "games_per_round must be an integer >= 1"),
                             ({"schedule": "fast"}, "schedule must be one of"),
                             ({"switch": {**TINY_PLAYER_SWITCH, "rho": 2}},
                              "switch.rho must be in"),
                             ({"switch": [1]}, "switch must be a mapping"),
                             ({"baseline_decay": 1.0}, "baseline_decay must be in [0, 1)"),
                             ({"asynchronous": "yes"}, "asynchronous must be true or false")):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
            SelfPlayConfig(**options)
