"""GRPO on recorded turns: exact tensors from trajectories, one step that moves the weights."""

from __future__ import annotations

import copy
import dataclasses
import math
import weakref

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import GRPOConfig

import envs
from agents.model import SamplingConfig, banned_token_ids
from agents.rollout import RolloutRunner
from agents.transformers_agent import TransformersAgent
from tests.model_checks import trainer_logprobs
from trainers.config_checks import TRAJECTORY_FIELDS
from trainers.grpo import TrajectoryGRPOConfig, TrajectoryGRPOTrainer
from trainers.rows import TrainingRow


@pytest.fixture(scope="module")
def played(default_model):
    """A float32 copy of the default model, and turns it played itself (temperature 1), with
    advantages that do not cancel out in a loss even when the completions have equal lengths
    (which the sampled tokens, and so the number of torch threads, decide)."""
    processor = AutoProcessor.from_pretrained(default_model, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    agent = TransformersAgent(default_model, SamplingConfig(max_tokens=12, seed=0),
                              model_object=model, processor=processor)
    results = RolloutRunner(lambda: envs.make("spy", decision="observer", observer_samples=2),
                            agent, parallel_games=2).run(2, seed=0)
    turns = [turn for result in results for turn in result.turns]
    return model, processor, [TrainingRow(t, 1.0 if i % 2 else -0.5) for i, t in enumerate(turns)]


def make_trainer(model, processor, rows, tmp_path, peft_config=None,
                 **options) -> TrajectoryGRPOTrainer:
    args = TrajectoryGRPOConfig(**{
        "output_dir": str(tmp_path), "use_cpu": True, "bf16": False, "report_to": "none",
        "gradient_checkpointing": False, "per_device_train_batch_size": 4,
        "max_steps": 1, "learning_rate": 1e-2, "logging_steps": 1,
        "save_strategy": "no", **options})
    queue = iter(rows)
    trainer = TrajectoryGRPOTrainer(model, processor, args, peft_config=peft_config,
                                    rows=lambda count: [next(queue) for _ in range(count)])
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; tests call the loss
    return trainer


@torch.no_grad()
def trl_logprobs(trainer: TrajectoryGRPOTrainer, batch: dict, model=None) -> torch.Tensor:
    """TRL's per-token log-probs of ``batch``'s completions (one pass, full width) under
    ``model``, by default ``trainer``'s."""
    return trainer._get_per_token_logps_and_entropies(
        model or trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
        torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
        batch["completion_ids"].size(1), 4,
        **{k: batch[k] for k in ("pixel_values", "image_grid_thw", "num_images",
                                 "mm_token_type_ids")})[0]


#: The two places the importance weights come from: a no-grad forward pass before the step
#: (TRL's generation batch spans optimizer steps) or the loss's own forward pass (it does not).
WEIGHTS_UP_FRONT, WEIGHTS_IN_THE_LOSS = {"steps_per_generation": 2}, {}


def weighted_advantages(trainer: TrajectoryGRPOTrainer, batch: dict,
                        monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The advantages TRL's loss multiplies on ``batch`` (one micro-batch), and its mask."""
    from trl import GRPOTrainer

    seen = {}
    loss_of = GRPOTrainer._compute_loss

    def loss_that_keeps_its_inputs(self, model, inputs):
        loss = loss_of(self, model, inputs)
        seen.update(inputs)
        return loss

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", loss_that_keeps_its_inputs)
    trainer._compute_loss(trainer.model, batch)
    return seen["advantages"], seen["completion_mask"].bool()


def test_rows_become_trl_inputs_without_retokenisation(played, tmp_path, monkeypatch):
    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path)
    batch = trainer._generate_and_score_completions([{}] * 4)
    for i, row in enumerate(rows[:4]):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        assert prompt == row.turn.prompt_ids and completion == row.turn.completion_ids
        assert batch["prompt_mask"][i, -1] == 1            # prompts padded on the left
        assert batch["completion_mask"][i, 0] == 1          # completions on the right
    image_tokens = batch["mm_token_type_ids"].sum(dim=1).tolist()
    assert image_tokens == [24] * 4 and batch["num_images"] == [1] * 4
    assert batch["image_grid_thw"].shape == (4, 3)
    # the sampler was this very model, less the special tokens it may not sample: each token's
    # importance weight is the probability those leave to the others (~0.98 in this random model)
    mask = batch["completion_mask"].bool()
    banned = banned_token_ids(processor.tokenizer)
    advantages, _ = weighted_advantages(trainer, batch, monkeypatch)
    for i, row in enumerate(rows[:4]):
        assert batch["sampler_logps"][i][mask[i]].tolist() == pytest.approx(row.turn.logprobs)
        observation = {"prompt": row.turn.prompt, "images": row.turn.images}
        model_logprobs = torch.tensor(trainer_logprobs(model, processor, observation, row.turn))
        sampled_from = torch.tensor(trainer_logprobs(model, processor, observation, row.turn,
                                                     excluded=banned))
        weights = (model_logprobs - sampled_from).exp()
        assert advantages[i][mask[i]] == pytest.approx((row.advantage * weights).tolist(),
                                                       abs=1e-3)
        assert weights.max() < 1
    assert batch["num_items_in_batch"] == mask.sum()


def test_an_image_shown_in_several_turns_is_processed_once(played, tmp_path, monkeypatch):
    """The civilians of a spy game see one image: the processor gets it once, and the rows get
    the pixels and grids that processing every turn's image gives."""
    from PIL import Image

    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path)
    images = [image for row in rows for image in row.turn.images]
    expected = processor.image_processor(images=[Image.fromarray(i) for i in images],
                                         return_tensors="pt")
    processed = []
    process = type(processor.image_processor).__call__

    def counted(self, images, **options):
        processed.extend(images)
        return process(self, images, **options)

    monkeypatch.setattr(type(processor.image_processor), "__call__", counted)
    ids = torch.zeros((len(rows), 1), dtype=torch.long)
    inputs = trainer._image_inputs(rows, ids)
    assert len(processed) == len({id(image) for image in images}) < len(images)
    assert torch.equal(inputs["image_grid_thw"], expected["image_grid_thw"])
    assert torch.equal(inputs["pixel_values"], expected["pixel_values"])
    assert inputs["num_images"] == [len(row.turn.images) for row in rows]


