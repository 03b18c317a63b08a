"""A VLM agent on transformers' ``generate``: batched, on CPU or GPU.

Prompts are left-padded into one batch (``batch_size`` at a time); each completion comes back
with its exact prompt ids (padding removed, images expanded by the processor as the model saw
them), its sampled ids up to and including the end-of-turn token, and the log-probability of each
sampled token under the distribution it was sampled from (after temperature and top-p, and with
the tokenizer's special tokens excluded: :func:`agents.model.banned_token_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from agents.base import Agent, Completion
from agents.model import (
    RequestSeeds,
    SamplingConfig,
    banned_token_ids,
    chat_messages,
    is_greedy,
    model_path,
    pil_images,
    turn_end_ids,
)


class TransformersAgent(Agent):
    """Answers observations with a model loaded by transformers (the default model if none)."""

    def __init__(self, model: str | Path | None = None, sampling: SamplingConfig | None = None,
                 device: str | None = None, dtype: str = "auto", batch_size: int = 32,
                 model_object: Any = None, processor: Any = None):
        self.sampling = sampling or SamplingConfig()
        self.batch_size = batch_size
        path = model_path(model)
        self.processor = processor or AutoProcessor.from_pretrained(path, padding_side="left")
        self.processor.tokenizer.padding_side = "left"
        if model_object is None:
            model_object = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
            model_object.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model_object.eval()
        self.seeds = RequestSeeds(self.sampling.seed)
        self.stop_ids = turn_end_ids(self.processor.tokenizer)
        self.banned_ids = banned_token_ids(self.processor.tokenizer)

    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        completions: list[Completion] = []
        for start in range(0, len(observations), self.batch_size):
            completions += self._generate(observations[start: start + self.batch_size])
        return completions

    @torch.no_grad()
    def _generate(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        texts = [self.processor.apply_chat_template(chat_messages(o), add_generation_prompt=True,
                                                    tokenize=False) for o in observations]
        images = [image for o in observations for image in pil_images(o)]
        inputs = self.processor(text=texts, images=images or None, padding=True,
                                return_tensors="pt").to(self.model.device)
        [seed] = self.seeds.take(1)
        greedy = is_greedy(self.sampling)
        training = self.model.training  # a trainer's model: sample in eval mode, with the KV
        self.model.eval()  # cache (gradient checkpointing turns it off in train mode)
        cuda = [self.model.device] if self.model.device.type == "cuda" else []
        try:  # seeded on a fork of the process's RNG, which a trainer shares, not on it
            with torch.random.fork_rng(devices=cuda, enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                output = self.model.generate(
                    **inputs, max_new_tokens=self.sampling.max_tokens, do_sample=not greedy,
                    temperature=None if greedy else self.sampling.temperature,
                    top_p=None if greedy else self.sampling.top_p, top_k=None,
                    eos_token_id=sorted(self.stop_ids),
                    pad_token_id=self.processor.tokenizer.pad_token_id,
                    suppress_tokens=self.banned_ids or None, return_dict_in_generate=True,
                    output_scores=True, use_cache=True)
        finally:
            self.model.train(training)
        prompt_length = inputs["input_ids"].shape[1]
        sampled = output.sequences[:, prompt_length:]
        scores = torch.stack(output.scores, dim=1).float().log_softmax(dim=-1)
        logprobs = scores.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        completions = []
        for row in range(len(observations)):
            ids = sampled[row].tolist()
            end = next((i + 1 for i, token in enumerate(ids) if token in self.stop_ids), len(ids))
            mask = inputs["attention_mask"][row].bool()
            completions.append(Completion(
                text=self.processor.tokenizer.decode(ids[:end], skip_special_tokens=True),
                prompt_ids=inputs["input_ids"][row][mask].tolist(),
                completion_ids=ids[:end], logprobs=logprobs[row, :end].tolist()))
        return completions
