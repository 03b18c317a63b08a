"""Scale-out on GPUs: games per hour and seconds per step of train.py, launched as a user would.

    python benchmarks/scale_out.py --shape 7b                  # on a 2-GPU machine
    python benchmarks/scale_out.py --setups server server_async

Setups (``--setups``; all by default, in this order):

- ``colocated_1gpu``: ``python train.py agent=vllm agent.sleep=true`` on GPU 0 (LoRA);
- ``ddp_2gpu``: the same under ``accelerate launch --config_file configs/accelerate/ddp.yaml
  --num_processes 2``, one engine per GPU;
- ``server``: ``vllm serve`` on GPU 1 plays, ``train.py agent=vllm_server`` trains on GPU 0, the
  weights go over NCCL after every step;
- ``server_async``: the same with ``selfplay.asynchronous=true`` (one step off);
- ``fsdp_full_2gpu`` / ``zero3_full_2gpu``: full fine-tuning with float32 weights and AdamW, which
  for the 7B shape (16 bytes a parameter: 133 GB before activations) does not fit one GPU,
  sharded over 2 by FSDP2 / DeepSpeed ZeRO-3, each process's colocated engine getting the
  gathered weights.

Every setup trains ``--steps`` steps of the spy game (stages alternating) on the shape's random
weights (:mod:`shapes`, saved once to ``--model-folder``; vLLM starts from dummy weights and gets
the trainer's at the start). Turns are ``--max-tokens`` long (``ignore_eos``) and drawn from the
tiny tokenizer's ids, which is all it can decode. Seconds per step come from ``train.log``'s
timestamps from step 1 on (the start-up, compilation and the first round come before step 1's
line); rows per hour are the rows every process trains a step (``8 * --games``) over that, games
per hour every process's games played over the same span. Prints the table with ratios of rows
per hour and writes it as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from shapes import saved_shaped_model

ROOT = Path(__file__).resolve().parent.parent
nan = float("nan")
SETUPS = ("colocated_1gpu", "ddp_2gpu", "server", "server_async", "fsdp_full_2gpu",
          "zero3_full_2gpu")
LORA = ("+model.lora={r: 64, lora_alpha: 128, target_modules: "
        "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}")
STEP_LINE = re.compile(r"^\[(?P<time>[\d\- :,]+)\]\[trainers\.log_metrics\]\[INFO\] - step "
                       r"(?P<step>\d+): .*selfplay/games=(?P<games>[\d.e+]+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sampling_overrides(agent: str, vocabulary: int, max_tokens: int) -> list[str]:
    """Fixed-length turns of ids the tiny tokenizer decodes, for either kind of agent."""
    allowed = "[" + ",".join(map(str, range(vocabulary))) + "]"
    group = "sampling_options" if agent == "vllm" else "request_options"
    return [f"sampling.max_tokens={max_tokens}", f"+agent.{group}.ignore_eos=true",
            f"+agent.{group}.allowed_token_ids={allowed}"]


def train_command(setup: str, args: argparse.Namespace, folder: Path, run: Path,
                  server_url: str | None) -> list[str]:
    """The launch of ``train.py`` for a setup."""
    full = setup.endswith("_full_2gpu")
    rows = 8 * args.games
    overrides = [
        "env=spy", f"model.path={folder}", f"model.dtype={'float32' if full else 'bfloat16'}",
        "trainer=gpu", f"trainer.max_steps={args.steps}", "+trainer.save_strategy=no",
        "trainer.report_to=none", f"trainer.per_device_train_batch_size={args.micro_batch}",
        f"trainer.gradient_accumulation_steps={rows // args.micro_batch}",
        f"selfplay.games_per_round={args.games}", "selfplay.schedule=alternate",
        f"evaluation.games={args.evaluation_games}", f"hydra.run.dir={run}"]
    if not full:
        overrides.append(LORA)
    if setup.startswith("server"):
        overrides += ["agent=vllm_server", f"agent.base_urls=[{server_url}]",
                      f"selfplay.asynchronous={setup == 'server_async'}".lower()]
        overrides += sampling_overrides("vllm_server", args.vocabulary, args.max_tokens)
    else:
        overrides += ["agent=vllm", "agent.sleep=true", "+agent.load_format=dummy",
                      f"+agent.gpu_memory_utilization={args.gpu_memory}"]
        overrides += sampling_overrides("vllm", args.vocabulary, args.max_tokens)
    script = [str(ROOT / "train.py"), *overrides]
    if setup in ("colocated_1gpu", "server", "server_async"):
        return [sys.executable, *script]
    config = {"ddp_2gpu": "ddp", "fsdp_full_2gpu": "fsdp", "zero3_full_2gpu": "zero3"}[setup]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes", "2",
            "--main_process_port", str(free_port()), *script]


def start_server(folder: Path, port: int, log_file: Path) -> subprocess.Popen:
    """``vllm serve`` on GPU 1 with dummy weights, NCCL weight transfer and the sampler's
    processed log-probs, polled until it answers."""
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "1", "VLLM_SERVER_DEV_MODE": "1"}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
               str(folder), "--port", str(port), "--load-format", "dummy",
               "--weight-transfer-config", '{"backend": "nccl"}', "--logprobs-mode",
               "processed_logprobs", "--limit-mm-per-prompt", '{"image": 2}',
               "--max-model-len", "4096"]
    process = subprocess.Popen(command, stdout=log_file.open("w"), stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited: see {log_file}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                import urllib.request

                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                return process
        except OSError:
            time.sleep(2)
    stop(process)
    raise RuntimeError(f"vllm serve not ready after 300 s: see {log_file}")


def stop(process: subprocess.Popen) -> None:
    """Ends ``process``'s whole session (it was started in one of its own)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def step_times(log_file: Path) -> list[tuple[int, float, float]]:
    """(step, unix time, games of process 0) of every logged step."""
    steps = []
    for line in log_file.read_text().splitlines():
        match = STEP_LINE.match(line)
        if match:
            when = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            steps.append((int(match["step"]), when, float(match["games"])))
    return steps