def test_lora_in_bf16_trains_as_with_peft_casting_its_inputs_to_float32(
        default_model, played, tmp_path, monkeypatch):
    """In mixed precision the adapters' inputs stay bf16 (autocast runs their matmuls in bf16
    anyway): one step moves the float32 adapters exactly as with PEFT's cast to float32."""
    from peft import LoraConfig

    _, processor, rows = played
    adapters_after, input_dtypes = [], []
    for uncast in (True, False):
        monkeypatch.setattr(TrajectoryGRPOTrainer, "_adapters_under_autocast",
                            property(lambda self, uncast=uncast: uncast))
        model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.bfloat16)
        torch.manual_seed(0)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        trainer = make_trainer(model, processor, rows, tmp_path / str(uncast), bf16=True,
                               peft_config=lora)
        adapter = next(m for n, m in trainer.model.named_modules() if n.endswith("lora_A.default"))
        hook = adapter.register_forward_pre_hook(lambda _, args: input_dtypes.append(args[0].dtype))
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                  if p.requires_grad}
        trainer.train()
        hook.remove()
        after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                 if p.requires_grad}
        assert all(p.dtype == torch.float32 for p in after.values())
        assert not any(torch.equal(before[n], p) for n, p in after.items())
        adapters_after.append(after)
        input_dtypes.append(None)  # between the runs
    uncast_dtypes = set(input_dtypes[:input_dtypes.index(None)])
    cast_dtypes = set(input_dtypes[input_dtypes.index(None) + 1:-1])
    assert uncast_dtypes == {torch.bfloat16} and cast_dtypes == {torch.float32}
    for name, weight in adapters_after[0].items():
        torch.testing.assert_close(weight, adapters_after[1][name], rtol=0, atol=0)


