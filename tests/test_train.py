"""`python train.py` with a tiny budget: both games train, checkpoint and resume; the vLLM backend
with LoRA gets merged weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open
from transformers import AutoModelForImageTextToText

ROOT = Path(__file__).parent.parent


def train(run_dir: Path, model: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"model.path={model}",
               "selfplay.games_per_round=2", "sampling.max_tokens=8", "trainer.save_steps=1",
               "trainer.per_device_train_batch_size=4", "evaluation.games=0", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ.copy())


def test_spy_trains_checkpoints_and_resumes(default_model, tmp_path):
    # civilians' votes: 6 rows from 2 games, so that the resumed step has to play new games (the
    # observer's 16 would last both steps)
    first = train(tmp_path, default_model, "trainer.max_steps=1", "env.decision=civilians")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-1"
    state = json.loads((checkpoint / "selfplay_state.json").read_text())
    assert state["games_played"] >= 2
    assert state["recipe"]["schedule"]["stage"] == "decision"
    assert state["recipe"]["schedule"]["steps_in_stage"] == 1
    assert state["recipe"]["baselines"]["values"]  # the clue baselines moved
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert list((tmp_path / "replays").glob("games-*.html"))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "selfplay/vote_accuracy" in first.stderr + first.stdout  # game stats are logged
    AutoModelForImageTextToText.from_pretrained(checkpoint)  # a loadable model
    second = train(tmp_path, default_model, "trainer.max_steps=2", "env.decision=civilians")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    resumed = json.loads((tmp_path / "checkpoints" / "checkpoint-2" / "selfplay_state.json")
                         .read_text())
    assert resumed["games_played"] > state["games_played"]
    assert resumed["recipe"]["schedule"]["steps_in_stage"] == 2
    trainer_state = json.loads((tmp_path / "checkpoints" / "checkpoint-2" /
                                "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 2


def test_qa_duel_trains_the_questioner_then_skips_a_solver_without_questions(default_model,
                                                                           tmp_path):
    result = train(tmp_path, default_model, "env=qa_duel", "env.num_answers=2",
                   "trainer.max_steps=2", "selfplay.questions_per_image=2")
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-2" / "selfplay_state.json")
                       .read_text())
    # the random model writes no valid question, so no answer to train on: the solver's
    # stage (step 2) is skipped, with a warning, and the questioner trains again
    assert state["skipped_stages"] == 1
    assert "skipping to the next stage" in result.stdout + result.stderr
    assert state["recipe"]["schedule"]["step"] == 3  # question, (answer skipped) question


def test_vllm_backend_with_lora_plays_with_the_merged_weights(default_model, tmp_path):
    result = train(tmp_path, default_model, "agent=vllm", "agent.enforce_eager=true",
                   "agent.max_model_len=2048", "trainer.max_steps=1",
                   "+model.lora={r: 4, lora_alpha: 8, target_modules: all-linear}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors").is_file()
    with safe_open(tmp_path / "final" / "model.safetensors", "pt") as final:
        assert not [name for name in final.keys() if "lora" in name]
    AutoModelForImageTextToText.from_pretrained(tmp_path / "final")


def test_train_refuses_unknown_games_and_values(default_model, tmp_path):
    result = train(tmp_path, default_model, "env.name=chess", "trainer.max_steps=1")
    assert result.returncode != 0 and "training recipes for 'spy' and 'qa_duel'" in result.stderr
    result = train(tmp_path, default_model, "model.dtype=float8", "trainer.max_steps=1")
    assert result.returncode != 0 and "model.dtype must be one of" in result.stderr
    result = train(tmp_path, default_model, "agent=scripted", "trainer.max_steps=1")
    assert result.returncode != 0 and "agent=transformers or agent=vllm" in result.stderr


def test_every_config_group_option_composes_into_valid_settings():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from peft import LoraConfig
    from trl import GRPOConfig

    from trainers.config_checks import DTYPES

    options = {group: sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml"))
               for group in ("env", "model", "agent", "trainer")}
    assert {"transformers", "vllm"} <= set(options["agent"]) and "gpu" in options["trainer"]
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        for trainer in options["trainer"]:
            cfg = compose("train", overrides=[f"trainer={trainer}", "trainer.use_cpu=true",
                                              "trainer.bf16=false"])
            GRPOConfig(output_dir="unused", **OmegaConf.to_container(cfg.trainer))
        for model in options["model"]:
            cfg = compose("train", overrides=[f"model={model}"])
            assert cfg.model.dtype in DTYPES
            if cfg.model.lora:
                LoraConfig(task_type="CAUSAL_LM", **OmegaConf.to_container(cfg.model.lora))


def test_accelerate_launch_runs_two_data_parallel_processes(default_model, tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "train.py", f"hydra.run.dir={tmp_path}",
               f"model.path={default_model}", "selfplay.games_per_round=2",
               "sampling.max_tokens=8", "trainer.per_device_train_batch_size=4",
               "trainer.max_steps=2", "trainer.save_steps=2", "evaluation.games=2",
               "evaluation.parallel_games=2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth",
                                                                   "rng_state_1.pth"}
    assert (result.stdout + result.stderr).count("done:") == 2  # both processes trained
    assert json.loads((tmp_path / "evaluation.json").read_text())["games"] == 2  # rank 0's
    state = json.loads((checkpoint / "selfplay_state.json").read_text())
    assert state["recipe"]["schedule"]["steps_in_stage"] == 2
