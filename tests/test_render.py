"""Replays: transcript, picture and HTML page of real games, including hostile model text."""

from __future__ import annotations

import base64
import io
import re
import unicodedata
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

import envs
from envs.render import render_replay, render_replay_html, render_transcript, save_replay
from games.core import Game, Move, Turn

CLUE = "I look at it.\nThen I see \\boxed{a red cube}"
VOTE = "Player 2 was vague. \\boxed{2}"
QUESTION = """<description>some shapes</description>
<question>How many cubes are there?
A) one
B) two
C) three
D) four</question>
<answer>B</answer>"""
ANSWER = "<think>count them</think> \\boxed{B}"
HOSTILE = ("\x1b[31m<script>alert(1)</script>\x1b]0;pwned\x07\r\x08\u202e"
           "\\boxed{<b>x</b>\x1b[2J\x9b6n}")
DATA_URL = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def play(env, answer: Callable[[str], str], seed: int = 0) -> Game:
    """Play one game through the environment, answering each turn by its phase."""
    env.reset(seed=seed)
    for _ in env.agent_iter():
        obs, _, term, trunc, _ = env.last()
        env.step(None if term or trunc else answer(obs["phase"]))
    assert env.game.done
    return env.game


def spy_answer(phase: str) -> str:
    return CLUE if phase == "clue" else VOTE


def qa_answer(phase: str) -> str:
    return QUESTION if phase == "question" else ANSWER


def hostile(phase: str) -> str:
    return HOSTILE


def no_control_characters(text: str) -> bool:
    return all(c == "\n" or unicodedata.category(c) not in ("Cc", "Cf", "Cs") for c in text)


def decoded_images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in DATA_URL.findall(page)]


@pytest.mark.parametrize("options", [{}, {"num_players": 8, "num_spies": 2,
                                          "decision": "observer", "observer_samples": 3}])
def test_spy_replays_show_every_seat_move_and_image(options):
    game = play(envs.make("spy", **options), spy_answer)
    transcript = render_transcript(game)
    for seat, role in game.roles.items():
        assert re.search(rf"^  {seat}\s+{role}$", transcript, re.MULTILINE), seat
    assert game.game_id in transcript
    assert transcript.count("shown: a red cube") == len(game.moves_of(phase="clue"))
    assert "I look at it. / Then I see \\boxed{a red cube}" in transcript  # one line per move
    assert len([line for line in transcript.splitlines() if line.startswith("      text:")]) \
        == len(game.moves)
    for name in game.stats():
        assert f"  {name}: " in transcript
    assert "returns:" in transcript and "reward " in transcript

    picture = render_replay(game)
    assert picture.mode == "RGB"
    assert 720 <= picture.width <= 1400 and 200 < picture.height < 3000

    page = render_replay_html(game)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    images = decoded_images(page)
    distinct = {game.seat_images[seat][0].tobytes() for seat in game.seat_images}
    assert len(images) == len(distinct) == 2  # original and modified, each shown once
    assert {np.asarray(image.convert("RGB")).tobytes() for image in images} == distinct
    for seat in game.roles:
        assert seat in page
    assert page.count("<details>") == len(game.moves)


def test_qa_duel_replays_show_the_question_and_answers():
    game = play(envs.make("qa_duel", num_answers=3), qa_answer)
    assert game.stats()["valid_question"] == 1.0
    transcript = render_transcript(game)
    assert "shown: How many cubes are there? / A) one / B) two" in transcript
    assert transcript.count("shown: answer: B") == 3
    assert "questioner_1" in transcript and "solver_1" in transcript
    page = render_replay_html(game)
    assert len(DATA_URL.findall(page)) == 1  # both seats saw the same image
    assert "questioner_1 (questioner), solver_1 (solver)" in page
    assert "&lt;question&gt;How many cubes" in page
    assert render_replay(game).mode == "RGB"


@pytest.mark.parametrize("name", ["spy", "qa_duel"])
def test_hostile_model_text_is_neutralised(name):
    game = play(envs.make(name), hostile)
    if name == "spy":  # the clue itself is hostile, and valid
        assert all(m.valid and "<b>" in m.shown for m in game.moves_of(phase="clue"))

    page = render_replay_html(game)
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\x9b" not in page and no_control_characters(page)
    assert 'src="http' not in page and "default-src 'none'" in page
    # the spy's original and modified pictures, the duel's one picture: each shown once
    assert len(DATA_URL.findall(page)) == (2 if name == "spy" else 1)

    transcript = render_transcript(game)
    assert no_control_characters(transcript)
    assert "[31m" not in transcript and "pwned" not in transcript and "[2J" not in transcript
    assert "<script>alert(1)</script>" in transcript  # plain text is kept, only escapes go
    for seat in game.roles:
        assert seat in transcript
    assert all(len(line) < 600 for line in transcript.splitlines())

    assert render_replay(game).mode == "RGB"


