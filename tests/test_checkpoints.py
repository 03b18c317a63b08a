"""Checkpoints: only complete ones are resumed from, nothing is deleted, rotation counts complete
ones only, the agents' sampling seeds and the left-over rows are in them, a resumed run continues
exactly, and ``kill -9`` right after a checkpoint starts never blocks the rerun."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState, TrainingArguments

import envs
from agents.model import RequestSeeds, SamplingConfig
from agents.rollout import RolloutRunner
from trainers.advantages import RoleBaselines
from trainers.checkpoints import MARK, MarkComplete, incomplete_reasons, newest_complete_checkpoint
from trainers.recipes import SpyRecipe
from trainers.schedules import FixedAlternation
from trainers.selfplay import ROWS_FILE, STATE_FILE, SaveSelfPlayState, SelfPlay

ROOT = Path(__file__).parent.parent
FILES = {"model.safetensors": b"w" * 100, "optimizer.pt": b"o" * 50,
         "trainer_state.json": b"{}", STATE_FILE: b"{}"}


def marker(output_dir: Path) -> MarkComplete:
    return MarkComplete(TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to=[]))


def save(callback: MarkComplete, output_dir: Path, step: int, mark: bool = True) -> Path:
    """A checkpoint folder as the trainer leaves it: its files, then (``mark``) the callback."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    if mark:
        args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to=[])
        callback.on_save(args, TrainerState(global_step=step), TrainerControl())
    return folder


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def test_a_checkpoint_is_complete_once_marked_and_while_whole(tmp_path):
    callback = marker(tmp_path)
    complete = save(callback, tmp_path, 1)
    assert incomplete_reasons(complete) == []
    assert json.loads((complete / MARK).read_text())["files"] == {
        name: len(data) for name, data in FILES.items()}
    empty = tmp_path / "checkpoint-2"
    empty.mkdir()
    assert incomplete_reasons(empty) == [f"no {MARK} (it was not finished)"]
    cut = save(callback, tmp_path, 3, mark=False)  # killed while writing the optimizer
    (cut / "optimizer.pt").write_bytes(b"")
    (cut / STATE_FILE).unlink()
    assert incomplete_reasons(cut) == [f"no {MARK} (it was not finished)"]
    damaged = save(callback, tmp_path, 4)
    (damaged / "optimizer.pt").write_bytes(b"")
    (damaged / STATE_FILE).unlink()
    assert incomplete_reasons(damaged) == ["optimizer.pt has 0 bytes, not 50",
                                           f"{STATE_FILE} is missing"]
    half_marked = save(callback, tmp_path, 5)
    (half_marked / MARK).write_text((half_marked / MARK).read_text()[:20])
    assert incomplete_reasons(half_marked)[0].startswith(f"unreadable {MARK}")


def test_resume_takes_the_newest_complete_checkpoint_and_deletes_nothing(tmp_path, caplog):
    assert newest_complete_checkpoint(tmp_path / "absent") is None
    callback = marker(tmp_path)
    save(callback, tmp_path, 1)
    newest = save(callback, tmp_path, 2)
    (save(callback, tmp_path, 3, mark=False) / "optimizer.pt").write_bytes(b"")
    (tmp_path / "checkpoint-10").mkdir()
    before = snapshot(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trainers.checkpoints"):
        assert newest_complete_checkpoint(tmp_path) == str(newest)
    passed_over = [r.getMessage() for r in caplog.records]
    assert len(passed_over) == 2
    assert "checkpoint-10 " in passed_over[0] and "checkpoint-3 " in passed_over[1]
    assert all("passing over the incomplete checkpoint" in m for m in passed_over)
    assert snapshot(tmp_path) == before

    caplog.clear()
    nothing_complete = tmp_path / "other"
    (save(callback, nothing_complete, 1, mark=False) / STATE_FILE).unlink()
    before = snapshot(nothing_complete)
    with caplog.at_level(logging.WARNING, logger="trainers.checkpoints"):
        assert newest_complete_checkpoint(nothing_complete) is None
    assert "training starts from scratch" in caplog.records[-1].getMessage()
    assert snapshot(nothing_complete) == before


def test_rotation_counts_and_deletes_complete_checkpoints_only(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), save_total_limit=2, use_cpu=True,
                             report_to=[])
    callback = MarkComplete(args)
    assert args.save_total_limit is None  # transformers no longer rotates: the callback does
    save(callback, tmp_path, 1)
    stale = save(callback, tmp_path, 9, mark=False)  # an unfinished save of an earlier attempt
    save(callback, tmp_path, 2)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint-1", "checkpoint-2",
                                                    "checkpoint-9"}
    save(callback, tmp_path, 3)
    save(callback, tmp_path, 4)
    # transformers would keep checkpoint-9 as the newest and leave one complete checkpoint
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint-3", "checkpoint-4",
                                                    "checkpoint-9"}
    assert snapshot(stale) == {name: len(data) for name, data in FILES.items()}


