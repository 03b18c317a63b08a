"""TRL's GRPO loss on turns played elsewhere: one training row per recorded turn.

:class:`TrajectoryGRPOTrainer` subclasses TRL's ``GRPOTrainer`` and replaces its generation
(``_generate_and_score_completions``) with rows taken from a :class:`RowSource`: turns recorded by
the rollout runner, each with the advantage the caller computed for it (role baselines, group
normalisation: :mod:`trainers.advantages`). Everything else is TRL's: the clipped loss and its
variants (``loss_type``), the optional KL to a reference (``beta``), logging, accelerate.

Rows are trained on exactly the token ids the sampler produced — no re-tokenisation: the prompt
ids as the model saw them (images expanded), the completion ids, and the images, which the
processor turns into ``pixel_values`` again. The sampler's log-probs give a per-token importance
weight ``min(exp(trainer - sampler), importance_cap)`` folded into the advantage, so tokens the
trainer finds far likelier than the sampler did (a stale or numerically different sampler) count
less. The weights come from the loss's own forward pass when one optimizer step takes the whole
generation batch (TRL's default), else from a no-grad pass before the step.

Every pass runs micro-batches without the columns that are padding in all their rows (rows are
padded to the longest of the generation batch). The no-grad passes group rows of similar length;
so does the loss where the grouping cannot change the step (one optimizer step for the whole
generation batch, a loss not normalised per micro-batch), instead of TRL's shuffled micro-batches.
The model sees each row rotated past its left padding, so that its attention needs no padding
mask (:class:`_PaddingOnTheRight`).
In mixed precision, LoRA adapters take their inputs in the compute dtype (see
:meth:`TrajectoryGRPOTrainer._adapter_inputs_uncast`). :class:`TrajectoryGRPOConfig` is TRL's
``GRPOConfig`` with the importance cap added.

Tokens no model may sample (:func:`agents.model.banned_token_ids`: image placeholders and other
special tokens) can still arrive in rows from elsewhere (an old run, another server): a completion
is trained only up to its first one, with a warning and the count in the logged metrics
(``completions/banned_token_rows``), so that none is taken for an image slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.helpers import disable_input_dtype_casting
from PIL import Image
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import (
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
    use_adapter,
)

from agents.model import banned_token_ids
from trainers.checkpoints import load_full_weights
from trainers.rows import TrainingRow

log = logging.getLogger(__name__)

#: Called with the number of rows the trainer needs next; returns that many rows.
RowSource = Callable[[int], Sequence[TrainingRow]]


def rewards_come_from_the_games(**_: Any) -> list[float]:
    """TRL insists on a reward function; this trainer never scores text (games did, per turn)."""
    raise RuntimeError("TrajectoryGRPOTrainer trains on rows that carry their advantages; "
                       "nothing should ask it for rewards")


@dataclass
class TrajectoryGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` for rows played elsewhere: ``importance_cap`` and
    ``scoring_batch_size`` added, and
    ``num_generations`` not set by the user, since the games make the GRPO groups (each recipe's
    own: the spy's roles, the duel's questions per image, ``selfplay.repeats``); it is set to
    the smallest count that passes TRL's checks on the batch."""

    importance_cap: float = field(default=3.0, metadata={
        "help": "Largest importance weight exp(trainer - sampler log-prob) of a token."})
    num_generations: int | None = field(default=None, metadata={
        "help": "Set from the batch size; the games make the groups."})
    scoring_batch_size: int | None = field(default=None, metadata={
        "help": "Rows a no-grad pass (the reference's log-probs; the importance weights when "
                "computed apart from the loss) runs at once; None: per_device_train_batch_size. "
                "Such a pass keeps no activations for a backward pass, so larger ones fit."})

    def __post_init__(self) -> None:
        if self.num_generations is not None:
            raise ValueError("num_generations is not an option here: the games make the GRPO "
                             "groups (selfplay.repeats, the spy's roles, the duel's "
                             "questions_per_image)")
        if not self.importance_cap >= 1.0:
            raise ValueError(f"importance_cap must be >= 1 (1 = no token up-weighted), got "
                             f"{self.importance_cap}")
        if self.scoring_batch_size is not None and self.scoring_batch_size < 1:
            raise ValueError(f"scoring_batch_size must be >= 1 (or None: the micro-batch), got "
                             f"{self.scoring_batch_size}")
        batch = self.per_device_train_batch_size
        if batch < 2:  # TRL wants groups of 2 or more within its batch
            batch *= self.steps_per_generation or self.gradient_accumulation_steps
        self.num_generations = next((n for n in range(2, batch + 1) if batch % n == 0), 2)
        super().__post_init__()