def test_one_step_moves_every_weight_with_a_finite_loss(played, tmp_path):
    model, processor, rows = played
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = make_trainer(model, processor, rows, tmp_path)
    trainer.train()
    [log, _] = trainer.state.log_history
    assert math.isfinite(log["loss"]) and log["grad_norm"] > 0
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged


def test_releasing_the_training_state_frees_the_optimizer_and_the_reference(played, tmp_path):
    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path, beta=0.04)
    trainer.train()
    optimizer, reference = weakref.ref(trainer.optimizer), weakref.ref(trainer.ref_model)
    adam_state = weakref.ref(next(iter(trainer.optimizer.state.values()))["exp_avg"])
    trainer.release_training_state()
    assert optimizer() is None and reference() is None and adam_state() is None
    assert trainer.model is None and trainer.accelerator._models == []


def test_kl_to_a_reference_and_a_short_row_source(played, tmp_path):
    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path, beta=0.04)
    batch = trainer._generate_and_score_completions([{}] * 4)
    assert batch["ref_per_token_logps"].shape == batch["completion_ids"].shape
    short = TrajectoryGRPOTrainer(model, processor, trainer.args, rows=lambda count: rows[:1])
    with pytest.raises(RuntimeError, match="gave 1 rows for 4"):
        short._generate_and_score_completions([{}] * 4)


def test_kl_reference_of_a_lora_model_is_the_base_model(default_model, played, tmp_path):
    from peft import LoraConfig

    _, processor, rows = played
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    trainer = make_trainer(model, processor, rows, tmp_path, beta=0.04, peft_config=lora)
    assert trainer.ref_model is None  # peft: the reference is the model with adapters off
    batch = trainer._generate_and_score_completions([{}] * 4)
    base = make_trainer(AutoModelForImageTextToText.from_pretrained(
        default_model, dtype=torch.float32), processor, rows, tmp_path / "base")
    mask = batch["completion_mask"].bool()
    expected = trl_logprobs(base, batch)
    assert torch.allclose(batch["ref_per_token_logps"][mask], expected[mask], atol=1e-4)


def test_after_a_step_the_kl_reference_is_still_the_model_before_it(default_model, played,
                                                                      tmp_path):
    """Full fine-tuning with a KL term: after a step, the reference log-probs TRL computes for
    new rows are the pre-step model's, bit for bit, and not the trained model's."""
    _, processor, rows = played
    model = AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)
    before = copy.deepcopy(model)  # copied before a trainer patches the model's forward
    trainer = make_trainer(model, processor, rows, tmp_path, beta=0.04)
    trainer.train()
    batch = trainer._generate_and_score_completions([{}] * 4)  # rows 5 to 8: not trained on
    mask = batch["completion_mask"].bool()
    reference = batch["ref_per_token_logps"][mask]
    untrained = make_trainer(before, processor, rows, tmp_path / "before")
    assert torch.equal(reference, trl_logprobs(untrained, batch)[mask])
    assert (reference - trl_logprobs(trainer, batch)[mask]).abs().max() > 0.05


