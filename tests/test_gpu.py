"""The vLLM backend, sleep mode, the runner and a colocated training step on a CUDA GPU
(``pytest -m gpu`` on the GPU machine; it fails when no GPU is visible or no test is collected).

vLLM 0.26's engine, started in its own process with the V2 model runner, hung at start on the
H100 here; in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) it starts in ~55 s and runs.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import envs
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner
from tests.model_checks import trainer_logprobs

pytestmark = pytest.mark.gpu
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
ROOT = Path(__file__).parent.parent
ENGINE_SHARE = 0.3  # of the GPU's memory, for the module's engine


@pytest.fixture(scope="module")
def engine(default_model):
    from agents.vllm_agent import VLLMAgent

    return VLLMAgent(default_model, SamplingConfig(max_tokens=16, seed=0), max_model_len=2048,
                     gpu_memory_utilization=ENGINE_SHARE, in_process=True, sleep=True)


def used_gib() -> float:
    """GPU memory in use by every process, GiB."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def test_on_the_gpu_seeds_make_each_request_reproducible_in_any_batch(engine,
                                                                       spy_observations):
    first, second = spy_observations
    engine.seeds.__init__(11)
    together = engine.act([first, second])
    engine.seeds.__init__(11)
    alone = engine.act([first])
    # the same tokens; log-probs only to kernel precision, which depends on the batch shape
    assert together[0].completion_ids == alone[0].completion_ids
    assert together[0].text == alone[0].text
    assert together[0].logprobs == pytest.approx(alone[0].logprobs, abs=1e-2)


def test_logprobs_match_transformers_on_the_gpu(engine, default_model, spy_observations):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(default_model)
    model = AutoModelForImageTextToText.from_pretrained(default_model,
                                                        dtype=torch.bfloat16).cuda().eval()
    for observation, completion in zip(spy_observations, engine.act(spy_observations),
                                       strict=True):
        expected = trainer_logprobs(model, processor, observation, completion,
                                    excluded=engine.banned_ids)
        assert completion.logprobs == pytest.approx(expected, abs=0.05)


def test_runner_plays_pooled_games_on_the_gpu(engine):
    runner = RolloutRunner(lambda: envs.make("spy", decision="observer"), engine,
                           parallel_games=32)
    results = runner.run(64, seed=0)
    assert len(results) == 64 and all(t.completion_ids for r in results for t in r.turns)


def test_a_colocated_7b_shaped_step_trains_pushes_saves_and_evaluates(tmp_path):
    """train.py as on one GPU (vLLM asleep while the optimizer steps, LoRA r 64 on every linear
    layer of the language model), on Qwen2-VL-7B's widths with 2 layers: a decision step, then
    a clue step whose role baselines make the advantages non-zero, so the adapter moves."""
    import torch
    from safetensors.torch import load_file

    shapes = runpy.run_path(str(ROOT / "benchmarks" / "shapes.py"))
    model = shapes["saved_shaped_model"]("7b", tmp_path / "model", layers=2)
    torch.cuda.empty_cache()
    lora = ("+model.lora={r: 64, lora_alpha: 128, target_modules: "
            "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}")
    run_dir = tmp_path / "run"
    command = [sys.executable, "train.py", "env=spy", f"hydra.run.dir={run_dir}",
               f"model.path={model}", "model.dtype=bfloat16", lora, "agent=vllm",
               "agent.sleep=true", "+agent.load_format=dummy",
               "+agent.gpu_memory_utilization=0.25", "+agent.sampling_options.ignore_eos=true",
               "+agent.sampling_options.detokenize=false", "sampling.max_tokens=32",
               "trainer=gpu", "trainer.max_steps=2", "trainer.save_steps=1",
               "trainer.per_device_train_batch_size=8", "trainer.gradient_accumulation_steps=4",
               "trainer.report_to=none", "selfplay.games_per_round=4",
               "selfplay.schedule=alternate", "selfplay.cycle=1", "evaluation.games=2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    log = (run_dir / "train.log").read_text()
    for step, stage in ((1, "decision"), (2, "clue")):
        line = next(line for line in log.splitlines() if f"step {step}: loss=" in line)
        assert f"selfplay/stage_{stage}=1" in line and "weights/push_seconds=" in line, line
    adapter = load_file(run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().max() > 0 for tensor in lora_b)  # starts at zero
    assert (run_dir / "final" / "config.json").is_file()  # the adapter merged in
    assert json.loads((run_dir / "evaluation.json").read_text())["games"] == 2


def test_sleep_frees_the_engine_and_it_wakes_on_pushed_weights(engine, default_model,
                                                                spy_observations):
    """Sleep gives back the engine's memory, keeping its weights on the CPU or dropping them
    (``discard_weights``: then it plays no more until weights are pushed); a push wakes only the
    weights, and sleeping again frees them (a training step without games); the next generation
    wakes the KV cache and samples from the pushed weights (the last test: it changes them)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(default_model)
    model = AutoModelForImageTextToText.from_pretrained(default_model,
                                                        dtype=torch.bfloat16).cuda().eval()
    generator = torch.Generator("cuda").manual_seed(0)
    total = torch.cuda.mem_get_info()[1] / 2**30
    before = engine.act(spy_observations)
    for discard_weights in (False, True):
        awake = used_gib()
        engine.sleep(discard_weights=discard_weights)
        asleep = used_gib()
        assert awake - asleep > 0.8 * ENGINE_SHARE * total - 1, (awake, asleep)
        if discard_weights:
            with pytest.raises(RuntimeError, match="load_weights must come first"):
                engine.act(spy_observations)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator, device="cuda",
                                           dtype=parameter.dtype), alpha=0.05)
        engine.load_weights(model.named_parameters())
        assert used_gib() < awake - 0.5 * ENGINE_SHARE * total  # the KV cache sleeps on
        if discard_weights:  # a step without games: the pushed weights go back to sleep
            engine.sleep(discard_weights=True)
            assert used_gib() < asleep + 0.5, (asleep, used_gib())
            with pytest.raises(RuntimeError, match="load_weights must come first"):
                engine.act(spy_observations)
            engine.load_weights(model.named_parameters())
        engine.seeds.__init__(0)
        after = engine.act(spy_observations)
        assert used_gib() > awake - 1  # all of it back
        assert [c.completion_ids for c in after] != [c.completion_ids for c in before]
        for observation, completion in zip(spy_observations, after, strict=True):
            expected = trainer_logprobs(model, processor, observation, completion,
                                        excluded=engine.banned_ids)
            assert completion.logprobs == pytest.approx(expected, abs=0.05)
        before = after