def test_a_step_saved_again_is_unmarked_before_its_first_file(tmp_path):
    callback = marker(tmp_path)
    folder = save(callback, tmp_path, 2)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    callback.on_step_end(args, TrainerState(global_step=2), TrainerControl(should_save=False))
    assert incomplete_reasons(folder) == []
    callback.on_step_end(args, TrainerState(global_step=2), TrainerControl(should_save=True))
    assert incomplete_reasons(folder) == [f"no {MARK} (it was not finished)"]


def test_request_seeds_continue_their_stream_after_a_restart():
    seeds = RequestSeeds(7)
    seeds.take(3)
    state = json.loads(json.dumps(seeds.state_dict()))  # as a checkpoint keeps it
    restarted = RequestSeeds(7)
    restarted.load_state_dict(state)
    assert restarted.take(5) == seeds.take(5) != RequestSeeds(7).take(5)
    unseeded = RequestSeeds(None)
    unseeded.load_state_dict(RequestSeeds(None).state_dict())
    assert unseeded.take(2) == [None, None]
    with pytest.raises(ValueError, match="seeded request seeds into unseeded ones"):
        unseeded.load_state_dict(state)
    with pytest.raises(ValueError, match="unseeded request seeds into seeded ones"):
        restarted.load_state_dict(RequestSeeds(None).state_dict())


def test_the_selfplay_state_keeps_the_agents_seeds_and_the_left_over_rows(default_model,
                                                                           tmp_path):
    from agents.transformers_agent import TransformersAgent

    def selfplay() -> SelfPlay:
        agent = TransformersAgent(default_model, SamplingConfig(max_tokens=4, seed=3),
                                  device="cpu")
        runner = RolloutRunner(lambda: envs.make("spy"), agent, parallel_games=1)
        return SelfPlay(runner, SpyRecipe(FixedAlternation(cycle=1), RoleBaselines()), 1)

    played = selfplay()
    torch.manual_seed(11)  # the process's RNG, as a trainer restored it
    trainer_rng = torch.get_rng_state()
    played(2)  # the decision stage takes 2 of the game's 3 votes; its clues wait a step
    # the agent samples with its own seeds on a fork of that RNG: it is left as it was
    assert torch.equal(torch.get_rng_state(), trainer_rng)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    SaveSelfPlayState(played).on_save(args, TrainerState(global_step=1), TrainerControl())
    folder = tmp_path / "checkpoint-1"
    saved = json.loads((folder / STATE_FILE).read_text())
    # one shared policy: its seeds once, under its first seat
    assert list(saved["agent_seeds"]) == ["player_1"]
    assert saved["agent_seeds"]["player_1"]["generator"] is not None
    assert (folder / ROWS_FILE).is_file()
    resumed = selfplay()
    SaveSelfPlayState.load(resumed, folder)
    assert resumed.state_dict() == played.state_dict()
    # the next step trains on the same left-over clues; the next samples get the same seeds
    clues = [r.turn for r in played(2)]
    assert [r.turn for r in resumed(2)] == clues and clues[0].phase == "clue"
    [seeds] = {agent.seeds for agent in played.runner.agents.values()}
    [resumed_seeds] = {agent.seeds for agent in resumed.runner.agents.values()}
    assert resumed_seeds.take(3) == seeds.take(3)


# ----- train.py end to end -----

def train_command(run_dir: Path, model: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"model.path={model}",
            "selfplay.games_per_round=2", "sampling.max_tokens=8", "trainer.save_steps=1",
            "trainer.per_device_train_batch_size=4", "evaluation.games=0", *overrides]