def test_beta_adds_the_logged_kl_to_the_reference_to_the_loss(default_model, played, tmp_path):
    """From weights a step away from the reference (the checkpoint the model was loaded from),
    the same rows trained once with beta=0 and once with beta=0.04 log first losses that differ
    by 0.04 x the logged KL, and that KL is the one between those weights and the checkpoint."""
    _, processor, rows = played

    def checkpoint() -> torch.nn.Module:
        return AutoModelForImageTextToText.from_pretrained(default_model, dtype=torch.float32)

    moved = checkpoint()
    make_trainer(moved, processor, rows[4:], tmp_path / "move").train()
    start = checkpoint()  # the moved weights in a model no trainer has patched yet
    start.load_state_dict(moved.state_dict())
    logs = {}
    for beta in (0.0, 0.04):
        trainer = make_trainer(copy.deepcopy(start), processor, rows, tmp_path / str(beta),
                               beta=beta)
        trainer.train()
        logs[beta] = trainer.state.log_history[0]
    assert "kl" not in logs[0.0]
    # the policy term's value is the same in both (same weights, rows and advantages): the
    # losses differ by the KL term alone, up to the rounding of their float32 sums
    assert logs[0.04]["loss"] - logs[0.0]["loss"] == pytest.approx(0.04 * logs[0.04]["kl"],
                                                                   rel=1e-4)
    probe = make_trainer(copy.deepcopy(start), processor, rows, tmp_path / "probe")
    batch = probe._generate_and_score_completions([{}] * 4)  # the rows both runs trained on
    mask = batch["completion_mask"].bool()
    gap = (trl_logprobs(make_trainer(checkpoint(), processor, rows, tmp_path / "ref"), batch)
           - trl_logprobs(probe, batch))[mask]
    kl = float((gap.exp() - gap - 1).mean())  # TRL's per-token KL estimate, over the tokens
    # the same float32 numbers, summed in another order (TRL's is a sum over processes)
    assert kl > 0.01 and logs[0.04]["kl"] == pytest.approx(kl, rel=1e-6)


@pytest.mark.parametrize("where", [WEIGHTS_UP_FRONT, WEIGHTS_IN_THE_LOSS],
                         ids=["up-front", "in-the-loss"])
def test_the_importance_weight_is_capped_where_the_sampler_found_a_token_unlikely(
        played, tmp_path, monkeypatch, where):
    """A sampler 100x less sure of every token than the trainer: each weight is the cap."""
    import dataclasses

    model, processor, rows = played
    unlikely = [TrainingRow(dataclasses.replace(
        row.turn, logprobs=[p - math.log(100) for p in row.turn.logprobs]), row.advantage)
        for row in rows[:4]]
    trainer = make_trainer(model, processor, unlikely, tmp_path, importance_cap=1.5, **where)
    assert trainer._weights_from_the_loss_forward == (where == WEIGHTS_IN_THE_LOSS)
    batch = trainer._generate_and_score_completions([{}] * 4)
    advantages, mask = weighted_advantages(trainer, batch, monkeypatch)
    for i, row in enumerate(unlikely):
        assert advantages[i][mask[i]].tolist() == pytest.approx(
            [1.5 * row.advantage] * int(mask[i].sum()))


def shifted_rows(model, processor, rows, ratios):
    """``rows`` with sampler log-probs that are the trainer's own shifted so that token k's
    exp(trainer - sampler) is ``ratios[k % len(ratios)]``."""
    import dataclasses

    shifted = []
    for row in rows:
        observation = {"prompt": row.turn.prompt, "images": row.turn.images}
        trainer_side = trainer_logprobs(model, processor, observation, row.turn)
        sampler_side = [p - math.log(ratios[k % len(ratios)])
                        for k, p in enumerate(trainer_side)]
        shifted.append(TrainingRow(dataclasses.replace(row.turn, logprobs=sampler_side),
                                   row.advantage))
    return shifted


@pytest.mark.parametrize("where", [WEIGHTS_UP_FRONT, WEIGHTS_IN_THE_LOSS],
                         ids=["up-front", "in-the-loss"])
def test_each_token_is_weighted_by_the_trainer_to_sampler_probability_ratio_capped(
        played, tmp_path, monkeypatch, where):
    """Sampler log-probs that are the trainer's own shifted by known amounts, token by token:
    each token's weight is exp(trainer - sampler), capped, whichever side of the cap it falls."""
    model, processor, rows = played
    ratios = [4.0, 1.5, 1.0, 0.5, 0.1]  # exp(trainer - sampler), cycling over each completion
    shifted = shifted_rows(model, processor, rows[:4], ratios)
    trainer = make_trainer(model, processor, shifted, tmp_path, importance_cap=3.0, **where)
    batch = trainer._generate_and_score_completions([{}] * 4)
    advantages, mask = weighted_advantages(trainer, batch, monkeypatch)
    for i, row in enumerate(shifted):
        count = len(row.turn.completion_ids)
        assert int(mask[i].sum()) == count >= len(ratios)  # every ratio met, none cut
        expected = [min(ratios[k % len(ratios)], 3.0) for k in range(count)]
        weights = advantages[i][mask[i]] / row.advantage
        assert weights.tolist() == pytest.approx(expected, rel=1e-5)


