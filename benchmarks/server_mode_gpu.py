"""Server mode on two GPUs, end to end: `vllm serve` on GPU 1 with NCCL weight transfer, the
trainer on GPU 0 (a smoke test of what CPU tests cannot run).

    source .gpu/c2/setup.sh && python benchmarks/server_mode_gpu.py [--model PATH] [--steps 3]

1. Starts the server on GPU 1 with the command of ``configs/agent/vllm_server.yaml`` (printed;
   plus ``--enforce-eager`` for a quick start) and waits until it serves.
2. From this process on GPU 0, pushes the model's weights over NCCL (``transport=nccl``), then a
   copy with its image embeddings negated, and checks each time that the server's log-probs of a
   greedy completion are the pushed model's (transformers' forward pass, within 0.05) — the
   second time far from the original model's.
3. Runs ``train.py env=spy agent=vllm_server trainer=gpu trainer.max_steps=STEPS`` on GPU 0
   against the same server (a new trainer joining it, as a resumed run does) and checks that it
   pushed STEPS + 1 times over NCCL.

The model defaults to the embedded tiny model (real weights, built offline). Exit status 0 when
every check passed; the server's log is ``--log``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import envs
from agents.default_model import default_model_path
from agents.model import SamplingConfig, banned_token_ids
from agents.openai_agent import ServerError
from agents.vllm_server_agent import VLLMServerAgent

ROOT = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",  # = `vllm serve`
         "--weight-transfer-config", '{"backend": "nccl"}', "--logprobs-mode",
         "processed_logprobs", "--limit-mm-per-prompt", '{"image": 2}', "--enforce-eager"]


def start_server(model: str, port: int, log: Path) -> subprocess.Popen:
    command = [*SERVE[:3], "--model", model, "--port", str(port), *SERVE[3:]]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1", "VLLM_SERVER_DEV_MODE": "1",
           "PYTHONUNBUFFERED": "1"}
    print("server: CUDA_VISIBLE_DEVICES=1 VLLM_SERVER_DEV_MODE=1 " + " ".join(
        f"'{part}'" if "{" in part else part for part in command), flush=True)
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def wait_for(server: subprocess.Popen, agent: VLLMServerAgent, log: Path) -> None:
    started = time.monotonic()
    while True:
        if server.poll() is not None:
            sys.exit("vllm serve exited:\n" + log.read_text()[-4000:])
        try:
            agent.wait_until_ready(timeout=2, poll=1)
            print(f"server ready after {time.monotonic() - started:.0f} s", flush=True)
            return
        except ServerError:
            if time.monotonic() - started > 600:
                raise


def spy_observations() -> list[dict]:
    """A first clue turn and a vote turn of a spy game (one image each)."""
    env = envs.make("spy")
    env.reset(seed=0)
    first = env.pending_turns()[0][1]
    while env.pending_turns()[0][2]["phase"] == "clue":
        env.step("I see \\boxed{a red cube}")
    return [first, env.pending_turns()[0][1]]


def check_pushes(agent: VLLMServerAgent, model_folder: str) -> None:
    """Step 2: the server samples with what was pushed, image caches included."""
    sys.path.insert(0, str(ROOT))  # tests/ is not an installed package
    from tests.model_checks import trainer_logprobs

    processor = AutoProcessor.from_pretrained(model_folder)
    model = AutoModelForImageTextToText.from_pretrained(model_folder, dtype=torch.float32)
    model = model.to("cuda:0").eval()
    original = AutoModelForImageTextToText.from_pretrained(model_folder, dtype=torch.float32)
    original = original.to("cuda:0").eval()
    excluded = banned_token_ids(processor.tokenizer)
    observations = spy_observations()
    for label in ("the model's weights", "image embeddings negated"):
        if label != "the model's weights":
            with torch.no_grad():
                model.get_parameter("model.visual.merger.mlp.2.weight").mul_(-1)
        started = time.monotonic()
        agent.load_weights(model.named_parameters())
        print(f"push ({label}) over NCCL: {time.monotonic() - started:.2f} s", flush=True)
        worst, change = 0.0, 0.0
        for observation, completion in zip(observations, agent.act(observations), strict=True):
            expected = trainer_logprobs(model, processor, observation, completion, excluded)
            before = trainer_logprobs(original, processor, observation, completion, excluded)
            worst = max([worst, *(abs(a - b) for a, b in zip(completion.logprobs, expected,
                                                              strict=True))])
            change = max([change, *(abs(a - b) for a, b in zip(completion.logprobs, before,
                                                               strict=True))])
        print(f"  server vs pushed model: max |log-prob difference| {worst:.4f} (want <= 0.05); "
              f"vs the original {change:.4f}", flush=True)
        if worst > 0.05:
            sys.exit(f"FAILED: the server does not sample with the pushed weights ({label})")
    if change < 0.2:
        sys.exit("FAILED: the negated image embeddings did not change the server's log-probs")


def check_training(base_url: str, model_folder: str, steps: int) -> None:
    """Step 3: train.py in server mode, pushing after every step."""
    run_dir = Path(tempfile.mkdtemp(prefix="server-mode-run-"))
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", "env=spy",
               "agent=vllm_server", f"agent.base_urls=[{base_url}]",
               f"model.path={model_folder}", "trainer=gpu", f"trainer.max_steps={steps}",
               "trainer.per_device_train_batch_size=4", "trainer.gradient_accumulation_steps=1",
               "selfplay.games_per_round=4", "sampling.max_tokens=16", "evaluation.games=0"]
    print("training: CUDA_VISIBLE_DEVICES=0 " + " ".join(command[1:]), flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"})
    output = result.stdout + result.stderr
    pushes = re.findall(r"weights #\d+ pushed to .* over \w+ in [\d.]+ s", output)
    print("\n".join(f"  {push}" for push in pushes), flush=True)
    if result.returncode != 0:
        sys.exit(f"FAILED: train.py exited {result.returncode}:\n{output[-4000:]}")
    if len(pushes) != steps + 1 or not all(" over nccl " in push for push in pushes):
        sys.exit(f"FAILED: expected {steps + 1} pushes over NCCL, got: {pushes}")
    print(f"train.py: {steps} steps in {time.monotonic() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: the embedded tiny model)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log", type=Path, default=Path("vllm-serve-gpu1.log"))
    args = parser.parse_args()
    if torch.cuda.device_count() < 2:
        sys.exit("needs two GPUs: the server takes GPU 1, the trainer GPU 0")
    model_folder = args.model or str(default_model_path())
    server = start_server(model_folder, args.port, args.log)
    try:
        base_url = f"http://127.0.0.1:{args.port}/v1"
        torch.cuda.set_device(0)
        # this process keeps its NCCL group open: the trainer of step 3 takes the default port
        agent = VLLMServerAgent([base_url], transport="nccl", tokenizer=model_folder,
                                sampling=SamplingConfig(max_tokens=16, temperature=0),
                                group_port=51300)
        wait_for(server, agent, args.log)
        check_pushes(agent, model_folder)
        check_training(base_url, model_folder, args.steps)
        print("server mode on GPUs: all checks passed")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
