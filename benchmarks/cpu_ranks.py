"""Data-parallel launches of 4 and 8 ranks, simulated with CPU processes (correctness only).

    python benchmarks/cpu_ranks.py --ranks 4 8

Machines with 4 or 8 GPUs are not lent (issue 15): this runs the launch such a machine would run
— ``accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes N train.py`` —
with N CPU processes over gloo, the tiny player, ``--steps`` steps whose paper schedule switches
stage at every step (``min_steps`` 1, thresholds every value meets, ``rho`` 0 so the averages are
the latest statistics). After every step's checkpoint it checks what data parallelism promises:
every rank holds the same stage machine, whose statistics are the mean of what the N ranks played
(each saves its own), the ranks played different games, and the stages trained are the ones the
shared machine chose. Prints one line per launch (wall time, checks) and writes them as JSON.
Timings here say nothing of GPUs: 2 cores run all N processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(ranks: int, steps: int, run_dir: Path) -> tuple[int, float, Path]:
    """The launch of ``ranks`` CPU processes; its return code, wall seconds and log."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               "configs/accelerate/ddp.yaml", "--num_processes", str(ranks),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
               "train.py", f"hydra.run.dir={run_dir}", "selfplay.games_per_round=2",
               "sampling.max_tokens=16", "trainer.per_device_train_batch_size=4",
               f"trainer.max_steps={steps}", "trainer.save_steps=1", "evaluation.games=0",
               "selfplay.schedule=paper", "selfplay.min_steps=1", "selfplay.switch.rho=0",
               "selfplay.switch.to_clue_accuracy=0", "selfplay.switch.to_clue_na=1",
               "selfplay.switch.to_decision_error=0"]
    log = run_dir.parent / f"launch-{ranks}.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=3600).returncode
    return code, time.perf_counter() - started, log


def check(ranks: int, steps: int, run_dir: Path) -> list[str]:
    """What the ranks' checkpoints break of data parallelism's promises (empty: nothing)."""
    problems, stages, local_differs = [], [], False
    for step in range(1, steps + 1):
        folder = run_dir / "checkpoints" / f"checkpoint-{step}"
        if not folder.is_dir():
            return problems + [f"no checkpoint of step {step}: the run stopped before it"]
        names = ["selfplay_state.json"] + [f"selfplay_state_{r}.json" for r in range(1, ranks)]
        states = [json.loads((folder / name).read_text()) for name in names]
        schedules = [state["recipe"]["schedule"] for state in states]
        if any(schedule != schedules[0] for schedule in schedules):
            problems.append(f"step {step}: the ranks' stage machines differ")
        local = [state["statistics"] for state in states]
        local_differs |= any(stats != local[0] for stats in local)
        for name, averaged in (("vote_accuracy", "accuracy"), ("na_rate", "na_rate")):
            mean = sum(stats[name] for stats in local) / ranks
            if abs(schedules[0][averaged] - mean) > 1e-6 * max(1.0, abs(mean)):
                problems.append(f"step {step}: {averaged} {schedules[0][averaged]} is not the "
                                f"mean {mean} of the ranks' {name}")
        stages.append(schedules[0]["stage"])
    if not local_differs:
        problems.append("every rank played the same games: nothing was averaged")
    trained = re.findall(r"step \d+: .*selfplay/stage_(\w+)=1",
                         (run_dir / "train.log").read_text())
    if trained != ["decision", *stages[:-1]]:
        problems.append(f"stages trained {trained}, chosen {['decision', *stages[:-1]]}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/zeroplay-cpu-ranks"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "cpu_ranks.json")
    args = parser.parse_args()
    results = []
    for ranks in args.ranks:
        run_dir = args.folder / f"ranks-{ranks}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        code, seconds, log = launch(ranks, args.steps, run_dir)
        problems = check(ranks, args.steps, run_dir) if code == 0 else [
            f"exit {code}; see {log}"]
        results.append({"ranks": ranks, "steps": args.steps, "returncode": code,
                        "wall_s": round(seconds, 1), "problems": problems})
        print(f"{ranks} CPU ranks, {args.steps} steps: exit {code}, {seconds:.0f} s wall, "
              f"{'all checks hold' if not problems else '; '.join(problems)}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