class TrajectoryGRPOTrainer(GRPOTrainer):
    """GRPO on recorded turns (see the module docstring). ``rows(count)`` feeds every step;
    ``metrics()``, called after it, gives numbers to log with TRL's (rewards, game stats)."""

    def __init__(self, model: Any, processor: Any, args: TrajectoryGRPOConfig, rows: RowSource,
                 metrics: Callable[[], dict[str, float]] | None = None, **trainer_options: Any):
        from datasets import Dataset

        # TRL's loop draws prompts from a dataset to know how many rows a step takes; the rows
        # themselves come from ``rows``, so the dataset is only a counter of that size: one
        # generation batch of every process (fewer, and 4 processes or more drew no batch at all)
        size = args.generation_batch_size
        super().__init__(model=model, args=args, processing_class=processor,
                         reward_funcs=[rewards_come_from_the_games],
                         train_dataset=Dataset.from_dict({"prompt": [[]] * size}),
                         **trainer_options)
        self.rows = rows
        self.game_metrics = metrics

    def release_training_state(self) -> None:
        """Drops what only training needs (the optimizer and its states, the scheduler, the
        reference model, this trainer's hold on the model) and frees the accelerator's cached
        memory, so that loading the saved model to evaluate it has the GPU (a 3B full fine-tune's
        Adam states alone are ~24 GB). Under DeepSpeed ZeRO-3 this is not enough: the engine and
        its optimizer stay alive through the hooks DeepSpeed leaves on the model (seen on 2
        H200s), which is why train.py evaluates sharded runs apart. The trainer cannot train
        afterwards."""
        self.model = self.model_wrapped = self.deepspeed = self.ref_model = None
        self.optimizer = self.lr_scheduler = None
        handler = self.callback_handler
        handler.model = handler.optimizer = handler.lr_scheduler = None
        self.accelerator.free_memory()  # its own references, then gc and the allocator's cache

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Full weights through :func:`trainers.checkpoints.load_full_weights` (transformers'
        own load drops a Qwen2-VL's); adapters, DeepSpeed and FSDP as transformers does."""
        folder = Path(resume_from_checkpoint)
        full = any((folder / name).is_file() for name in (SAFE_WEIGHTS_NAME,
                                                          SAFE_WEIGHTS_INDEX_NAME))
        if not full or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        load_full_weights(self.accelerator.unwrap_model(self.model if model is None else model),
                          folder)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        rows = list(self.rows(len(inputs)))
        if len(rows) != len(inputs):
            raise RuntimeError(f"the row source gave {len(rows)} rows for {len(inputs)}")
        for name, value in (self.game_metrics() if self.game_metrics else {}).items():
            self._metrics["train"][name].append(value)  # logged beside TRL's own metrics
        device = self.accelerator.device
        pad = self.processing_class.tokenizer.pad_token_id
        prompt_ids, prompt_mask = _pad([r.turn.prompt_ids for r in rows], pad, left=True)
        completion_ids, completion_mask = _pad([r.turn.completion_ids for r in rows], pad)
        self._cut_at_banned_tokens(completion_ids, completion_mask, pad)
        sampler_logps, _ = _pad([r.turn.logprobs for r in rows], 0.0, dtype=torch.float32)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        completion_ids, completion_mask = completion_ids.to(device), completion_mask.to(device)
        scored = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
                  "completion_ids": completion_ids, "completion_mask": completion_mask,
                  **self._image_inputs(rows, torch.cat([prompt_ids, completion_ids], dim=1))}
        sampler_logps = sampler_logps.to(device)
        advantages = torch.tensor([r.advantage for r in rows], device=device)[:, None]
        with torch.no_grad():
            if not self._weights_from_the_loss_forward:
                with self._adapter_inputs_uncast():
                    trainer_logps = self._logps_by_micro_batch(self.model, scored)
                advantages = advantages * self._importance_weight(trainer_logps, sampler_logps)
            if self.beta != 0.0:
                with self._reference() as reference:
                    scored["ref_per_token_logps"] = self._logps_by_micro_batch(reference, scored)
        if self._weights_from_the_loss_forward:
            scored["sampler_logps"] = sampler_logps
        return {**scored, "advantages": advantages * completion_mask,
                "num_items_in_batch": self.accelerator.gather(completion_mask.sum()).sum()}

    def _prepare_inputs(self, generation_batch: dict[str, Any]) -> dict[str, Any]:
        """TRL's, but where the grouping changes nothing (:attr:`_micro_batches_by_length`) the
        generation batch is cut into micro-batches of rows of similar length, not shuffled ones."""
        if not (self.model.training and self._micro_batches_by_length):
            return super()._prepare_inputs(generation_batch)
        steps = self.args.steps_per_generation
        if self._step % (steps * self.num_iterations) == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            by_length = _rows(split_pixel_values_by_grid(batch), _by_length(batch))
            self._buffered_inputs = [unsplit_pixel_values_by_grid(part)
                                     for part in split_tensor_dict(by_length, steps)]
        return self._buffered_inputs[self._step % steps]

    @cached_property
    def _micro_batches_by_length(self) -> bool:
        """Whether micro-batches may hold rows of similar length (less padding; none at all where
        lengths repeat, and then attention runs without a mask): when one optimizer step takes the
        whole generation batch and neither the loss's normaliser nor an entropy mask depends on
        which rows share a micro-batch."""
        return (self._weights_from_the_loss_forward and self.loss_type in _GROUPING_FREE_LOSSES
                and self.args.top_entropy_quantile == 1.0)

    def _logps_by_micro_batch(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Per-token log-probs of ``batch``'s completions under ``model`` (no gradient), one
        micro-batch (``scoring_batch_size`` rows) of rows of similar length at a time, each
        without its all-padding columns."""
        per_row = split_pixel_values_by_grid(batch)
        logps = torch.zeros(batch["completion_ids"].shape, device=batch["completion_ids"].device)
        size = self.args.scoring_batch_size or self.args.per_device_train_batch_size
        for indices in _by_length(batch).split(size):
            part = _without_padding_columns(unsplit_pixel_values_by_grid(_rows(per_row, indices)))
            width = part["completion_ids"].size(1)
            logps[indices.to(logps.device), :width] = self._get_per_token_logps_and_entropies(
                model, torch.cat([part["prompt_ids"], part["completion_ids"]], dim=1),
                torch.cat([part["prompt_mask"], part["completion_mask"]], dim=1), width, size,
                **{key: part[key] for key in _IMAGE_INPUTS if key in part})[0]
        return logps

    def _get_per_token_logps_and_entropies(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        """TRL's, with the model called through :class:`_PaddingOnTheRight`: rows rotated past
        their left padding, so that the model runs with plain causal attention (SDPA's flash
        kernel on a GPU) instead of a padding mask (its memory-efficient kernel)."""
        return super()._get_per_token_logps_and_entropies(_PaddingOnTheRight(model), *args,
                                                          **kwargs)

    @cached_property
    def _weights_from_the_loss_forward(self) -> bool:
        """Whether the importance weights can come from the loss's own forward pass: true when one
        optimizer step takes the whole generation batch (TRL's condition for skipping its "old"
        log-probs), so every micro-batch sees the weights the rows were scored with. It saves
        a no-grad forward pass over every row; otherwise the weights are computed up front."""
        return self.args.gradient_accumulation_steps % (
            self.args.steps_per_generation * self.num_iterations) == 0

    @cached_property
    def _adapters_under_autocast(self) -> bool:
        """Whether the model is a peft model trained in mixed precision: accelerate runs its
        forward passes under autocast, which runs every adapter's matmuls in the compute dtype
        (bf16) whatever its weights' dtype (PEFT keeps them in float32)."""
        model = self.accelerator.unwrap_model(self.model)
        return isinstance(model, PeftModel) and self.accelerator.mixed_precision != "no"

    def _adapter_inputs_uncast(self) -> AbstractContextManager[None]:
        """While active, PEFT does not cast each adapter's input to its weights' float32 where
        autocast casts it straight back to bf16 (:attr:`_adapters_under_autocast`): the same
        numbers without two copies of every adapted layer's input, each way (in a 7B LoRA step on
        an H200, copies took 1.5 of the 5.2 s of elementwise kernels)."""
        return disable_input_dtype_casting(self.model, active=self._adapters_under_autocast)

    def _importance_weight(self, trainer_logps: torch.Tensor,
                           sampler_logps: torch.Tensor) -> torch.Tensor:
        """Per token ``min(exp(trainer - sampler), importance_cap)``, no gradient."""
        return torch.exp(trainer_logps.detach() - sampler_logps).clamp(
            max=self.args.importance_cap)

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """TRL's loss on the micro-batch without its all-padding columns (rows are padded to the
        longest of the whole generation batch); where the rows carry ``sampler_logps``, their
        advantages are weighted by the importance weights of this very forward pass."""
        inputs = _without_padding_columns(inputs)
        sampler_logps = inputs.pop("sampler_logps", None)
        if sampler_logps is None:
            with self._adapter_inputs_uncast():
                return super()._compute_loss(model, inputs)
        logps_of = self._get_per_token_logps_and_entropies

        def logps_that_weight_the_advantages(*args: Any, **kwargs: Any) -> Any:
            logps, *rest = logps_of(*args, **kwargs)
            inputs["advantages"] = inputs["advantages"] * self._importance_weight(logps,
                                                                                sampler_logps)
            return (logps, *rest)

        # TRL's loss computes the log-probs before it reads the advantages (a test checks it)
        self._get_per_token_logps_and_entropies = logps_that_weight_the_advantages
        try:
            with self._adapter_inputs_uncast():
                return super()._compute_loss(model, inputs)
        finally:
            del self._get_per_token_logps_and_entropies

    @cached_property
    def _banned_token_ids(self) -> torch.Tensor:
        return torch.tensor(banned_token_ids(self.processing_class.tokenizer), dtype=torch.long)

    def _cut_at_banned_tokens(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                              pad: int) -> None:
        """Pads and masks out (in place) each completion from its first banned token on, and
        counts the completions cut, over all processes (a metric, and a warning when any)."""
        banned = torch.isin(completion_ids, self._banned_token_ids) & completion_mask.bool()
        from_first = banned.cumsum(dim=1) > 0
        completion_ids[from_first] = pad
        completion_mask[from_first] = 0
        local = torch.tensor(int(banned.any(dim=1).sum()), device=self.accelerator.device)
        cut = int(self.accelerator.gather(local).sum())
        self._metrics["train"]["completions/banned_token_rows"].append(cut)
        if cut and self.accelerator.is_main_process:
            log.warning("%d completion(s) of this step held tokens no model may sample (special "
                        "tokens such as image placeholders): each is trained only up to the "
                        "first one", cut)

    @contextmanager
    def _reference(self) -> Iterator[Any]:
        """The model the KL term compares with: TRL's reference copy, or for a peft model the
        model with its adapters off (as TRL does)."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            yield self.model

    def _image_inputs(self, rows: list[TrainingRow], ids: torch.Tensor) -> dict[str, Any]:
        """``pixel_values``, ``image_grid_thw``, ``num_images`` and ``mm_token_type_ids`` (1 on
        image tokens, over prompt and completion) for the rows' images. An image shown in several
        turns (a seat's own turns; every civilian's in the spy game) is one array, processed once
        (the processor runs on the CPU: 1.2 s for 128 480x320 images on 2 cores)."""
        images = [image for r in rows for image in r.turn.images]
        if not images:
            return {}
        distinct = {id(image): image for image in images}
        slot = {key: place for place, key in enumerate(distinct)}
        processed = self.processing_class.image_processor(
            images=[Image.fromarray(image) for image in distinct.values()], return_tensors="pt")
        device = self.accelerator.device
        grids = processed["image_grid_thw"].to(device)
        patches = processed["pixel_values"].to(device).split(grids.prod(dim=1).tolist())
        slots = [slot[id(image)] for image in images]
        return {
            "pixel_values": torch.cat([patches[place] for place in slots]),
            "image_grid_thw": grids[slots],
            "num_images": [len(r.turn.images) for r in rows],
            "mm_token_type_ids": (ids == self._image_pad_token_id).long(),
        }


class _PaddingOnTheRight:
    """Calls a model on rows laid out as TRL lays them out (left padding, prompt, completion,
    right padding) after rotating each row left past its left padding, and rotates the per-token
    outputs back. With padding only on the right, a real token's causal attention never reaches
    padding, so the model gets no padding mask: attention is plain causal attention, which SDPA
    runs in its flash kernel (with a mask, in its memory-efficient one: ~40 TFLOP/s on an H200),
    and the position ids (Qwen2-VL's multimodal rotary ones too) count from each row's first token
    as with the mask. Calls take TRL's fused-head arguments (``labels``, per-token outputs)."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor, **inputs: Any) -> Any:
        shifts = attention_mask.argmax(dim=1)  # each row's first real column (masks are contiguous)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if inputs.get(key) is not None:
                inputs[key] = _rotate_rows(inputs[key], shifts)
        outputs = self.model(input_ids=_rotate_rows(input_ids, shifts),
                             attention_mask=torch.ones_like(attention_mask),
                             labels=_rotate_rows(labels, shifts), **inputs)
        per_label = labels[:, 1:].shape  # per-token outputs: index t scores the label at t + 1
        for name, value in list(outputs.items()):
            if isinstance(value, torch.Tensor) and value.shape == per_label:
                at_label_columns = torch.nn.functional.pad(value, (1, 0))
                outputs[name] = _rotate_rows(at_label_columns, -shifts)[:, 1:]
        return outputs


def _rotate_rows(values: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Row ``i`` of ``values`` rotated left by ``shifts[i]`` columns (right when negative)."""
    columns = torch.arange(values.size(1), device=values.device)
    return values.gather(1, (columns + shifts[:, None].to(values.device)) % values.size(1))


#: TRL losses whose gradient over one optimizer step does not depend on how its rows are grouped
#: into micro-batches of one size (``bnpo`` divides by each micro-batch's own token count).
_GROUPING_FREE_LOSSES = frozenset({"grpo", "sapo", "dr_grpo", "dapo", "cispo", "vespo", "luspo"})
#: What a forward pass takes besides the token ids and the attention mask.
_IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids")


def _by_length(batch: dict[str, Any]) -> torch.Tensor:
    """The rows of ``batch`` from the longest (prompt and completion tokens) to the shortest:
    the first micro-batch's memory blocks, cached by torch's allocator, then fit every later one
    (shortest first, each micro-batch needed new blocks: a 7B LoRA step's peak on an H200 went to
    139.7 GiB; longest first, 81.1, against 107.4 with TRL's shuffled micro-batches)."""
    lengths = batch["prompt_mask"].sum(dim=1) + batch["completion_mask"].sum(dim=1)
    return torch.argsort(lengths.cpu(), stable=True, descending=True)


def _rows(batch: dict[str, Any], indices: torch.Tensor) -> dict[str, Any]:
    """Rows ``indices`` of a batch whose images are split by row (TRL's
    ``split_pixel_values_by_grid``); a 0-dim tensor (``num_items_in_batch``) stays as it is."""
    def pick(value: Any) -> Any:
        if isinstance(value, list):
            return [value[i] for i in indices.tolist()]
        if isinstance(value, torch.Tensor) and value.dim():
            return value[indices.to(value.device)]
        return value
    return {key: pick(value) for key, value in batch.items()}


#: Micro-batch tensors by the columns they span: the prompt's, the completion's, or both's.
_PROMPT_COLUMNS = ("prompt_ids", "prompt_mask")
_COMPLETION_COLUMNS = ("completion_ids", "completion_mask", "advantages", "sampler_logps",
                       "ref_per_token_logps")
_SEQUENCE_COLUMNS = ("mm_token_type_ids",)


def _without_padding_columns(inputs: dict[str, Any]) -> dict[str, Any]:
    """A copy of a micro-batch without the prompt columns that are padding in all its rows (on
    the left) and the completion columns likewise (on the right); the rows were padded to the
    longest of their whole generation batch."""
    start = int(inputs["prompt_mask"].any(dim=0).nonzero()[0])  # every prompt has tokens
    completion_kept = inputs["completion_mask"].any(dim=0).nonzero()
    # one column at least where no completion token is trained (all cut at a banned token):
    # TRL keeps the last ``logits_to_keep`` logits, and 0 would keep them all
    end = int(completion_kept[-1]) + 1 if len(completion_kept) else 1
    prompt_width = inputs["prompt_mask"].size(1)
    trimmed = dict(inputs)
    for key in _PROMPT_COLUMNS:
        trimmed[key] = inputs[key][:, start:]
    for key in _COMPLETION_COLUMNS:
        if inputs.get(key) is not None:
            trimmed[key] = inputs[key][:, :end]
    for key in _SEQUENCE_COLUMNS:
        if inputs.get(key) is not None:
            trimmed[key] = inputs[key][:, start:prompt_width + end]
    return trimmed


def _pad(sequences: list[list[Any]], value: Any, left: bool = False,
         dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences padded to one length (on the left for prompts) and their masks."""
    width = max(len(s) for s in sequences)
    values = torch.full((len(sequences), width), value, dtype=dtype)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        values[row, span] = torch.tensor(sequence, dtype=dtype)
        mask[row, span] = 1
    return values, mask
