"""Shared checks for model tests: the log-probs a trainer's forward pass gives a completion."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agents import Completion
from agents.model import chat_messages, pil_images


@torch.no_grad()
def trainer_logprobs(model, processor, observation: dict, completion: Completion,
                     excluded: Sequence[int] = ()) -> list[float]:
    """Log-probs of ``completion``'s tokens after its exact prompt ids, from a full forward pass
    with the processor's image tensors, as a trainer computes them; with the ``excluded`` ids
    given no probability, as a sampler that bans them samples."""
    text = processor.apply_chat_template(chat_messages(observation), add_generation_prompt=True,
                                         tokenize=False)
    inputs = processor(text=[text], images=pil_images(observation) or None, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == completion.prompt_ids
    ids = torch.tensor([completion.prompt_ids + completion.completion_ids])
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:
        types = extra["mm_token_type_ids"]
        pad = torch.zeros((1, len(completion.completion_ids)), dtype=types.dtype)
        extra["mm_token_type_ids"] = torch.cat([types, pad], dim=1)
    logits = model(input_ids=ids.to(model.device), **{k: v.to(model.device)
                                                     for k, v in extra.items()}).logits
    start = len(completion.prompt_ids) - 1
    steps = logits[0, start: start + len(completion.completion_ids)].float()
    steps[:, list(excluded)] = -torch.inf
    steps = steps.log_softmax(-1)
    return steps.gather(-1, torch.tensor(completion.completion_ids)[:, None].to(
        steps.device))[:, 0].tolist()


def engine_logprobs(agent, observation: dict, completion_ids: list[int]) -> list[float]:
    """Log-probs a vLLM agent's engine, with the weights it holds now, gives ``completion_ids``
    after ``observation``'s prompt (vLLM's prompt log-probs; the prompt's images expanded by vLLM
    from one placeholder each, as when it samples)."""
    from vllm import SamplingParams

    prompt_ids = agent.processor.tokenizer(agent.prompt_text(observation),
                                           add_special_tokens=False)["input_ids"]
    prompt = {"prompt_token_ids": prompt_ids + list(completion_ids)}
    if observation["images"]:
        prompt["multi_modal_data"] = {"image": pil_images(observation)}
    [output] = agent.llm.generate([prompt], SamplingParams(max_tokens=1, prompt_logprobs=0),
                                  use_tqdm=False)
    steps = output.prompt_logprobs[-len(completion_ids):]
    return [step[token].logprob for token, step in zip(completion_ids, steps, strict=True)]