def train(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(default_model, tmp_path):
    # stages alternate (decision, clue, decision), so that the random model's weights move in
    # step 2 (its votes are all invalid: zero advantages, but its clues' are not) and step 3
    # samples new games after the restart
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    command = train_command(uninterrupted, default_model, "selfplay.schedule=alternate",
                            "trainer.max_steps=3")
    train(command)
    # the same run as a kill in the middle of step 3's save leaves it: the weights written, the
    # optimizer cut short, none of the files written after it (so that every file of step 3
    # compared below is the resumed run's own)
    shutil.copytree(uninterrupted, interrupted, ignore=shutil.ignore_patterns("final"))
    cut = interrupted / "checkpoints" / "checkpoint-3"
    for name in (MARK, STATE_FILE, ROWS_FILE, "trainer_state.json", "rng_state.pth",
                 "scheduler.pt"):
        (cut / name).unlink()
    (cut / "optimizer.pt").write_bytes(b"")
    resumed = train([f"hydra.run.dir={interrupted}" if part.startswith("hydra.run.dir=")
                     else part for part in command] + ["+trainer.save_total_limit=2"])
    log = resumed.stdout + resumed.stderr
    assert f"passing over the incomplete checkpoint {cut}" in log
    assert f"resuming from {interrupted / 'checkpoints' / 'checkpoint-2'}" in log

    checkpoints = sorted((interrupted / "checkpoints").glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == ["checkpoint-2", "checkpoint-3"]  # the limit
    assert all(not incomplete_reasons(p) for p in checkpoints)
    last = [run / "checkpoints" / "checkpoint-3" for run in (interrupted, uninterrupted)]
    states = [json.loads((folder / STATE_FILE).read_text()) for folder in last]
    assert states[0] == states[1]  # games, stage, baselines, statistics, sampling seeds
    rows = [torch.load(folder / ROWS_FILE, weights_only=True) for folder in last]
    sampled = [[row["turn"] for stage in sorted(r) for row in r[stage]] for r in rows]
    assert sampled[0] and sampled[0] == sampled[1]  # step 3's games: the same sampled tokens
    # the trainer's own state after step 3, byte for byte: Adam's moments and step count, the
    # learning-rate schedule, the python, numpy and torch RNGs
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        assert (last[0] / name).read_bytes() == (last[1] / name).read_bytes(), name
    weights = [load_file(run / "final" / "model.safetensors")
               for run in (interrupted, uninterrupted)]
    initial = load_file(default_model / "model.safetensors")
    assert any(not torch.equal(weights[1][name], initial[name]) for name in initial)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_kill_9_right_after_a_checkpoint_starts_then_the_rerun_finishes(default_model,
                                                                       tmp_path):
    command = train_command(tmp_path, default_model, "trainer.max_steps=2")
    # log-uniform from 2 ms to 1 s after the first checkpoint folder appears: as likely inside
    # its few hundred milliseconds of writing as in the next step
    delay = math.exp(random.Random(8).uniform(math.log(0.002), math.log(1.0)))
    checkpoints = tmp_path / "checkpoints"
    with open(tmp_path / "killed.log", "w") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=output,
                                   env=os.environ.copy())
        deadline = time.monotonic() + 300
        while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in 300 s"
            time.sleep(0.001)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    at_kill = {p.name: incomplete_reasons(p) for p in checkpoints.glob("checkpoint-*")}
    print(f"killed {delay * 1000:.0f} ms after the first checkpoint appeared:",
          {p.name: snapshot(p) for p in checkpoints.glob("checkpoint-*")}, at_kill)

    rerun = train(command)
    log = rerun.stdout + rerun.stderr
    for name, reasons in at_kill.items():
        if reasons:  # the rerun passed it over, then wrote that step again, completely
            assert f"passing over the incomplete checkpoint {checkpoints / name}" in log
    assert all(not incomplete_reasons(p) for p in checkpoints.glob("checkpoint-*"))
    assert not incomplete_reasons(checkpoints / "checkpoint-2")
    final = (tmp_path / "final" / "model.safetensors").read_bytes()
    assert load_file(tmp_path / "final" / "model.safetensors").keys() == load_file(
        default_model / "model.safetensors").keys()

    # a kill after the last checkpoint, before the final model: the rerun trains no further
    shutil.rmtree(tmp_path / "final")
    rerun = train(command)
    assert "training is over at step 2" in rerun.stdout + rerun.stderr
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == final
    assert not (checkpoints / "checkpoint-3").exists()
