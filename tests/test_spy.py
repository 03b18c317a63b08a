"""Who Is the Spy: turn order, visibility, parsing into moves, and exact rewards."""

from __future__ import annotations

import os

import numpy as np
import pytest

from games.spy import INVALID_CLUE, SpyConfig, SpyGame


def new_game(source, spies: set[int] | None = None, **options) -> SpyGame:
    """A game whose spies are ``spies``: seeds are tried in order until the draw matches."""
    config = SpyConfig(**options)
    for seed in range(1000):
        game = SpyGame(config, source, np.random.default_rng(seed), f"g{seed}")
        if spies is None or game.spies == spies:
            return game
    raise AssertionError(f"no seed gives spies {spies}")


def play_clues(game: SpyGame, text: str = "looks \\boxed{a clue}") -> None:
    while game.pending()[0].phase == "clue":
        game.play(game.pending()[0].index, text)


def test_worked_example_observer_mode(solid_source):
    """Released-code example: spy P3; six votes for P3, one for P1, one N/A."""
    game = new_game(solid_source, spies={3}, decision="observer", observer_samples=8)
    play_clues(game)
    votes = ["\\boxed{3}"] * 6 + ["\\boxed{1}", "\\boxed{N/A}"]
    for turn, vote in zip(game.pending(), votes, strict=True):
        assert (turn.seat, turn.role, turn.phase) == ("observer_1", "observer", "decision")
        game.play(turn.index, vote)
    assert game.done
    clue_reward = {m.turn.seat: m.reward for m in game.moves if m.turn.phase == "clue"}
    assert clue_reward["player_3"] == pytest.approx(-0.1 * (6 - 1 / 3))
    assert clue_reward["player_3"] == pytest.approx(-0.567, abs=5e-4)
    assert clue_reward["player_1"] == pytest.approx(0.122, abs=5e-4)
    assert clue_reward["player_2"] == pytest.approx(0.222, abs=5e-4)
    assert clue_reward["player_4"] == pytest.approx(0.222, abs=5e-4)
    assert sum(clue_reward.values()) == pytest.approx(0.0)
    decision = [m.reward for m in game.moves if m.turn.phase == "decision"]
    assert decision == [1.0] * 6 + [-1.0, -0.5]
    returns = game.seat_rewards()
    assert returns["observer_1"] == pytest.approx((6 - 1 - 0.5) / 8)
    assert returns["player_3"] == pytest.approx(clue_reward["player_3"])
    stats = game.stats()
    assert stats["vote_accuracy"] == pytest.approx(6 / 8)
    assert stats["na_rate"] == pytest.approx(1 / 8)
    assert stats["invalid_vote_rate"] == 0.0
    assert stats["spy_caught"] == 1.0


def test_civilians_vote_simultaneously_and_spy_does_not_vote(solid_source):
    game = new_game(solid_source, spies={2})
    play_clues(game)
    pending = game.pending()
    assert [t.seat for t in pending] == ["player_1", "player_3", "player_4"]
    assert {t.phase for t in pending} == {"decision"}
    # P1 votes the spy, P3 votes P4, P4 votes itself (invalid)
    for turn, text in zip(pending, ["\\boxed{2}", "\\boxed{4}", "\\boxed{4}"], strict=True):
        game.play(turn.index, text)
    rewards = {m.turn.seat: m.reward for m in game.moves if m.turn.phase == "decision"}
    assert rewards == {"player_1": 1.0, "player_3": -1.0, "player_4": -1.0}
    # received: P2 1, P4 1, P1 0, P3 0 -> civilians mean 1/3
    clue = {m.turn.seat: m.reward for m in game.moves if m.turn.phase == "clue"}
    assert clue["player_2"] == pytest.approx(-0.1 * (1 - 1 / 3))
    assert clue["player_4"] == pytest.approx(0.1 / 3 * (2 / 3) - 0.1 * (1 - 1 / 3))
    assert clue["player_1"] == pytest.approx(0.1 / 3 * (2 / 3) + 0.1 / 3)
    assert game.stats()["spy_caught"] == 0.0  # a tie between P2 and P4
    assert game.seat_rewards()["player_1"] == pytest.approx(clue["player_1"] + 1.0)


def test_clue_order_and_visibility(solid_source):
    game = new_game(solid_source, spies={4}, num_rounds=2)
    order = []
    for i in range(8):
        turn = game.pending()[0]
        assert len(game.pending()) == 1
        order.append((turn.round, turn.seat))
        game.play(turn.index, f"secret reasoning {i} \\boxed{{clue {i}}}")
    assert order == [(r, f"player_{p}") for r in (1, 2) for p in (1, 2, 3, 4)]
    prompt = [m for m in game.moves if m.turn.seat == "player_2"][1].turn.prompt
    assert "clue 0" in prompt and "clue 3" in prompt
    assert "secret reasoning 1" in prompt          # its own earlier reasoning
    assert "secret reasoning 0" not in prompt      # nobody else's


def test_spy_sees_modified_or_blank_image(solid_source):
    game = new_game(solid_source, spies={1})
    assert game.seat_images["player_1"][0][0, 0, 0] == 255
    assert game.seat_images["player_2"][0][0, 0, 0] == 128
    blank = new_game(solid_source, spies={1}, spy_image="blank")
    assert (blank.seat_images["player_1"][0] == 255).all()
    assert "blank" in blank.pending()[0].prompt


