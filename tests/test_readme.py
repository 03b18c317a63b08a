"""The README's new-game example, run exactly as written: the module file, then the usage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_block(marker: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in the README."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```\w+\n(.*?)```", text, re.DOTALL)
    assert match, f"README has no fenced block after <!-- {marker} -->"
    return match.group(1)


def test_new_game_example(tmp_path):
    (tmp_path / "my_games.py").write_text(readme_block("file: my_games.py"))
    (tmp_path / "run.py").write_text(readme_block("run"))
    result = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120,
                            env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\{'player_1': [01]\.0\}\n", result.stdout), result.stdout


def test_new_game_passes_the_conformance_suite(tmp_path):
    """The README's check and its one-line pytest test, run as written on the count game."""
    (tmp_path / "my_games.py").write_text(readme_block("file: my_games.py"))
    (tmp_path / "check.py").write_text(readme_block("check"))
    (tmp_path / "test_my_games.py").write_text(readme_block("file: test_my_games.py"))
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    checked = subprocess.run([sys.executable, "check.py"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("my_games:count: conformant ("), checked.stdout
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_my_games.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout, tested.stdout


def test_new_game_trains_and_plays_from_a_folder_of_its_own(tmp_path, default_model):
    """The README's commands, run in a folder holding only the user's files (train.py given its
    path, as the README says), on the random tiny model to keep it short."""
    (tmp_path / "my_games.py").write_text(readme_block("file: my_games.py"))
    (tmp_path / "my_conf" / "env").mkdir(parents=True)
    (tmp_path / "my_conf" / "env" / "count.yaml").write_text(
        readme_block("file: my_conf/env/count.yaml"))
    train, arena = readme_block("commands").splitlines()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    trained = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *train.split()[2:], f"model.path={default_model}",
         f"hydra.run.dir={tmp_path / 'run'}", "selfplay.games_per_round=2",
         "sampling.max_tokens=8", "trainer.per_device_train_batch_size=8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert report["games"] == 4 and "return_counter" in report["final"]
    assert "step 2:" in (tmp_path / "run" / "train.log").read_text()
    played = subprocess.run([sys.executable, *arena.split()[1:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert played.returncode == 0, played.stderr[-3000:]
    assert re.search(r"games\s+4\.000", played.stdout + played.stderr)
