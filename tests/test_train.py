"""`python train.py env=spy` with a tiny budget: it trains, checkpoints, and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForImageTextToText

ROOT = Path(__file__).parent.parent


def train(run_dir: Path, model: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"model={model}",
               "games_per_step=2", "sampling.max_tokens=8", "trainer.save_steps=1",
               "trainer.per_device_train_batch_size=4", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ.copy())


def test_train_checkpoints_and_resumes(default_model, tmp_path):
    first = train(tmp_path, default_model, "trainer.max_steps=1")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-1"
    state = json.loads((checkpoint / "selfplay_state.json").read_text())
    assert state["games_played"] >= 2 and state["schedule"]["stage"] == "decision"
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert list((tmp_path / "replays").glob("games-*.html"))
    assert "selfplay/vote_accuracy" in first.stderr + first.stdout  # game stats are logged
    AutoModelForImageTextToText.from_pretrained(checkpoint)  # a loadable model
    second = train(tmp_path, default_model, "trainer.max_steps=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    resumed = json.loads((tmp_path / "checkpoints" / "checkpoint-2" / "selfplay_state.json")
                         .read_text())
    assert resumed["games_played"] > state["games_played"]
    trainer_state = json.loads((tmp_path / "checkpoints" / "checkpoint-2" /
                                "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 2


def test_train_refuses_games_it_cannot_train_yet(default_model, tmp_path):
    result = train(tmp_path, default_model, "env=qa_duel", "trainer.max_steps=1")
    assert result.returncode != 0 and "trains env=spy so far" in result.stderr
