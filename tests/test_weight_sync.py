"""Weight sync: after a GRPO step the in-process vLLM engine holds the trained weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from agents.model import SamplingConfig
from agents.trajectory import TurnRecord
from agents.vllm_agent import VLLMAgent
from tests.model_checks import engine_logprobs, trainer_logprobs
from trainers.grpo import TrajectoryGRPOConfig, TrajectoryGRPOTrainer
from trainers.rows import TrainingRow
from trainers.weight_sync import SyncRolloutWeights


@pytest.fixture(scope="module")
def engine(default_model) -> VLLMAgent:
    return VLLMAgent(default_model, SamplingConfig(max_tokens=8, seed=0), max_model_len=1024,
                     enforce_eager=True, in_process=True)


def as_row(observation: dict, completion, advantage: float) -> TrainingRow:
    turn = TurnRecord(game_id="g", env="spy", turn=0, seat="player_1", role="civilian",
                      phase="clue", round=0, agent="vllm", prompt=observation["prompt"],
                      images=list(observation["images"]), text=completion.text,
                      prompt_ids=completion.prompt_ids, completion_ids=completion.completion_ids,
                      logprobs=completion.logprobs, reward=advantage)
    return TrainingRow(turn, advantage)


def test_engine_samples_the_trained_weights_after_a_step(engine, default_model,
                                                         spy_observations, tmp_path):
    processor = AutoProcessor.from_pretrained(default_model, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    observation = spy_observations[0]
    completions = engine.sample([observation], 4)[0]
    fixed = completions[0]
    before = engine_logprobs(engine, observation, fixed.completion_ids)
    assert before == pytest.approx(trainer_logprobs(model, processor, observation, fixed),
                                   abs=0.02)
    assert fixed.logprobs == pytest.approx(trainer_logprobs(
        model, processor, observation, fixed, excluded=engine.banned_ids), abs=0.02)

    rows = [as_row(observation, c, 1.0 if i % 2 else -1.0) for i, c in enumerate(completions)]
    options = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
                   per_device_train_batch_size=4, learning_rate=1e-2, save_steps=1)
    sync = SyncRolloutWeights(engine)
    trainer = TrajectoryGRPOTrainer(model, processor, TrajectoryGRPOConfig(**options),
                                    rows=lambda count: rows[:count], callbacks=[sync])
    trainer.train()
    assert sync.pushes == 2  # at the start and after the one step
    assert sync.metrics.keys() == {"weights/wait_seconds", "weights/push_seconds"}
    assert sync.metrics["weights/push_seconds"] > 0 <= sync.metrics["weights/wait_seconds"]

    after = engine_logprobs(engine, observation, fixed.completion_ids)
    trained = trainer_logprobs(model.eval(), processor, observation, fixed)
    assert after == pytest.approx(trained, abs=0.05)  # the engine holds bf16 copies
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 0.2
    # and what it samples now comes with log-probs of the trained model
    [new] = engine.act([observation])
    assert new.logprobs == pytest.approx(trainer_logprobs(
        model, processor, observation, new, excluded=engine.banned_ids), abs=0.05)

    # resumed in a new process, the engine starts on the initial weights: the first push gives it
    # the checkpoint's (what it holds at the next push, after one more step, is that)
    engine.load_weights(AutoModelForImageTextToText.from_pretrained(
        default_model, dtype=torch.float32).named_parameters())
    held = []
    resumed_sync = SyncRolloutWeights(engine, before_push=lambda: held.append(
        engine_logprobs(engine, observation, fixed.completion_ids)))
    resumed = TrajectoryGRPOTrainer(
        AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32),
        processor, TrajectoryGRPOConfig(**options | {"max_steps": 2}),
        rows=lambda count: rows[:count], callbacks=[resumed_sync])
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert len(held) == 2
    assert held[0] == pytest.approx(before, abs=1e-5)
    assert held[1] == pytest.approx(after, abs=1e-5)


def test_engine_samples_the_merged_lora_weights_after_a_step(engine, default_model,
                                                             spy_observations, tmp_path):
    """A LoRA step's adapters reach the engine merged into the base weights, under the base
    model's names; the peft model trains on with its adapters unmerged."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import BaseTunerLayer

    processor = AutoProcessor.from_pretrained(default_model, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    observation = spy_observations[0]
    completions = engine.sample([observation], 4)[0]
    fixed = completions[0]
    base = trainer_logprobs(model, processor, observation, fixed)

    rows = [as_row(observation, c, 1.0 if i % 2 else -1.0) for i, c in enumerate(completions)]
    args = TrajectoryGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
        per_device_train_batch_size=4, learning_rate=5e-2, save_strategy="no",
        bf16=False)  # no autocast around the peft model's forward: float32 as the base's
    sync = SyncRolloutWeights(engine)
    trainer = TrajectoryGRPOTrainer(
        model, processor, args, rows=lambda count: rows[:count], callbacks=[sync],
        peft_config=LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                               target_modules="all-linear"))
    trainer.train()
    peft_model = trainer.model.eval()
    assert sync.pushes == 2 and hasattr(peft_model, "merge_adapter")

    adapted = trainer_logprobs(peft_model, processor, observation, fixed)
    pushed = engine_logprobs(engine, observation, fixed.completion_ids)
    assert pushed == pytest.approx(adapted, abs=0.05)  # the engine holds bf16 copies
    assert max(abs(a - b) for a, b in zip(pushed, base, strict=True)) > 0.2
    # the push left the adapters unmerged: the peft model's forward is as before the push
    sync.push(peft_model)
    lora_layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]
    assert lora_layers and not any(layer.merged for layer in lora_layers)
    assert trainer_logprobs(peft_model, processor, observation, fixed) == pytest.approx(
        adapted, abs=1e-5)
    with peft_model.disable_adapter():
        assert trainer_logprobs(peft_model, processor, observation, fixed) == pytest.approx(
            base, abs=1e-5)



def _gather_under_fsdp2(rank: int, model_folder: str, init_file: str, out_file: str) -> None:
    """One of two processes: shard the model with FSDP2 over gloo, then gather it back."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from trainers.weight_sync import merged_weights

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = AutoModelForImageTextToText.from_pretrained(model_folder, dtype=torch.float32)
        for layer in model.model.language_model.layers:
            fully_shard(layer)
        fully_shard(model)
        local = {name: p.to_local().numel() for name, p in model.named_parameters()}
        with merged_weights(model) as weights:
            gathered = {name: tensor.clone() for name, tensor in weights}
        if rank == 0:
            torch.save({"gathered": gathered, "local": local}, out_file)
    finally:
        dist.destroy_process_group()


def test_sharded_weights_are_gathered_whole_for_the_push(default_model, tmp_path):
    """Under FSDP2 every process holds half of each parameter; what the push reads is each whole
    parameter under its own name, equal to the unsharded model's."""
    import torch.multiprocessing as mp

    out = tmp_path / "gathered.pt"
    mp.spawn(_gather_under_fsdp2, args=(str(default_model), str(tmp_path / "init"), str(out)),
             nprocs=2)
    saved = torch.load(out, weights_only=True)
    reference = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    expected = dict(reference.named_parameters())
    assert saved["gathered"].keys() == expected.keys()
    for name, tensor in saved["gathered"].items():
        torch.testing.assert_close(tensor, expected[name].detach(), rtol=0, atol=0)
    sharded = [n for n, size in saved["local"].items() if size < expected[n].numel()]
    assert len(sharded) > len(expected) // 2  # the gather really had shards to gather
