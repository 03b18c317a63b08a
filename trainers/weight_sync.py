"""Keeps a rollout engine on the trained weights: after every optimizer step, and once at the start
(a resumed run's weights come from its checkpoint, not from the path the engine loaded).

The engine is anything with ``load_weights(named_tensors)`` — :class:`agents.vllm_agent.VLLMAgent`
built with ``in_process=True``. The transformers backend needs none of this: it plays with the
trained model object itself. A peft (LoRA) model's adapters are merged into its base weights for
the push and unmerged after, so the engine gets plain weights under the base model's names.

Under sharded training (FSDP2, DeepSpeed ZeRO-3) each process holds a shard of every parameter:
the weights are gathered one parameter at a time as the engine reads them (a collective call: every
process reads all of them, in the same order), so the whole model never sits in memory twice.
LoRA with sharded training is not supported (the merge would need the whole layer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback


class WeightLoader(Protocol):
    """What the callback pushes weights into."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...


class SyncRolloutWeights(TrainerCallback):
    """Pushes the model's weights into ``engine`` at the start of training and after each
    optimizer step; ``before_push`` runs first (e.g. waiting for games still being played)."""

    def __init__(self, engine: WeightLoader, before_push: Callable[[], None] | None = None):
        self.engine, self.before_push = engine, before_push
        self.pushes = 0
        self.metrics: dict[str, float] = {}  # the last push's: seconds waited, seconds pushing

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        self.push(model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        self.push(model)

    def push(self, model: Any) -> None:
        """Loads ``model``'s current weights into the engine."""
        started = time.perf_counter()
        if self.before_push is not None:
            self.before_push()
        waited = time.perf_counter()
        with merged_weights(model) as weights:
            self.engine.load_weights(weights)
        self.pushes += 1
        self.metrics = {"weights/wait_seconds": waited - started,
                        "weights/push_seconds": time.perf_counter() - waited}


@contextmanager
def merged_weights(model: Any) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
    """The model's parameters as (name, full tensor) under the base model's names, gathered one
    at a time if sharded; a peft model's adapters are merged in while the block runs."""
    if not hasattr(model, "merge_adapter"):
        yield ((name, full_tensor(p)) for name, p in model.named_parameters())
        return
    trained_copy = f".modules_to_save.{model.active_adapter}."
    model.merge_adapter()
    try:
        yield ((name.removeprefix("base_model.model.").replace(".base_layer.", ".")
                .replace(trained_copy, "."), full_tensor(p))
               for name, p in model.named_parameters()
               if "lora_" not in name and ".original_module." not in name)
    finally:
        model.unmerge_adapter()


def full_tensor(parameter: torch.Tensor) -> torch.Tensor:
    """The whole of a parameter, detached: gathered from every process if FSDP2 (a ``DTensor``)
    or DeepSpeed ZeRO-3 (``ds_id``) shards it."""
    if isinstance(parameter, DTensor):
        return parameter.detach().full_tensor()
    if hasattr(parameter, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([parameter]):
            return parameter.detach().clone()
    return parameter.detach()
