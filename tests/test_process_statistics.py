"""Game statistics averaged over data-parallel processes (``train.mean_over_processes``): every
process gets the same averages, so that every process's stage machine switches alike. Both tests
run 2 real processes over gloo on the CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing

from tests.test_train import ROOT, free_port, kill_launch

#: Each rank's local statistics, keys in a different order on each (the averaging must line them
#: up by name, not by position), and what both must get back.
LOCAL_STATISTICS = ({"a": 1.0, "b": 0.0}, {"b": 1.0, "a": 3.0})
MEAN_STATISTICS = {"a": 2.0, "b": 0.5}


def average_in_process(rank: int, port: int, results: Path) -> None:
    """One of 2 processes: joins the gloo group through accelerate, averages its rank's
    statistics with ``mean_over_processes`` and writes what it got to ``results/<rank>.json``."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                   "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
    from accelerate import Accelerator

    from train import mean_over_processes

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2 and accelerator.process_index == rank
    averaged = mean_over_processes(accelerator, dict(LOCAL_STATISTICS[rank]))
    (results / f"{rank}.json").write_text(json.dumps(averaged))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_mean_over_processes_averages_every_statistic_by_name(tmp_path):
    torch.multiprocessing.spawn(average_in_process, args=(free_port(), tmp_path), nprocs=2)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"{rank}.json").read_text()) == MEAN_STATISTICS


def test_two_processes_keep_one_stage_machine_fed_with_averaged_statistics(tmp_path):
    """A 2-process DDP run of 4 steps whose paper schedule switches at every step (min_steps 1,
    thresholds every value meets) and, with ``rho`` 0, keeps the latest step's statistics as its
    averages: at every checkpoint both processes hold the same stage machine, whose statistics are
    the mean of what the two processes played (each saves its own in ``statistics``). The shipped
    tiny player plays, not the random model: every game of that one has the same statistics
    (no valid move), which leaves nothing to average."""
    run_dir, log_path = tmp_path / "run", tmp_path / "launch.log"
    steps = 4
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               "configs/accelerate/ddp.yaml", "--num_processes", "2", "--main_process_ip",
               "127.0.0.1", "--main_process_port", str(free_port()), "train.py",
               f"hydra.run.dir={run_dir}", "selfplay.games_per_round=2", "sampling.max_tokens=16",
               "trainer.per_device_train_batch_size=4", f"trainer.max_steps={steps}",
               "trainer.save_steps=1", "evaluation.games=0", "selfplay.schedule=paper",
               "selfplay.min_steps=1", "selfplay.switch.rho=0",
               "selfplay.switch.to_clue_accuracy=0", "selfplay.switch.to_clue_na=1",
               "selfplay.switch.to_decision_error=0"]
    with open(log_path, "w") as log_file:
        launch = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                  env=os.environ.copy())
        try:
            code = launch.wait(timeout=600)
        finally:  # a hung process group is not left running
            if launch.poll() is None:
                kill_launch(launch)
    assert code == 0, log_path.read_text()[-3000:]
    stages, local_differs = [], False
    for step in range(1, steps + 1):
        checkpoint = run_dir / "checkpoints" / f"checkpoint-{step}"
        states = [json.loads((checkpoint / name).read_text())
                  for name in ("selfplay_state.json", "selfplay_state_1.json")]
        schedules = [state["recipe"]["schedule"] for state in states]
        assert schedules[0] == schedules[1], f"step {step}: the processes' stage machines differ"
        local = [state["statistics"] for state in states]
        local_differs |= local[0] != local[1]
        for name, averaged in (("vote_accuracy", "accuracy"), ("na_rate", "na_rate")):
            mean = (local[0][name] + local[1][name]) / 2  # averaged in float32
            assert schedules[0][averaged] == pytest.approx(mean, rel=1e-6, abs=1e-7), (
                f"step {step}: {name} {schedules[0][averaged]} is not the mean of {local}")
        stages.append(schedules[0]["stage"])
    # the stage to train next after each step: decision first, then a switch at every step
    assert stages == ["clue", "decision", "clue", "decision"]
    trained = re.findall(r"step \d+: .*selfplay/stage_(\w+)=1", (run_dir / "train.log").read_text())
    assert trained == ["decision", *stages[:-1]]  # what process 0 logged it trained
    assert local_differs, "both processes played the same games: nothing to average"
