"""Special tokens (image placeholders, vision and chat markers...) are never sampled by any
backend, and the trainer never crashes on a completion that holds one (rows from elsewhere).

The backends are tried on a copy of the tiny model that, left alone, samples nothing but those
tokens: each test shows that first, then that with the ban not one comes out."""

from __future__ import annotations

import logging
import math
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from agents.model import BAN_LOGIT_BIAS, SamplingConfig, banned_token_ids, turn_end_ids
from agents.openai_agent import OpenAIAgent
from agents.trajectory import TurnRecord
from agents.transformers_agent import TransformersAgent
from tests.model_checks import trainer_logprobs
from tests.test_openai_agent import OBSERVATION, Scripted
from trainers.grpo import TrajectoryGRPOConfig, TrajectoryGRPOTrainer
from trainers.rows import TrainingRow

#: Qwen2-VL's special tokens but its two turn ends (<|im_end|>, <|endoftext|>), in id order.
QWEN2_VL_BANNED = ("<|im_start|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                   "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                   "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
#: The added tokens Qwen2.5-VL has besides Qwen2-VL's (not marked special there).
QWEN2_5_VL_ADDED = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
GAP = 20.0  # nats by which the special-token lover prefers the banned tokens to any other


def test_banned_ids_are_the_special_tokens_but_the_turn_ends(default_model):
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    assert tokenizer.convert_ids_to_tokens(banned_token_ids(tokenizer)) == list(QWEN2_VL_BANNED)
    assert turn_end_ids(tokenizer) == set(tokenizer.convert_tokens_to_ids(
        ["<|im_end|>", "<|endoftext|>"]))


def test_banned_ids_of_a_tokenizer_like_qwen2_5_vl_base(default_model):
    """More added tokens, not marked special, and a base model's end of sequence."""
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    tokenizer.add_tokens(list(QWEN2_5_VL_ADDED))
    tokenizer.eos_token = "<|endoftext|>"
    banned = tokenizer.convert_ids_to_tokens(banned_token_ids(tokenizer))
    assert banned == list(QWEN2_VL_BANNED + QWEN2_5_VL_ADDED)


# ----- the trainer: rows holding them go through a step -----

@pytest.fixture(scope="module")
def rows_with_special_tokens(default_model, spy_observations) -> list[TrainingRow]:
    """Two played turns as they are, then one per banned token holding it: ``<|image_pad|>``
    first thing, the others after two tokens (each followed by the rest of the completion)."""
    agent = TransformersAgent(default_model, SamplingConfig(max_tokens=6, seed=0))
    banned = banned_token_ids(agent.processor.tokenizer)
    image_pad = agent.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    completions = agent.act(spy_observations)
    rows = []
    for i, token in enumerate([None, None, *banned]):
        observation, completion = spy_observations[i % 2], completions[i % 2]
        ids, logprobs = list(completion.completion_ids), list(completion.logprobs)
        if token is not None:
            at = 0 if token == image_pad else 2
            ids[at:at] = [token]
            logprobs[at:at] = [-1.0]
        turn = TurnRecord(game_id=f"g{i}", env="spy", turn=0, seat="player_1", role="civilian",
                          phase="clue", round=0, agent="model", prompt=observation["prompt"],
                          images=list(observation["images"]), text=completion.text,
                          prompt_ids=completion.prompt_ids, completion_ids=ids, logprobs=logprobs)
        rows.append(TrainingRow(turn, 1.0 if i % 2 else -1.0))
    return rows


def test_a_step_trains_each_completion_up_to_its_first_special_token(
        default_model, rows_with_special_tokens, tmp_path, caplog):
    rows = rows_with_special_tokens
    processor = AutoProcessor.from_pretrained(default_model, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    args = TrajectoryGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
        gradient_checkpointing=False, per_device_train_batch_size=len(rows),
        max_steps=1, learning_rate=1e-2, logging_steps=1,
        save_strategy="no")
    trainer = TrajectoryGRPOTrainer(model, processor, args, rows=lambda count: rows[:count])
    banned = set(banned_token_ids(processor.tokenizer))
    with caplog.at_level(logging.WARNING, logger="trainers.grpo"):
        batch = trainer._generate_and_score_completions([{}] * len(rows))
    cut = len(rows) - 2
    assert f"{cut} completion(s) of this step held tokens no model may sample" in caplog.text
    assert trainer._metrics["train"]["completions/banned_token_rows"] == [cut]
    for i, row in enumerate(rows):
        ids = row.turn.completion_ids
        kept = next((at for at, token in enumerate(ids) if token in banned), len(ids))
        mask = batch["completion_mask"][i]
        # the exact ids before the first special token, nothing from it on
        assert batch["completion_ids"][i][:kept].tolist() == ids[:kept]
        assert mask[:kept].all() and not mask[kept:].any()
        assert not banned & set(batch["completion_ids"][i].tolist())
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    [first] = [i for i, row in enumerate(rows) if row.turn.completion_ids[0] == image_pad]
    assert batch["completion_mask"][first].sum() == 0  # nothing before it: nothing trained
    # image tokens: the prompts' own only (one 24-token image each)
    assert batch["mm_token_type_ids"].sum(dim=1).tolist() == [24] * len(rows)

    trainer.train()  # without the cut: "Image features and image tokens do not match"
    [log, _] = trainer.state.log_history
    assert math.isfinite(log["loss"]) and log["grad_norm"] > 0
    assert log["completions/banned_token_rows"] == cut


# ----- the backends: a model that wants nothing else still never samples them -----

@pytest.fixture(scope="module")
def special_token_lover(default_model, tmp_path_factory) -> Path:
    """The tiny model, changed so that every next token is a banned one but for the ban: its
    last layer adds one large constant feature to every position (constant attention values, no
    MLP), which only the banned tokens' rows of the LM head read, ``GAP`` nats above the rest."""
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(default_model)
    banned = banned_token_ids(processor.tokenizer)
    text = model.model.language_model
    attention, size = text.layers[-1].self_attn, model.config.text_config.hidden_size
    with torch.no_grad():
        attention.v_proj.weight.zero_()
        attention.v_proj.bias.fill_(1.0)
        attention.o_proj.weight.zero_()
        attention.o_proj.weight[0] = 1e3 / attention.o_proj.in_features  # feature 0 += 1000
        text.layers[-1].mlp.down_proj.weight.zero_()
        text.norm.weight[0] = 1.0  # after the norm, feature 0 is ~sqrt(size), the rest ~0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[banned, 0] = GAP / math.sqrt(size)
    path = tmp_path_factory.mktemp("special-token-lover")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def assert_never_sampled(groups, banned: list[int]) -> None:
    """No banned id in any completion, and a variety of other tokens sampled."""
    sampled = [token for group in groups for c in group for token in c.completion_ids]
    assert not set(banned) & set(sampled)
    assert len(sampled) >= 8 and len(set(sampled)) >= 5


def assert_only_sampled(groups, banned: list[int]) -> None:
    """What the model samples unbanned: banned ids only."""
    sampled = {token for group in groups for c in group for token in c.completion_ids}
    assert sampled and sampled <= set(banned)


def test_transformers_never_samples_them(special_token_lover, spy_observations):
    agent = TransformersAgent(special_token_lover, SamplingConfig(max_tokens=8, seed=0))
    banned = list(agent.banned_ids)
    agent.banned_ids = []
    assert_only_sampled([agent.act(spy_observations)], banned)
    agent.banned_ids = banned
    completions = agent.act(spy_observations)
    assert_never_sampled([completions], banned)
    # log-probs of the distribution sampled from: the model's, the banned tokens excluded
    for observation, completion in zip(spy_observations, completions, strict=True):
        expected = trainer_logprobs(agent.model, agent.processor, observation, completion,
                                    excluded=banned)
        assert completion.logprobs == pytest.approx(expected, abs=2e-3)


def test_vllm_never_samples_them(special_token_lover, spy_observations):
    from agents.vllm_agent import VLLMAgent

    engine = VLLMAgent(special_token_lover, SamplingConfig(max_tokens=8, seed=0),
                       max_model_len=2048, enforce_eager=True)
    banned = list(engine.banned_ids)
    engine.banned_ids = []
    assert_only_sampled(engine.sample(spy_observations, 2), banned)
    engine.banned_ids = banned
    groups = engine.sample(spy_observations, 2)
    assert_never_sampled(groups, banned)
    # vLLM's processed log-probs are those of the distribution sampled from
    model = AutoModelForImageTextToText.from_pretrained(special_token_lover).eval()
    for observation, group in zip(spy_observations, groups, strict=True):
        for completion in group:
            expected = trainer_logprobs(model, engine.processor, observation, completion,
                                        excluded=banned)
            assert completion.logprobs == pytest.approx(expected, abs=0.02)


def test_vllm_serve_never_samples_them(special_token_lover, spy_observations):
    from tests.test_vllm import vllm_server

    with vllm_server(special_token_lover, SamplingConfig(max_tokens=8, seed=0)) as agent:
        # the agent reads the tokenizer of the folder the server names as its model's root
        agent.act(spy_observations[:1])
        banned = banned_token_ids(AutoTokenizer.from_pretrained(special_token_lover))
        assert agent.served_root == str(special_token_lover)
        assert agent.logit_bias == {str(token): BAN_LOGIT_BIAS for token in banned}
        ban, agent.logit_bias = agent.logit_bias, {}
        assert_only_sampled([agent.act(spy_observations)], banned)
        agent.logit_bias = ban
        completions = agent.act(spy_observations)
    assert_never_sampled([completions], banned)
    model = AutoModelForImageTextToText.from_pretrained(special_token_lover).eval()
    processor = AutoProcessor.from_pretrained(special_token_lover)
    for observation, completion in zip(spy_observations, completions, strict=True):
        expected = trainer_logprobs(model, processor, observation, completion, excluded=banned)
        assert completion.logprobs == pytest.approx(expected, abs=0.02)


# ----- the OpenAI client's request, without vLLM -----

@pytest.fixture
def scripted_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.statuses, server.bodies = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.bodies
    server.shutdown()


def test_openai_request_bans_them_with_the_given_tokenizer(scripted_server, default_model):
    url, bodies = scripted_server
    OpenAIAgent(url, tokenizer=default_model).act([OBSERVATION])
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    assert bodies[0]["logit_bias"] == {str(token): -100.0 for token in banned_token_ids(tokenizer)}


def test_openai_without_a_tokenizer_warns_once_and_sends_no_bias(scripted_server, caplog):
    url, bodies = scripted_server
    agent = OpenAIAgent(url)
    with caplog.at_level(logging.WARNING, logger="agents.openai_agent"):
        agent.act([OBSERVATION])
        agent.act([OBSERVATION])
    assert caplog.text.count("may sample the special tokens (image placeholders and the like) "
                             "of model 'fake'") == 1
    assert "tokenizer=" in caplog.text
    assert all("logit_bias" not in body for body in bodies)