def test_weights_from_the_loss_forward_give_the_up_front_loss_and_gradient(played, tmp_path):
    """Skipping the no-grad pass changes nothing: the same loss and the same gradient, with
    weights far from 1 (if TRL read the advantages before its forward pass, they would differ)."""
    model, processor, rows = played
    shifted = shifted_rows(model, processor, rows[:4], [4.0, 1.5, 0.5, 0.1])
    results = []
    for where in (WEIGHTS_UP_FRONT, WEIGHTS_IN_THE_LOSS):
        # bnpo: a loss normalised by its own micro-batch (dapo's depends on steps_per_generation)
        trainer = make_trainer(model, processor, shifted, tmp_path, importance_cap=3.0,
                               beta=0.04, loss_type="bnpo", **where)
        model.zero_grad()
        loss = trainer._compute_loss(model, trainer._generate_and_score_completions([{}] * 4))
        loss.backward()
        results.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    (up_front, up_front_grads), (in_loss, in_loss_grads) = results
    model.zero_grad()
    assert in_loss == pytest.approx(up_front, rel=1e-5) and abs(up_front) > 1e-3
    for a, b in zip(up_front_grads, in_loss_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_a_micro_batch_drops_the_columns_that_are_padding_in_all_its_rows(played, tmp_path):
    """Rows are padded to the longest of their generation batch; a micro-batch of the shorter
    ones trains on its own width, with the same loss as on the full width."""
    from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

    from trainers.grpo import _without_padding_columns

    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path, beta=0.04)
    batch = trainer._generate_and_score_completions([{}] * 4)
    shortest = sorted(range(4), key=lambda i: int(batch["prompt_mask"][i].sum()
                                                  + batch["completion_mask"][i].sum()))[:2]
    per_row = split_pixel_values_by_grid(batch)  # as TRL splits a generation batch
    short = unsplit_pixel_values_by_grid({
        key: [value[i] for i in shortest] if isinstance(value, list)
        else value[shortest] if value.dim() else value for key, value in per_row.items()})
    trimmed = _without_padding_columns(short)
    prompt_width = int(short["prompt_mask"].sum(dim=1).max())
    completion_width = int(short["completion_mask"].sum(dim=1).max())
    assert trimmed["prompt_ids"].shape[1] == prompt_width
    assert trimmed["completion_ids"].shape[1] == completion_width
    assert (trimmed["prompt_ids"].shape[1] + trimmed["completion_ids"].shape[1]
            < batch["prompt_ids"].shape[1] + batch["completion_ids"].shape[1])
    assert trimmed["mm_token_type_ids"].sum() == short["mm_token_type_ids"].sum()
    for key in ("advantages", "ref_per_token_logps", "sampler_logps", "completion_mask"):
        assert trimmed[key].shape == trimmed["completion_ids"].shape
    trl_loss = super(TrajectoryGRPOTrainer, trainer)._compute_loss  # TRL's, as it is given
    with torch.no_grad():
        full_width = float(trl_loss(model, {k: v for k, v in short.items()
                                            if k != "sampler_logps"}))
        own_width = float(trl_loss(model, {k: v for k, v in trimmed.items()
                                           if k != "sampler_logps"}))
    assert own_width == pytest.approx(full_width, rel=1e-5) and abs(full_width) > 1e-3