def test_long_text_is_truncated_in_transcript_and_picture():
    env = envs.make("spy", max_clue_chars=5000)
    game = play(env, lambda phase: "word " * 2000 + "\\boxed{" + "long clue " * 400 + "}")
    transcript = render_transcript(game)
    assert all(len(line) < 600 for line in transcript.splitlines())
    assert "chars]" in transcript
    short = play(env, spy_answer)
    line_height = 19  # at most three lines per move, however long its text
    assert render_replay(game).height <= render_replay(short).height + 2 * line_height * len(
        game.moves)
    assert "word " * 2000 in render_replay_html(game)  # the page keeps the full text


def test_env_render_modes_during_and_after_a_game():
    ansi = envs.make("spy", render_mode="ansi")
    ansi.reset(seed=1)
    during = ansi.render()
    assert during == render_transcript(ansi.game)
    assert "in progress" in during and "returns:" not in during
    play(ansi, spy_answer, seed=1)
    after = ansi.render()
    assert after == render_transcript(ansi.game) and "finished" in after

    rgb = envs.make("spy", render_mode="rgb_array")
    rgb.reset(seed=1)
    frame = rgb.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    play(rgb, spy_answer, seed=1)
    final = rgb.render()
    assert final.shape[2] == 3 and final.shape[0] > frame.shape[0]  # the moves were added


def test_save_replay_writes_png_and_html_and_refuses_other_suffixes(tmp_path):
    game = play(envs.make("spy"), spy_answer)
    png = save_replay(game, tmp_path / "game.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.mode == "RGB"
    for name in ("game.html", "game.HTM"):
        page = save_replay(game, str(tmp_path / name))
        assert page.read_text(encoding="utf-8") == render_replay_html(game)
    for name in ("game.txt", "game", "game.png.gz"):
        with pytest.raises(ValueError, match="png"):
            save_replay(game, tmp_path / name)
        assert not (tmp_path / name).exists()


class ShapesGame(Game):
    """A one-turn-per-seat game over images of the given sizes (None: the seat sees nothing)."""

    name = "shapes"
    config_class = dict
    needs = "images"

    def __init__(self, sizes: list[tuple[int, int] | None], side: int = 1):
        super().__init__({"sizes": sizes}, None, np.random.default_rng(0), "shapes-0")
        self._images = {}
        for i, size in enumerate(sizes):
            shown = () if size is None else (np.full((size[0] * side, size[1] * side, 3),
                                                     60 if i < 4 else 200, np.uint8),)
            self._images[f"seat_{i}"] = shown
            self._ask(f"seat_{i}", "looker", "look", 1, "look", shown, {})

    @classmethod
    def seats(cls, config: dict) -> tuple[str, ...]:
        return tuple(f"seat_{i}" for i in range(len(config["sizes"])))

    @property
    def roles(self) -> dict[str, str]:
        return dict.fromkeys(self._images, "looker")

    @property
    def seat_images(self) -> dict[str, tuple[np.ndarray, ...]]:
        return dict(self._images)

    def seat_rewards(self) -> dict[str, float]:
        return dict.fromkeys(self._images, 1.0)

    def stats(self) -> dict[str, float]:
        return {"looks": float(len(self.moves))}

    def _judge(self, turn: Turn, text: str | None) -> Move:
        return Move(turn, text or "", valid=bool(text), shown=text or "nothing")

    def _advance(self) -> None:
        pass


def finished(game: ShapesGame) -> ShapesGame:
    for turn in game.pending():
        game.play(turn.index, f"{turn.seat} looked")
    return game


def test_images_of_any_size_are_scaled_to_one_height_and_shared_images_shown_once():
    sizes = [(20, 20)] * 4 + [(10, 40), (90, 30), (3, 200), None]  # 8 seats; 4 share an image
    small = finished(ShapesGame(sizes))
    large = finished(ShapesGame(sizes, side=7))
    # Solid images: once scaled to the thumbnail height, 7x larger images look exactly the same.
    assert np.array_equal(np.asarray(render_replay(small)), np.asarray(render_replay(large)))
    picture = render_replay(small)
    assert picture.mode == "RGB" and picture.height < 1200
    page = render_replay_html(small)
    assert len(DATA_URL.findall(page)) == 4
    assert "seat_0 (looker), seat_1 (looker), seat_2 (looker), seat_3 (looker)" in page
    assert "no image" in page
    transcript = render_transcript(small)
    assert all(f"seat_{i}" in transcript for i in range(8)) and "looks: 8.000" in transcript


def test_unfinished_game_renders_without_rewards():
    game = ShapesGame([(20, 30), (30, 20)])
    game.play(0, "half")
    assert not game.done
    assert "in progress" in render_transcript(game) and "reward " not in render_transcript(game)
    assert "In progress" in render_replay_html(game)
    assert render_replay(game).mode == "RGB"
