"""Agents that play the games of :mod:`envs`: all implement :class:`Agent` (observations in,
completions out). ``make_agent(name, **kwargs)`` builds one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agents.base import Agent, Completion, TextAgent
from agents.random_agent import RandomAgent
from agents.scripted import SCRIPTED, scripted_agent
from games.registry import Registry

if TYPE_CHECKING:
    from agents.model import SamplingConfig


def _scripted(game: str | None, **kwargs: Any) -> Agent:
    if game is None:
        raise ValueError(f"make_agent('scripted') needs game=, one of: "
                         f"{', '.join(SCRIPTED)}")
    return scripted_agent(game, **kwargs)


def _random(game: str | None, **kwargs: Any) -> Agent:
    return RandomAgent(**kwargs)


def _model_agent(backend: str) -> Callable[..., Agent]:
    """A builder for a VLM backend, imported on first use (torch and vLLM are heavy)."""

    def build(game: str | None, *, sampling: SamplingConfig | None = None,
              seed: int | None = None, max_tokens: int = 256, temperature: float = 1.0,
              top_p: float = 1.0, **options: Any) -> Agent:
        from agents.model import SamplingConfig

        if sampling is None:
            sampling = SamplingConfig(max_tokens=max_tokens, temperature=temperature,
                                      top_p=top_p, seed=seed)
        if backend == "transformers":
            from agents.transformers_agent import TransformersAgent
            return TransformersAgent(sampling=sampling, **options)
        if backend == "vllm":
            from agents.vllm_agent import VLLMAgent
            return VLLMAgent(sampling=sampling, **options)
        if backend == "vllm_server":
            from agents.vllm_server_agent import VLLMServerAgent
            return VLLMServerAgent(sampling=sampling, **options)
        from agents.openai_agent import OpenAIAgent
        return OpenAIAgent(sampling=sampling, **options)

    return build


#: Agent builders by name, each called as ``builder(game, **kwargs)``. The model backends take
#: ``model`` (a path or hub id; the default model if left out), sampling settings
#: (``max_tokens``, ``temperature``, ``top_p``, ``seed``, or a whole ``sampling``
#: :class:`agents.model.SamplingConfig`) and their own options.
AGENTS: Registry[Callable[..., Agent]] = Registry("agent")
AGENTS.register("random", _random)
AGENTS.register("scripted", _scripted)
AGENTS.register("transformers", _model_agent("transformers"))
AGENTS.register("vllm", _model_agent("vllm"))
AGENTS.register("vllm_server", _model_agent("vllm_server"))
AGENTS.register("openai", _model_agent("openai"))


def make_agent(name: str, *, game: str | None = None, **kwargs: Any) -> Agent:
    """The agent called ``name`` for the game ``game``, built with ``kwargs`` (the scripted
    agents need ``game``; others ignore it)."""
    return AGENTS[name](game, **kwargs)


__all__ = ["AGENTS", "Agent", "Completion", "RandomAgent", "SCRIPTED", "TextAgent", "make_agent",
           "scripted_agent"]
