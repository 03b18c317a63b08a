"""The PettingZoo environments: observations, infos, seeds, the registry and the spaces.

PettingZoo's own tests, determinism, the turn protocol and garbage actions of every kind are
checked for every game by the conformance suite (tests/test_conformance.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import envs
from envs.spaces import FreeText, ImageArray
from envs.testing import garbage as garbage_actions
from tests.test_qa_duel import QUESTION

CONFIGS = Path(__file__).parent.parent / "configs"


def test_every_registered_env_is_a_hydra_config_made_from_its_dataclass_defaults():
    from hydra import compose, initialize_config_dir

    from envs.configs import store_env_configs

    store_env_configs()
    with initialize_config_dir(str(CONFIGS), version_base=None):
        for name in envs.registered():
            config = OmegaConf.to_container(compose("arena", overrides=[f"env={name}"]).env)
            game_class = envs.spec(name).game_class()
            defaults = json.loads(json.dumps(dataclasses.asdict(game_class.config_class())))
            assert config == {"name": name, **defaults}
            env = envs.make(**config)
            env.reset(seed=0)
            assert env.agents
        changed = compose("arena", overrides=["env=spy", "env.num_players=5"]).env
        assert envs.make(**changed).possible_agents[-1] == "player_5"
    assert not (CONFIGS / "env").exists()  # the dataclasses are the one source of defaults


def play(env, actions, seed=0):
    """Play one game, giving every live agent the next action from ``actions``."""
    env.reset(seed=seed)
    turns = []
    actions = iter(actions)
    for agent in env.agent_iter():
        observation, _, terminated, truncated, info = env.last()
        if terminated or truncated:
            env.step(None)
            continue
        assert env.observation_space(agent).contains(observation)
        turns.append((info, observation))
        env.step(next(actions))
    return turns


BROKEN_BOXES = ["\\boxed{", "}\\boxed{}{", "\\boxed{\\boxed{\\boxed{"]


@pytest.mark.parametrize("garbage", BROKEN_BOXES, ids=range(len(BROKEN_BOXES)))
@pytest.mark.parametrize("name", ["spy", "qa_duel"])
def test_broken_boxes_are_penalised_invalid_moves(name, garbage):
    """Text any game may accept is not checked by the conformance suite; these games refuse it."""
    env = envs.make(name)
    turns = play(env, [garbage] * 100)
    game = env.game
    assert game.done and turns
    assert not any(m.valid for m in game.moves)
    for move in game.moves:
        assert np.isfinite(move.reward)
    if name == "spy":
        assert all(m.reward < 0 for m in game.moves)  # invalid clues and votes both cost
    else:
        assert game.seat_rewards()["questioner_1"] == -1.0


def test_duel_solver_takes_every_garbage_after_a_valid_question_as_unrewarded_invalid_answers():
    """An invalid question ends the duel, so garbage in its first turn never reaches the solver:
    here a well-formed question comes first, then every kind of garbage as the solver's answers,
    between valid ones. No action raises; each garbage answer is an invalid move earning 0 (the
    duel's rule for invalid answers) and still counts in the confidence's total."""
    kinds = garbage_actions(envs.make("qa_duel").max_action_chars)
    valid = "Three cubes. \\boxed{C}"  # the question's intuitive answer
    answers = [valid, *kinds.values(), valid, valid]
    env = envs.make("qa_duel", num_answers=len(answers))
    env.reset(seed=0)
    actions, final = iter([QUESTION, *answers]), {}
    for agent in env.agent_iter():
        _, reward, terminated, truncated, info = env.last()
        if terminated or truncated:
            final[agent] = (reward, info)
            env.step(None)
            continue
        assert info["phase"] == ("question" if agent == "questioner_1" else "answer")
        env.step(next(actions))
    assert next(actions, None) is None  # every answer was asked for
    question, *answer_moves = env.game.moves
    assert question.valid and question.value == "C"
    garbage_turns = [move.turn.index for move in answer_moves[1:-2]]
    assert [move.valid for move in answer_moves] == [True] + [False] * len(kinds) + [True] * 2
    assert [move.reward for move in answer_moves] == [1.0] + [0.0] * len(kinds) + [1.0] * 2
    confidence = 3 / len(answers)  # 3 "C" of all answers, garbage included: below the band
    stats = {"valid_question": 1.0, "confidence": confidence, "agrees": 1.0, "in_band": 0.0,
             "valid_answer_rate": confidence}
    # dual-track, intuitive answer = majority: min(c, 1 - c); the solver: its mean answer reward
    returns = {"questioner_1": min(confidence, 1 - confidence), "solver_1": confidence}
    assert set(final) == set(returns)
    for seat, (reward, info) in final.items():
        assert reward == pytest.approx(returns[seat]) and info["return"] == reward
        assert info["stats"] == pytest.approx(stats)
    assert final["questioner_1"][1]["invalid_turns"] == []
    assert final["solver_1"][1]["invalid_turns"] == garbage_turns
    assert final["solver_1"][1]["turn_rewards"] == {
        move.turn.index: move.reward for move in answer_moves}


def test_turn_infos_and_final_infos():
    env = envs.make("spy", decision="observer", observer_samples=2)
    env.reset(seed=3)
    seen = []
    for agent in env.agent_iter():
        _, reward, terminated, _, info = env.last()
        if terminated:
            assert {"return", "stats", "turn_rewards", "role"} <= set(info)
            assert reward == pytest.approx(info["return"])
            assert sum(info["turn_rewards"].values()) == pytest.approx(
                sum(m.reward for m in env.game.moves_of(agent)))
            env.step(None)
            continue
        assert {"game_id", "turn", "seat", "role", "phase", "round"} <= set(info)
        assert info["seat"] == agent
        seen.append((info["phase"], info["round"], info["role"]))
        env.step("reasoning \\boxed{1}" if info["phase"] == "decision" else "\\boxed{a cube}")
    assert [p for p, _, _ in seen] == ["clue"] * 8 + ["decision"] * 2
    assert {r for _, r, _ in seen} == {0, 1, 2}
    assert env.game.stats()["vote_accuracy"] in (0.0, 0.5, 1.0)


def test_observation_carries_prompt_images_phase_and_context():
    env = envs.make("spy")
    env.reset(seed=1)
    observation = env.observe(env.agent_selection)
    assert "Player 1" in observation["prompt"]
    assert observation["phase"] == "clue"
    (image,) = observation["images"]
    assert image.dtype == np.uint8 and image.shape == (240, 320, 3)
    context = json.loads(observation["context"])
    assert context["player"] == 1 and context["scene"]["objects"]
    idle = env.observe("player_3")
    assert idle["prompt"] == "" and idle["images"] == ()


def test_different_seeds_different_games():
    def prompts(seed):
        return [obs["prompt"] for _, obs in play(envs.make("spy"), ["\\boxed{x}"] * 50, seed)]

    assert prompts(7) != prompts(8)


def test_games_continue_after_reset_without_seed():
    env = envs.make("qa_duel")
    env.reset(seed=0)
    first = env.game.game_id
    env.reset()
    assert env.game.game_id != first


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown environment .spyy.; known: qa_duel, spy"):
        envs.make("spyy")
    with pytest.raises(ValueError, match="unknown option.*num_player"):
        envs.make("spy", num_player=4)
    with pytest.raises(ValueError, match="already registered"):
        envs.register("spy", "games.spy:SpyGame")
    with pytest.raises(TypeError, match="entry_point"):
        envs.register("broken", object)
    try:
        envs.register("missing", "no_such_module:Game")
        with pytest.raises(ImportError, match="no_such_module"):
            envs.make("missing")
        envs.register("not_a_game", "json:dumps")
        with pytest.raises(TypeError, match="not a Game"):
            envs.make("not_a_game")
    finally:
        envs.ENVIRONMENTS.unregister("missing")
        envs.ENVIRONMENTS.unregister("not_a_game")
    with pytest.raises(ValueError, match="render_mode"):
        envs.make("spy", render_mode="human")
    with pytest.raises(ValueError, match="num_players"):
        envs.make("spy", num_players=1)
    with pytest.raises(ValueError, match="unknown image source|clevrr"):
        envs.make("spy", images={"source": "clevrr"})


def test_spy_refuses_a_folder_of_single_images(tmp_path):
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="pairs"):
        envs.make("spy", images={"source": "image_folder", "path": str(tmp_path)})
    env = envs.make("qa_duel", images={"source": "image_folder", "path": str(tmp_path)})
    env.reset(seed=0)


def test_spaces():
    text = FreeText(10)
    assert text.contains("a, b! ü") and not text.contains("x" * 11) and not text.contains(b"a")
    assert text.contains(text.sample())
    image = ImageArray(max_side=100)
    assert image.contains(np.zeros((5, 7, 3), np.uint8))
    assert not image.contains(np.zeros((5, 7), np.uint8))
    assert not image.contains(np.zeros((5, 7, 3), np.float32))
    assert not image.contains(np.zeros((101, 7, 3), np.uint8))
    assert image.contains(image.sample())
