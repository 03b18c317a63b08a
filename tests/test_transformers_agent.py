"""The transformers backend on the tiny default model: exact ids and sampler log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from agents import Completion
from agents.model import SamplingConfig
from agents.transformers_agent import TransformersAgent
from tests.model_checks import trainer_logprobs


@pytest.fixture(scope="module")
def agent(default_model) -> TransformersAgent:
    return TransformersAgent(default_model, SamplingConfig(max_tokens=16, seed=0))


def test_completions_carry_exact_prompt_ids_tokens_and_logprobs(agent, spy_observations):
    completions = agent.act(spy_observations)
    assert len(completions) == 2 and all(isinstance(c, Completion) for c in completions)
    for observation, completion in zip(spy_observations, completions, strict=True):
        assert 1 <= len(completion.completion_ids) <= 16
        assert len(completion.logprobs) == len(completion.completion_ids)
        assert all(math.isfinite(lp) and lp <= 0 for lp in completion.logprobs)
        image_pad = agent.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert completion.prompt_ids.count(image_pad) == 24  # a 320x240 image, capped
        pad = agent.processor.tokenizer.pad_token_id
        assert pad not in completion.prompt_ids            # left padding removed
        # the sampler's log-probs are the model's (temperature 1, top-p 1), the special tokens
        # excluded; to bf16 precision (the batch is left-padded, the check's prompt alone)
        expected = trainer_logprobs(agent.model, agent.processor, observation, completion,
                                    excluded=agent.banned_ids)
        assert completion.logprobs == pytest.approx(expected, abs=5e-3)


def test_batched_and_single_calls_see_the_same_prompts(agent, spy_observations):
    together = agent.act(spy_observations)
    alone = [agent.act([o])[0] for o in spy_observations]
    assert [c.prompt_ids for c in together] == [c.prompt_ids for c in alone]


def test_greedy_is_deterministic_and_seeds_replay(default_model, spy_observations):
    greedy = TransformersAgent(default_model, SamplingConfig(max_tokens=8, temperature=0))
    assert greedy.act(spy_observations) == greedy.act(spy_observations)
    first = TransformersAgent(default_model, SamplingConfig(max_tokens=8, seed=5))
    second = TransformersAgent(default_model, SamplingConfig(max_tokens=8, seed=5),
                               model_object=first.model, processor=first.processor)
    assert first.act(spy_observations) == second.act(spy_observations)


def test_seeded_sampling_leaves_the_process_rng_to_the_trainer(agent, spy_observations):
    """The trainer shares the process's RNG; a seeded agent samples on a fork of it."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    agent.act(spy_observations)
    assert torch.equal(torch.rand(3), expected)


def test_a_training_model_samples_as_in_eval_mode_and_stays_in_training(default_model,
                                                                         spy_observations):
    """A trainer's model is in train mode with gradient checkpointing, which turns the KV cache
    off; sampling from it must give what the same model gives in eval mode (it once did not: the
    images were dropped after the first token), and leave it in train mode."""
    from transformers import AutoModelForImageTextToText

    def sample(training: bool) -> list[Completion]:
        model = AutoModelForImageTextToText.from_pretrained(default_model)
        agent = TransformersAgent(default_model, SamplingConfig(max_tokens=12, seed=3),
                                  model_object=model)
        if training:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False  # as TRL leaves it
            model.train()
        completions = agent.act(spy_observations)
        assert model.training == training
        return completions

    assert [c.completion_ids for c in sample(True)] == [c.completion_ids for c in sample(False)]


def test_observation_without_images(agent):
    [completion] = agent.act([{"prompt": "Say hello.", "images": (), "phase": "", "context": ""}])
    image_pad = agent.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_pad not in completion.prompt_ids and completion.completion_ids


def test_bad_sampling_values():
    for options in ({"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"seed": -3}):
        with pytest.raises(ValueError):
            SamplingConfig(**options)


def test_agent_plays_whole_games_through_the_runner(agent):
    import envs
    from agents.rollout import RolloutRunner

    runner = RolloutRunner(lambda: envs.make("qa_duel", num_answers=3), agent, parallel_games=2)
    results = runner.run(2, seed=0)
    # the random model writes no valid question: each duel ends after its question
    assert [len(r.turns) for r in results] == [1, 1]
    assert all(t.completion_ids and t.logprobs for r in results for t in r.turns)
    assert torch.is_grad_enabled()  # generation did not leave gradients off


def test_arena_plays_with_a_model_and_saves_trajectories(default_model, tmp_path):
    """The main job with the transformers backend on the default model."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from agents.trajectory import load_results

    command = [sys.executable, "-m", "agents.arena", "agent=transformers", "games=2",
               "parallel_games=2", "replays=1", "trajectories=true",
               f"+agent.model={default_model}", "+agent.max_tokens=8",
               f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parent.parent, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["games"] == 2.0
    results = load_results(tmp_path / "trajectories")
    assert len(results) == 2 and all(t.completion_ids for r in results for t in r.turns)