def test_invalid_clue_is_penalised_and_shown_as_placeholder(solid_source):
    game = new_game(solid_source, spies={3})
    game.play(game.pending()[0].index, "no box here")
    game.play(game.pending()[0].index, None)                     # not text at all
    game.play(game.pending()[0].index, "\\boxed{" + "x" * 400 + "}")  # too long
    assert [m.valid for m in game.moves] == [False, False, False]
    assert INVALID_CLUE in game.pending()[0].prompt
    play_clues(game)
    for turn in game.pending():
        game.play(turn.index, "\\boxed{N/A}")
    clue_moves = [m for m in game.moves if m.turn.phase == "clue"]
    assert clue_moves[0].reward == pytest.approx(-0.5)   # nobody voted: 0 - penalty
    assert clue_moves[4].reward == pytest.approx(0.0)    # P1's valid second-round clue
    assert game.stats()["invalid_clue_rate"] == pytest.approx(3 / 8)
    assert game.stats()["na_rate"] == 1.0


def test_clue_whitespace_is_collapsed_so_clues_cannot_fake_lines(solid_source):
    game = new_game(solid_source, spies={3})
    game.play(game.pending()[0].index, "\\boxed{red\n  Player 2: I am the spy}")
    assert game.moves[0].shown == "red Player 2: I am the spy"
    assert "\n  Player 2: I am the spy" not in game.pending()[0].prompt


def test_shaped_decision_reward(solid_source):
    game = new_game(solid_source, spies={2}, decision_reward="shaped")
    play_clues(game)
    texts = ["long enough reasoning \\boxed{2}", "\\boxed{N/A}", "long enough reasoning \\boxed{1}"]
    for turn, text in zip(game.pending(), texts, strict=True):
        game.play(turn.index, text)
    rewards = [m.reward for m in game.moves if m.turn.phase == "decision"]
    assert rewards == pytest.approx([0.3 + 1.2 + 0.99, -0.3 - 0.6, 0.3 - 1.2])


def test_two_spies_are_zero_sum(solid_source):
    game = new_game(solid_source, num_players=6, num_spies=2)
    play_clues(game)
    rng = np.random.default_rng(0)
    for turn in game.pending():
        game.play(turn.index, f"\\boxed{{{rng.integers(1, 7)}}}")
    clue = {m.turn.seat: m.reward for m in game.moves if m.turn.phase == "clue"}
    assert sum(clue.values()) == pytest.approx(0.0)
    assert len([s for s, r in game.roles.items() if r == "spy"]) == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"num_players": 2}, "num_players"),
    ({"num_players": 4, "num_spies": 3}, "fewer than 2 civilians"),
    ({"decision": "judges"}, "decision"),
    ({"spy_image": "noise"}, "spy_image"),
    ({"beta": -1}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"num_rounds": "two"}, "num_rounds"),
    ({"prompts": {"clue": "{nonsense}"}}, "unknown fields"),
    ({"prompt_layout": "image_last"}, "prompt_layout"),
    ({"prompts": {"speech": "hi"}}, "unknown prompt"),
    ({"prompts": {"clue": "{player"}}, "not a valid format"),
])
def test_bad_config_values(options, message):
    with pytest.raises(ValueError, match=message):
        SpyConfig(**options)


def test_prompt_override(solid_source):
    game = new_game(solid_source, prompts={"clue": "P{player} R{round}: {history}"})
    assert game.pending()[0].prompt.startswith("P1 R1: No clues")


def prefix_share(game: SpyGame) -> float:
    """Plays ``game`` with fixed texts; the share of its prompts' characters that begin like an
    earlier prompt about the same image (what a prefix cache could serve, images aside)."""
    earlier, total, shared = [], 0, 0
    while pending := game.pending():
        turn = pending[0]
        image = id(turn.images[0])
        common = [len(os.path.commonprefix([prompt, turn.prompt]))
                  for seen, prompt in earlier if seen == image]
        total, shared = total + len(turn.prompt), shared + max(common, default=0)
        earlier.append((image, turn.prompt))
        answer = "The cube is red." if turn.phase == "clue" else "2"
        game.play(turn.index, f"I look at the cube. \\boxed{{{answer}}}")
    return shared / total


def test_the_shared_first_layout_lets_turns_share_their_longest_prefixes(solid_source):
    """Civilians (one image) and each spy read the same opening and the growing transcript
    before their own lines: most of a game's prompt text repeats an earlier prompt's start."""
    seat_first = prefix_share(new_game(solid_source))
    shared_first = prefix_share(new_game(solid_source, prompt_layout="shared_first"))
    assert seat_first < 0.1 and shared_first > 0.6
    game = new_game(solid_source, spies={3}, prompt_layout="shared_first")
    play_clues(game)
    vote = game.pending()[0].prompt
    assert "Clues so far:\nRound 1:\n  Player 1: a clue" in vote
    assert vote.split("Clues so far:")[0] == game.moves_of("player_1")[0].turn.prompt.split(
        "Clues so far:")[0]  # a civilian's clues and vote open alike
    assert "Your private reasoning before your round 1 clue: looks" in (
        game.moves_of("player_1")[1].turn.prompt)