def test_rows_rotated_past_their_left_padding_give_trls_masked_log_probs_and_gradients(
        played, tmp_path, monkeypatch):
    """The model runs on rows rotated past their left padding, with plain causal attention (no
    mask reaches SDPA; TRL's own pass gives it one): the same log-probs, entropies and
    gradients as TRL's pass over the padded rows."""
    from trl import GRPOTrainer

    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path)
    batch = trainer._generate_and_score_completions([{}] * 8)
    assert len(set(batch["prompt_mask"].sum(dim=1).tolist())) > 1  # rows with left padding
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    images = {k: batch[k] for k in ("pixel_values", "image_grid_thw", "num_images",
                                    "mm_token_type_ids")}
    width, scored = batch["completion_ids"].size(1), batch["completion_mask"].bool()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    outputs, masks = [], []
    for logps_of in (trainer._get_per_token_logps_and_entropies,
                     lambda *args, **kwargs: GRPOTrainer._get_per_token_logps_and_entropies(
                         trainer, *args, **kwargs)):
        calls = []

        def recorded(*args, calls=calls, **kwargs):
            calls.append((kwargs.get("attn_mask") is not None, kwargs.get("is_causal")))
            return sdpa(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorded)
        model.zero_grad()
        logps, entropies, _ = logps_of(model, ids, mask, width, 8, compute_entropy=True,
                                       **images)
        monkeypatch.undo()
        logps[scored].sum().backward()
        outputs.append((logps[scored], entropies[scored],
                        {name: p.grad.clone() for name, p in model.named_parameters()
                         if p.grad is not None}))
        masks.append(calls)
    model.zero_grad()
    assert masks[0] and not any(masked for masked, _ in masks[0])
    assert any(causal for _, causal in masks[0]) and any(masked for masked, _ in masks[1])
    (ours, our_entropy, our_grads), (theirs, their_entropy, their_grads) = outputs
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_entropy, their_entropy, rtol=1e-5, atol=1e-5)
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, their_grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("scoring_batch_size", "passes"), [(None, 4), (4, 2)])
def test_reference_log_probs_by_micro_batch_of_similar_rows_equal_the_full_width_ones(
        played, tmp_path, monkeypatch, scoring_batch_size, passes):
    """The reference pass runs micro-batches (of the training's size unless
    ``scoring_batch_size`` says otherwise) of rows of similar length, each on its own width: the
    same log-probs as one pass over the batch padded to its longest row."""
    model, processor, rows = played
    trainer = make_trainer(model, processor, rows, tmp_path, beta=0.04,
                           per_device_train_batch_size=2, gradient_accumulation_steps=4,
                           scoring_batch_size=scoring_batch_size)
    widths = []
    logps_of = trainer._get_per_token_logps_and_entropies

    def recorded(model, input_ids, *args, **kwargs):
        widths.append(input_ids.size(1))
        return logps_of(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", recorded)
    batch = trainer._generate_and_score_completions([{}] * 8)
    monkeypatch.undo()
    full_width = batch["prompt_ids"].size(1) + batch["completion_ids"].size(1)
    assert len(widths) == passes and min(widths) < full_width
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(batch["ref_per_token_logps"][mask],
                               trl_logprobs(trainer, batch, trainer.ref_model)[mask],
                               rtol=1e-5, atol=1e-5)


def test_micro_batches_of_similar_rows_give_the_shuffled_ones_step(played, tmp_path,
                                                                   monkeypatch):
    """Where the grouping changes nothing (dapo, one optimizer step for the generation batch) a
    step's micro-batches hold rows of similar length: the step moves the weights as TRL's
    shuffled micro-batches do; bnpo (normalised per micro-batch) keeps TRL's shuffle."""
    model, processor, rows = played
    options = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
               "optim": "sgd", "learning_rate": 1.0, "loss_type": "dapo"}
    moved, lengths = [], []
    for by_length in (True, False):
        monkeypatch.setattr(TrajectoryGRPOTrainer, "_micro_batches_by_length",
                            property(lambda self, by_length=by_length: by_length))
        trained = copy.deepcopy(model)
        trainer = make_trainer(trained, processor, rows, tmp_path / str(by_length), **options)
        loss_of = trainer._compute_loss

        def recorded(model, inputs, loss_of=loss_of):
            lengths.append((inputs["prompt_mask"].sum(1) + inputs["completion_mask"].sum(1))
                           .tolist())
            return loss_of(model, inputs)

        monkeypatch.setattr(trainer, "_compute_loss", recorded)
        trainer.train()
        moved.append({name: weight.detach() - model.get_parameter(name)
                      for name, weight in trained.named_parameters()})
    monkeypatch.undo()
    by_length = [length for part in lengths[:4] for length in part]
    assert by_length == sorted(by_length, reverse=True) and len(set(by_length)) > 1
    assert sorted(by_length) == sorted(length for part in lengths[4:] for length in part)
    for name, step in moved[0].items():
        torch.testing.assert_close(step, moved[1][name], rtol=1e-4, atol=1e-6)
    assert any(step.abs().max() > 0 for step in moved[0].values())
    config = make_trainer(model, processor, rows, tmp_path, **{**options, "loss_type": "bnpo"})
    assert not config._micro_batches_by_length


