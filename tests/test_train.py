"""`python train.py` with a tiny budget: both games train, checkpoint and resume; the vLLM backend
with LoRA gets merged weights; two "nodes" train one data-parallel run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from agents.model import model_path
from games.parsing import parse_choice
from trainers.checkpoints import MARK, incomplete_reasons

ROOT = Path(__file__).parent.parent


def train(run_dir: Path, model: Path | str, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py`` on a tiny budget; ``overrides`` come last (Hydra: the last value of a
    key wins)."""
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"model.path={model}",
               "selfplay.games_per_round=2", "sampling.max_tokens=8", "trainer.save_steps=1",
               "trainer.per_device_train_batch_size=4", "evaluation.games=0", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ.copy())


def step_lines(run_dir: Path) -> dict[int, str]:
    """The metrics line of every step in the run's ``train.log`` (all runs, appended)."""
    lines = (run_dir / "train.log").read_text().splitlines()
    return {int(match.group(1)): line for line in lines
            if (match := re.search(r"step (\d+): loss=", line))}


def saved_rows(checkpoint: Path) -> dict[str, list[dict]]:
    """The rows left over for the next step in a checkpoint, by stage: each turn's JSON fields
    with its advantage (the format of :class:`trainers.selfplay.SaveSelfPlayState`)."""
    rows = torch.load(checkpoint / "selfplay_rows.pt", weights_only=True)
    return {stage: [json.loads(row["turn"]) | {"advantage": row["advantage"]} for row in saved]
            for stage, saved in rows.items()}


