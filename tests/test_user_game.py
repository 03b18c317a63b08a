"""A user's two-seat game (``tests/user_game/``) trains and plays from its own folder, with no
project file changed: ``train.py --config-dir conf env=closer`` and the arena, as for the README's
one-seat count game. Its conformance test is the folder's own ``test_closer.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_a_two_seat_game_trains_and_plays_from_a_folder_of_its_own(tmp_path, default_model):
    folder = tmp_path / "my_game"
    shutil.copytree(ROOT / "tests" / "user_game", folder)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    trained = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config-dir", "conf", "env=closer",
         "trainer.max_steps=2", "evaluation.games=4", f"model.path={default_model}",
         f"hydra.run.dir={tmp_path / 'run'}", "selfplay.games_per_round=2",
         "sampling.max_tokens=8", "trainer.per_device_train_batch_size=8"],
        cwd=folder, capture_output=True, text=True, timeout=600, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 2:" in log and "selfplay/return_first=" in log and "return_second=" in log
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert report["games"] == 4
    assert {"return_first", "return_second", "first_won", "second_won"} <= set(report["final"])

    played = subprocess.run(
        [sys.executable, "-m", "agents.arena", "--config-dir", "conf", "env=closer",
         "agent=random", "games=4"], cwd=folder, capture_output=True, text=True, timeout=300,
        env=env)
    assert played.returncode == 0, played.stderr[-3000:]
    assert re.search(r"games\s+4\.000", played.stdout + played.stderr)

    rated = subprocess.run(
        [sys.executable, "-m", "agents.league", "--config-dir", "conf", "env=closer",
         f"hydra.run.dir={tmp_path / 'league'}", "+agents.terse={agent: random, max_chars: 4}",
         "agents.scripted=null", "agents.scripted_noise30=null", "agents.scripted_noise70=null",
         "mirror=null", "seeds_per_round=4", "max_rounds=1"],
        cwd=folder, capture_output=True, text=True, timeout=300, env=env)
    assert rated.returncode == 0, rated.stderr[-3000:]
    ratings = json.loads((tmp_path / "league" / "ratings.json").read_text())
    assert set(ratings["agents"]) == {"terse", "random"} and ratings["games"] == 8
    assert set(ratings["roles"]) == {"first", "second"}