def measure(setup: str, args: argparse.Namespace, folder: Path) -> dict:
    run = args.out.parent / f"run-{setup}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    server, url = None, None
    started = time.perf_counter()
    if setup.startswith("server"):
        port = free_port()
        server = start_server(folder, port, run / "server.log")
        url = f"http://127.0.0.1:{port}/v1"
    env = os.environ | ({"CUDA_VISIBLE_DEVICES": "0"} if setup != "ddp_2gpu"
                        and not setup.endswith("_full_2gpu") else {})
    with (run / "launch.log").open("w") as output:
        training = subprocess.Popen(train_command(setup, args, folder, run, url), cwd=ROOT,
                                    stdout=output, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
    try:
        returncode = training.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:  # the launcher's and vLLM's children too, so the next setup finds free GPUs
        stop(training)
        if server is not None:
            stop(server)
    figures: dict = {"setup": setup, "wall_s": time.perf_counter() - started,
                     "returncode": returncode}
    steps = step_times(run / "train.log") if (run / "train.log").is_file() else []
    if len(steps) >= 3:
        processes = 1 if setup in ("colocated_1gpu", "server", "server_async") else 2
        (_, t0, g0), (_, t1, g1) = steps[0], steps[-1]
        seconds_per_step = (t1 - t0) / (len(steps) - 1)
        figures |= {"steps_timed": len(steps) - 1, "s_per_step": seconds_per_step,
                    "rows_per_hour": processes * 8 * args.games / seconds_per_step * 3600,
                    "games_played_per_hour": processes * (g1 - g0) / (t1 - t0) * 3600}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--shape", choices=("7b", "3b"), default="7b")
    parser.add_argument("--games", type=int, default=32, help="games a round, per process")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--gpu-memory", type=float, default=0.35,
                        help="a colocated engine's gpu_memory_utilization")
    parser.add_argument("--evaluation-games", type=int, default=0,
                        help="games of train.py's evaluation after training (not timed)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per setup")
    parser.add_argument("--model-folder", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zeroplay-scale-out/scale_out.json"))
    args = parser.parse_args()
    from transformers import AutoTokenizer

    folder = saved_shaped_model(args.shape,
                                args.model_folder or Path(f"/tmp/zeroplay-{args.shape}"))
    args.vocabulary = len(AutoTokenizer.from_pretrained(folder))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for setup in args.setups:
        results.append(measure(setup, args, folder))
        print(json.dumps(results[-1]), flush=True)
        args.out.write_text(json.dumps({"shape": args.shape, "games": args.games,
                                        "max_tokens": args.max_tokens, "results": results},
                                       indent=2))
    print_table(results, args)


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    """Ratios of trained rows per hour: every step of every setup trains the same rows a
    process; games played per hour differ with how often a round is played (asynchronous play
    plays one every step, synchronous play reuses a round's rows of the other stage)."""
    rates = {r["setup"]: r.get("rows_per_hour") for r in results}
    print(f"\n{args.shape}-shaped, {args.games} games a round per process, {args.max_tokens} "
          f"tokens a turn")
    print(f"{'setup':>16} {'rc':>4} {'s/step':>7} {'rows/h':>8} {'games/h':>8} {'vs 1 GPU':>8} "
          f"{'vs sync':>8}")
    for r in results:
        rate = r.get("rows_per_hour")
        print(f"{r['setup']:>16} {r['returncode']!s:>4} {r.get('s_per_step', nan):>7.1f} "
              f"{rate or nan:>8.0f} {r.get('games_played_per_hour', nan):>8.0f} "
              f"{ratio(rate, rates.get('colocated_1gpu')):>8.2f} "
              f"{ratio(rate, rates.get('server')) if r['setup'] == 'server_async' else nan:>8.2f}")


def ratio(value: float | None, base: float | None) -> float:
    return value / base if value and base else float("nan")

if __name__ == "__main__":
    main()