def test_spy_trains_both_stages_with_role_baselines_checkpoints_and_resumes(default_model,
                                                                           tmp_path):
    # one game a round of 3 players, 1 clue round and an observer's 4 votes: 3 clue rows and 4
    # votes. The alternating schedule trains the decision stage at step 1 (one round's 4 votes)
    # and the clue stage at step 2, after the resume: the 3 clue rows left over are one short of
    # the batch of 4, so step 2 plays a second round and the role baselines move again.
    options = ("selfplay.schedule=alternate", "selfplay.cycle=1", "selfplay.games_per_round=1",
               "env.num_players=3", "env.num_rounds=1", "env.decision=observer",
               "env.observer_samples=4")
    first = train(tmp_path, default_model, "trainer.max_steps=1", *options)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-1"
    state = json.loads((checkpoint / "selfplay_state.json").read_text())
    assert state["games_played"] == 1
    assert state["recipe"]["schedule"] == {"cycle": 1, "step": 1, "stages": ["decision", "clue"]}
    # the random model gives no valid clue and no valid vote: every clue earns only the invalid
    # clue's -0.5 (no votes, so the zero-sum part is 0) and each role's baseline, from 0, takes
    # (1 - decay) of its mean reward (RoleBaselines, decay 0.95)
    decay, reward = 0.95, -0.5
    first_baseline = (1 - decay) * reward
    baselines = {(game, role): value
                 for game, role, value in state["recipe"]["baselines"]["values"]}
    assert baselines == pytest.approx({("spy", "spy"): first_baseline,
                                       ("spy", "civilian"): first_baseline})
    left_over = saved_rows(checkpoint)
    # its 3 clues wait for the clue stage, their advantages the reward minus the baselines of 0
    assert sorted(row["role"] for row in left_over["clue"]) == ["civilian", "civilian", "spy"]
    assert [row["reward"] for row in left_over["clue"]] == [reward] * 3
    assert [row["advantage"] for row in left_over["clue"]] == [reward] * 3
    assert left_over["decision"] == []
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "selfplay/vote_accuracy" in first.stderr + first.stdout  # game stats are logged
    assert "][vllm." not in first.stderr  # agent=transformers: vLLM never imported (its loggers)
    AutoModelForImageTextToText.from_pretrained(checkpoint)  # a loadable model
    second = train(tmp_path, default_model, "trainer.max_steps=2", *options)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    resumed_checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    resumed = json.loads((resumed_checkpoint / "selfplay_state.json").read_text())
    assert resumed["games_played"] == 2
    assert resumed["recipe"]["schedule"] == {"cycle": 1, "step": 2,
                                             "stages": ["decision", "clue"]}
    steps = step_lines(tmp_path)
    assert sorted(steps) == [1, 2]
    assert "selfplay/stage_decision=1 selfplay/stage_clue=0" in steps[1]
    assert "selfplay/stage_decision=0 selfplay/stage_clue=1" in steps[2]
    # the second round's clues: advantage = reward - the baseline before the round; then each
    # role's baseline moves again
    baselines = {(game, role): value
                 for game, role, value in resumed["recipe"]["baselines"]["values"]}
    second_baseline = decay * first_baseline + (1 - decay) * reward
    assert baselines == pytest.approx({("spy", "spy"): second_baseline,
                                       ("spy", "civilian"): second_baseline})
    clues = saved_rows(resumed_checkpoint)["clue"]  # the 2 of the second round's 3 not trained
    assert [row["reward"] for row in clues] == [reward] * 2
    assert [row["advantage"] for row in clues] == pytest.approx([reward - first_baseline] * 2)
    assert sorted(p.name for p in (tmp_path / "replays").glob("*.html")) == [
        "games-000000.html", "games-000001.html"]  # the first game of each round
    trainer_state = json.loads((resumed_checkpoint / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 2
    # the end-of-run evaluation, apart (as sharded runs do it): the command's main in this
    # process, which has imported torch already (the refusal below runs the command itself)
    from trainers.evaluation import main as evaluate_run

    evaluate_run([str(tmp_path), "evaluation.games=2", "evaluation.parallel_games=2",
                  "model.lora=null"])  # model.lora: a null-valued key
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
    # the run's sampling settings: at most its 8 tokens a move (the random model rarely ends)
    assert 7 < ratings["agents"]["step-2"]["tokens_per_move"] <= 8
    assert "Rating against training step" in (tmp_path / "league" / "leaderboard.html").read_text()


def test_qa_duel_trains_the_questioner_then_the_solver_on_majority_labels(tmp_path):
    # the tiny player writes valid questions (about 100 tokens) whose 2 answers may disagree:
    # confidence 1/2, inside the band (0.3, 0.8). Step 1 trains the questions of one round (1
    # image played twice, a batch of 2); the answers of its games in the band wait for step 2,
    # the solver's (cycle 1)
    result = train(tmp_path, "tiny-player", "env=qa_duel", "env.num_answers=2",
                   "selfplay.questions_per_image=2", "selfplay.cycle=1", "sampling.max_tokens=128",
                   "trainer.per_device_train_batch_size=2", "trainer.max_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping to the next stage" not in result.stdout + result.stderr
    checkpoints = tmp_path / "checkpoints"
    first = json.loads((checkpoints / "checkpoint-1" / "selfplay_state.json").read_text())
    second = json.loads((checkpoints / "checkpoint-2" / "selfplay_state.json").read_text())
    assert first["recipe"]["schedule"] == {"cycle": 1, "step": 1,
                                           "stages": ["question", "answer"]}
    assert second["recipe"]["schedule"] == {"cycle": 1, "step": 2,
                                            "stages": ["question", "answer"]}
    assert first["skipped_stages"] == second["skipped_stages"] == 0
    # seed 0's round: both plays of its image land in the band, their 4 answers (2 per game, in
    # game order) more than step 2 needs: it plays no game of its own and trains 2 of them
    assert first["games_played"] == second["games_played"] == 2
    answers = saved_rows(checkpoints / "checkpoint-1")["answer"]
    assert len(answers) == 4
    for game in (answers[:2], answers[2:]):
        letters = [parse_choice(row["text"]) for row in game]
        # each letter given once: the tie goes to the letter answered first, the majority
        # label; the rows are normalised within their game: +1 for the label, -1 for the other
        label = next(letter for letter in letters if letter)
        assert [row["reward"] for row in game] == [float(letter == label) for letter in letters]
        assert sorted(row["advantage"] for row in game) == pytest.approx([-1.0, 1.0])
    steps = step_lines(tmp_path)
    assert sorted(steps) == [1, 2]
    assert "selfplay/stage_question=1 selfplay/stage_answer=0" in steps[1]
    assert "selfplay/stage_question=0 selfplay/stage_answer=1" in steps[2]
    assert "selfplay/policy_lag=1" in steps[2]  # step 1's answers, sampled before its update


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


def test_qa_duel_trains_two_models_in_turn_against_each_others_frozen_weights(tmp_path):
    # V-Zero's loop with phases of one step: the questioner (against the tiny player's solver),
    # the solver (its student seat, on the tiny player's questions and labels), the questioner
    # again, from its phase-1 weights, against the phase-2 solver
    options = ("env=qa_duel", "env.num_answers=2", "selfplay.questions_per_image=2",
               "selfplay.cycle=1", "selfplay.models=separate", "selfplay.student_answers=2",
               "sampling.max_tokens=128", "trainer.per_device_train_batch_size=2",
               "trainer.max_steps=3")
    result = train(tmp_path, "tiny-player", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    phases = ["phase-01-questioner", "phase-02-solver", "phase-03-questioner"]
    assert sorted(p.name for p in tmp_path.glob("phase-*")) == phases
    assert json.loads((tmp_path / "models.json").read_text()) == {
        "questioner": "phase-03-questioner/final", "solver": "phase-02-solver/final"}
    log = (tmp_path / "train.log").read_text()
    tiny = str(model_path("tiny-player"))
    for number, model, stage, seat, start in (
            (1, "questioner", "question", "questioner_1", tiny),
            (2, "solver", "answer", "student_1", tiny),
            (3, "questioner", "question", "questioner_1",
             str(tmp_path / "phase-01-questioner" / "final"))):
        assert f"phase {number}: {model} trains {stage} ({seat}) from {start}\n" in log
    # a phase trains its stage only, on the rows of the seat its model plays: the solver's
    # phase on the student's answers (left over: 4 from the two plays of an image in the band)
    questions = saved_rows(tmp_path / phases[0] / "checkpoints" / "checkpoint-1")
    answers = saved_rows(tmp_path / phases[1] / "checkpoints" / "checkpoint-1")
    assert list(questions) == ["question"] and list(answers) == ["answer"]
    assert answers["answer"] and {row["seat"] for row in answers["answer"]} == {"student_1"}
    # phase 3 moved the questioner on from its phase-1 weights (its step's questions earned
    # different rewards: loss and gradient non-zero; the first two steps' groups had none)
    before, after = (load_file(tmp_path / phase / "final" / "model.safetensors")
                     for phase in (phases[0], phases[2]))
    assert any(not torch.equal(after[name], before[name]) for name in before)
    # a rerun finds every phase done and trains nothing
    again = train(tmp_path, "tiny-player", *options)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "train.log").read_text().count("phase 1: questioner trains") == 1


def test_separate_models_need_a_game_with_a_two_model_loop(tmp_path):
    result = train(tmp_path, "tiny-random", "env=spy", "selfplay.models=separate")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: selfplay.models=separate: env=spy has no two-model loop (games with one: "
        "qa_duel); use selfplay.models=shared")


def test_a_phase_seats_the_frozen_models_beside_the_policy_and_trains_its_stage(
        default_model, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    import train as train_script
    from agents.random_agent import RandomAgent
    from trainers.recipes import MODEL_PHASES
    from trainers.selfplay_config import SelfPlayConfig

    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=["env=qa_duel", f"model.path={default_model}",
                                          "env.student_answers=2", "selfplay.models=separate"])
    solver_phase = MODEL_PHASES["qa_duel"](SelfPlayConfig())[1]
    frozen = {"questioner_1": RandomAgent(seed=0), "solver_1": RandomAgent(seed=1)}
    seating = train_script.PhaseSeating(solver_phase, frozen, policy=None)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path))  # restored after the test
    trainer, selfplay = train_script.build(cfg, tmp_path, seating)
    policy = selfplay.runner.agents["student_1"]
    assert selfplay.runner.agents == {**frozen, "student_1": policy}
    assert policy.model is trainer.model  # the transformers policy plays the trained model
    assert selfplay.recipe.stages == ("answer",) and selfplay.recipe.stage == "answer"
    assert seating.policy is None  # nothing to keep: the next phase's policy is its own model