def test_the_config_sets_trl_group_size_itself_and_checks_its_own_options(tmp_path):
    def config(**options):
        return TrajectoryGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                    **options)

    assert config(per_device_train_batch_size=48).num_generations == 2
    assert config(per_device_train_batch_size=9).num_generations == 3
    assert config(per_device_train_batch_size=1, gradient_accumulation_steps=5
                  ).num_generations == 5
    assert config().importance_cap == 3.0
    with pytest.raises(ValueError, match="num_generations is not an option here"):
        config(num_generations=4)
    with pytest.raises(ValueError, match="importance_cap must be >= 1"):
        config(importance_cap=0.5)
    with pytest.raises(ValueError, match="scoring_batch_size must be >= 1"):
        config(scoring_batch_size=0)


def test_train_py_checks_know_every_option_the_config_adds_to_trls():
    added = ({f.name for f in dataclasses.fields(TrajectoryGRPOConfig)}
             - {f.name for f in dataclasses.fields(GRPOConfig)})
    assert added == set(TRAJECTORY_FIELDS)


def test_the_private_trl_surface_the_trainer_relies_on_is_there():
    """TrajectoryGRPOTrainer overrides and calls private parts of TRL's GRPOTrainer; a TRL
    release that renames or reshapes them fails here, by name, rather than mid-training."""
    import inspect

    from trl import GRPOTrainer
    from trl.trainer import utils as trl_utils

    generate = inspect.signature(GRPOTrainer._generate_and_score_completions).parameters
    assert list(generate) == ["self", "inputs"]
    logps = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    assert logps[:6] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep",
                         "batch_size"]
    assert {"pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids"} <= set(logps)
    # the model is called with keywords only, labels for the fused head's per-token outputs
    call = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "model(**model_inputs, labels=labels, fused_lm_head=True)" in call
    assert '{"input_ids": input_ids_batch, "attention_mask": attention_mask_batch}' in call
    loss = inspect.getsource(GRPOTrainer._compute_loss)  # reads what the override returns
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
                "num_items_in_batch", "ref_per_token_logps", "mm_token_type_ids"):
        assert f'"{key}"' in loss, key
    # the importance weights of the loss's own forward pass are applied before TRL reads them
    assert loss.index("self._get_per_token_logps_and_entropies(") < loss.index(
        'inputs["advantages"]')
    assert "self._metrics = " in inspect.getsource(GRPOTrainer.__init__)
    # the override of _prepare_inputs buffers micro-batches as TRL's does (and its loss types)
    prepare = inspect.getsource(GRPOTrainer._prepare_inputs)
    for part in ("self._step % generate_every", "self._buffered_inputs = ",
                 "self._buffered_inputs[self._step % self.args.steps_per_generation]",
                 "shuffle_sequence_dict(", "split_tensor_dict("):
        assert part in prepare, part
    assert "self._step += 1" in inspect.getsource(GRPOTrainer.training_step)
    for loss_type in ("grpo", "sapo", "dr_grpo", "dapo", "cispo", "vespo", "luspo", "bnpo"):
        assert f'"{loss_type}"' in loss, loss_type
    assert "top_entropy_quantile" in inspect.getsource(GRPOTrainer._compute_loss)
    assert callable(trl_utils.use_adapter)
    assert callable(GRPOTrainer._load_from_checkpoint)
