"""`python train.py` with a tiny budget: both games train, checkpoint and resume; the vLLM backend
with LoRA gets merged weights; two "nodes" train one data-parallel run."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from safetensors import safe_open
from transformers import AutoModelForImageTextToText

from trainers.checkpoints import MARK, incomplete_reasons

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
    # the end-of-run evaluation, apart (as sharded runs do it)
    evaluation = subprocess.run(
        [sys.executable, "-m", "trainers.evaluation", str(tmp_path), "evaluation.games=2",
         "evaluation.parallel_games=2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["games"] == 2 and set(report["initial"]) == set(report["final"])
    typo = subprocess.run([sys.executable, "-m", "trainers.evaluation", str(tmp_path),
                           "evaluation.game=2"], cwd=ROOT, capture_output=True, text=True)
    assert typo.returncode == 2 and "'evaluation.game=2'" in typo.stderr
    # the run's models as a league against the random agent: rating against training step
    rated = subprocess.run(
        [sys.executable, "-m", "agents.league", f"hydra.run.dir={tmp_path / 'league'}",
         f"run={tmp_path}", "agents.scripted=null", "agents.scripted_noise30=null",
         "agents.scripted_noise70=null", "mirror=null", "seeds_per_round=1", "max_rounds=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rated.returncode == 0, rated.stderr[-3000:]
    ratings = json.loads((tmp_path / "league" / "ratings.json").read_text())
    assert {name: agent["step"] for name, agent in ratings["agents"].items()} == {
        "random": None, "step-0": 0, "step-1": 1, "step-2": 2}
    assert ratings["agents"]["step-2"]["tokens_per_move"] > 0
    assert "Rating against training step" in (tmp_path / "league" / "leaderboard.html").read_text()


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
    assert result.returncode != 0 and "env.name must be a registered environment" in result.stderr
    result = train(tmp_path, default_model, "model.dtype=float8", "trainer.max_steps=1")
    assert result.returncode != 0 and "model.dtype must be one of" in result.stderr
    result = train(tmp_path, default_model, "agent=scripted", "trainer.max_steps=1")
    assert result.returncode != 0 and "agent=transformers or agent=vllm" in result.stderr


def test_every_config_group_option_composes_into_valid_settings():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from peft import LoraConfig

    from envs.configs import store_env_configs
    from trainers.config_checks import DTYPES
    from trainers.grpo import TrajectoryGRPOConfig
    from trainers.selfplay_config import store_selfplay_defaults

    store_env_configs()  # as train.py does
    store_selfplay_defaults()

    options = {group: sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml"))
               for group in ("model", "agent", "trainer")}  # env: tests/test_envs.py
    assert {"transformers", "vllm"} <= set(options["agent"]) and "gpu" in options["trainer"]
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        for trainer in options["trainer"]:
            cfg = compose("train", overrides=[f"trainer={trainer}", "trainer.use_cpu=true",
                                              "trainer.bf16=false"])
            TrajectoryGRPOConfig(output_dir="unused", **OmegaConf.to_container(cfg.trainer))
        for model in options["model"]:
            cfg = compose("train", overrides=[f"model={model}"])
            assert cfg.model.dtype in DTYPES
            if cfg.model.lora:
                LoraConfig(task_type="CAUSAL_LM", **OmegaConf.to_container(cfg.model.lora))


def free_port() -> int:
    """A TCP port free on localhost now (for the main process's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_nodes(nodes: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """The nodes' exit codes, once all have ended, one has failed (the others would wait for it
    in a collective until gloo's timeout) or ``timeout`` seconds have passed (None: running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [node.poll() for node in nodes]
        if None not in codes or any(codes):
            return codes
        time.sleep(1)
    return [node.poll() for node in nodes]


def kill_launch(launcher: subprocess.Popen) -> None:
    """Kills an ``accelerate launch`` and every process under it (torch's elastic agent starts its
    workers in sessions of their own: the launcher's process group does not hold them)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        processes = [*psutil.Process(launcher.pid).children(recursive=True)]
        launcher.kill()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=30)
    launcher.wait()


def test_two_nodes_train_one_data_parallel_run(default_model, tmp_path):
    """Two "nodes" on this host, one process each: two ``accelerate launch`` commands with
    ``configs/accelerate/multinode.yaml`` and ``--machine_rank 0|1`` meet at the main process's
    address (localhost here) and train as one DDP run over gloo, as two machines would (README:
    Training, Two nodes).

    Both nodes get the same run folder, as on a cluster with a shared filesystem, and they need
    it: every process writes into each checkpoint (its ``rng_state_<i>.pth``, its
    ``selfplay_state_<i>.json`` and left-over rows), then rank 0 marks the folder complete with the
    files it sees there (:mod:`trainers.checkpoints`); on resume every process picks the newest
    complete checkpoint of its own ``checkpoints/`` and loads the model from it. With a folder per
    node, rank 0's mark would leave out node 1's files, and a rerun hangs: node 0 resumes, node 1
    finds no complete checkpoint and starts from scratch (tried)."""
    run_dir, port = tmp_path / "run", free_port()
    nodes: list[subprocess.Popen] = []
    logs = [tmp_path / f"node_{rank}.log" for rank in (0, 1)]
    try:
        for rank, log_path in enumerate(logs):
            command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                       "configs/accelerate/multinode.yaml", "--machine_rank", str(rank),
                       "--num_processes", "2", "--main_process_ip", "127.0.0.1",
                       "--main_process_port", str(port), "train.py", f"hydra.run.dir={run_dir}",
                       f"model.path={default_model}", "selfplay.games_per_round=2",
                       "sampling.max_tokens=8", "trainer.per_device_train_batch_size=4",
                       "trainer.max_steps=2", "trainer.save_steps=2", "evaluation.games=2",
                       "evaluation.parallel_games=2"]
            with open(log_path, "w") as log_file:  # the child keeps its own descriptor
                nodes.append(subprocess.Popen(command, cwd=ROOT, stdout=log_file,
                                              stderr=subprocess.STDOUT, env=os.environ.copy()))
        codes = wait_for_nodes(nodes, timeout=600)
    finally:  # a node that failed or hangs takes the other down with it: nothing is left running
        for node in nodes:
            if node.poll() is None:
                kill_launch(node)
    outputs = [log_path.read_text() for log_path in logs]
    assert codes == [0, 0], "\n".join(f"node {rank} (exit {codes[rank]}):\n{output[-3000:]}"
                                      for rank, output in enumerate(outputs))
    assert all(output.count("done:") == 1 for output in outputs)  # each node's process trained
    checkpoint = run_dir / "checkpoints" / "checkpoint-2"
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth",
                                                                   "rng_state_1.pth"}
    assert incomplete_reasons(checkpoint) == []  # marked by rank 0, node 1's files listed
    marked = json.loads((checkpoint / MARK).read_text())["files"]
    assert {"rng_state_1.pth", "selfplay_state_1.json", "selfplay_rows_1.pt"} <= set(marked)
    states = [json.loads((checkpoint / name).read_text())
              for name in ("selfplay_state.json", "selfplay_state_1.json")]
    assert states[0]["recipe"]["schedule"]["steps_in_stage"] == 2
    # the games' statistics are averaged across the nodes: both keep the same stage
    assert states[0]["recipe"]["schedule"] == states[1]["recipe"]["schedule"]
    assert json.loads((run_dir / "evaluation.json").read_text())["games"] == 2  # rank 0's
