"""A VLM agent that talks to an OpenAI-compatible server (``vllm serve``, or any other).

Each observation is one chat request: its images as base64 PNG data URLs, then its prompt.
Requests of a batch run concurrently (``concurrency`` at a time). A request that times out, cannot
connect, or gets a 5xx or 429 answer is retried with exponential backoff (``retries`` times);
other errors, and a server still unreachable after the retries, raise :class:`ServerError` with
the address and what went wrong. From vLLM, completions come back with the prompt's and the
completion's token ids (``return_token_ids``) and the sampled tokens' log-probs; other servers
give text and log-probs only.

The model's special tokens (:func:`agents.model.banned_token_ids`) are banned from sampling with
the request's ``logit_bias``. Their ids come from the model's tokenizer: ``tokenizer=`` (a folder or
hub id), or else the folder that a vLLM server names as its model's ``root`` in ``/models``; with
neither, a warning says that the server may sample them.

Only the standard library is used, so this agent works where neither torch nor vLLM is installed
(transformers is needed only to read a tokenizer).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agents.base import Agent, Completion
from agents.model import BAN_LOGIT_BIAS, RequestSeeds, SamplingConfig, banned_token_ids, pil_images

_RETRIED_STATUS = {429, 500, 502, 503, 504}
log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The server is down, not ready, or refused a request; ``retryable`` if trying again
    may help (no connection, a timeout, an overloaded or failing server); ``status``: the HTTP
    status of a refusal."""

    def __init__(self, message: str, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.retryable, self.status = retryable, status


class OpenAIAgent(Agent):
    """Answers observations through ``POST {base_url}/chat/completions``. ``tokenizer`` (a
    folder or hub id) is the served model's, whose special tokens are banned from sampling;
    ``request_options`` go into every request as they are (a server's own sampling fields, e.g.
    vLLM's ``ignore_eos``, ``top_k`` or ``allowed_token_ids``)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str | None = None,
                 sampling: SamplingConfig | None = None, api_key: str = "EMPTY",
                 timeout: float = 300.0, retries: int = 3, backoff: float = 0.5,
                 concurrency: int = 64, tokenizer: str | Path | None = None,
                 request_options: dict[str, Any] | None = None):
        self.base_url = base_url.rstrip("/")
        self.sampling = sampling or SamplingConfig()
        self.api_key, self.timeout, self.retries, self.backoff = api_key, timeout, retries, backoff
        self.concurrency = concurrency
        self.request_options = dict(request_options or {})
        self.seeds = RequestSeeds(self.sampling.seed)
        self.model = model
        self.served_root: str | None = None  # the model's folder or hub id, as the server says
        self.logit_bias = None if tokenizer is None else _ban(_load_tokenizer(tokenizer))

    def wait_until_ready(self, timeout: float = 120.0, poll: float = 1.0) -> list[str]:
        """Poll ``GET /models`` until the server answers; the served model names. The first
        served model becomes the default ``model``. Raises :class:`ServerError` on timeout."""
        served = self._served_models(self.base_url, timeout, poll)
        models = [m["id"] for m in served]
        self.model = self.model or models[0]
        self.served_root = next((m.get("root") for m in served if m["id"] == self.model), None)
        return models

    def _served_models(self, base_url: str, timeout: float, poll: float) -> list[dict[str, Any]]:
        """``GET {base_url}/models``, polled until it answers: the served models' records."""
        deadline, last_error = time.monotonic() + timeout, ""
        while True:
            try:
                served = self._request("GET", "/models", None, 10.0, base_url)["data"]
                if served and all("id" in m for m in served):
                    return served
                last_error = f"no served model in {served}"
            except (urllib.error.URLError, OSError, ServerError, KeyError, TypeError) as error:
                last_error = str(error)
            if time.monotonic() > deadline:
                raise ServerError(f"no OpenAI-compatible server ready at {base_url} after "
                                  f"{timeout:.0f} s (last error: {last_error}); start one, e.g. "
                                  f"`vllm serve <model> --port 8000`")
            time.sleep(poll)

    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        return [group[0] for group in self.sample(observations, 1)]

    def sample(self, observations: Sequence[dict[str, Any]], n: int) -> list[list[Completion]]:
        """``n`` completions per observation, one request each (the request's ``n``)."""
        if not observations:
            return []
        if self.model is None or self.logit_bias is None:
            self.wait_until_ready(timeout=0.0)  # the served model, and its root folder
        if self.logit_bias is None:
            self.logit_bias = self._ban_from_served_root()
        seeds = self.seeds.take(len(observations))
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency,
                                                       len(observations)))) as pool:
            return list(pool.map(self._complete, observations, seeds, [n] * len(seeds),
                                 self._request_urls(len(seeds))))

    def _request_urls(self, count: int) -> list[str]:
        """The server each of ``count`` requests goes to: this agent's one server."""
        return [self.base_url] * count

    def _complete(self, observation: dict[str, Any], seed: int | None, n: int,
                  base_url: str) -> list[Completion]:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": _data_url(image)}}
            for image in pil_images(observation)]
        content.append({"type": "text", "text": observation["prompt"]})
        body = {**self.request_options,
                "model": self.model, "messages": [{"role": "user", "content": content}], "n": n,
                "max_completion_tokens": self.sampling.max_tokens,
                "temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                "logprobs": True, "top_logprobs": 0, "return_token_ids": True}
        if seed is not None:
            body["seed"] = seed
        if self.logit_bias:
            body["logit_bias"] = self.logit_bias
        answer = self._with_retries(body, base_url)
        try:
            return [Completion(
                text=choice["message"].get("content") or "",
                prompt_ids=answer.get("prompt_token_ids"), completion_ids=choice.get("token_ids"),
                logprobs=[step["logprob"] for step in
                          (choice.get("logprobs") or {}).get("content") or []] or None)
                for choice in sorted(answer["choices"], key=lambda c: c.get("index", 0))]
        except (KeyError, TypeError, AttributeError) as error:
            raise ServerError(f"{base_url}/chat/completions answered without the expected "
                              f"fields ({error!r}): {str(answer)[:300]}") from None

    def _ban_from_served_root(self) -> dict[str, float]:
        """The logit bias banning the special tokens of the model the server names as its root,
        or none, with a warning, where that tokenizer cannot be read."""
        reason = "the server names no root folder for it in /models"
        if self.served_root is not None:
            try:
                return _ban(_load_tokenizer(self.served_root))
            except (ImportError, OSError, ValueError) as error:
                reason = f"its tokenizer at {self.served_root!r} cannot be read here ({error})"
        log.warning("OpenAIAgent: the server may sample the special tokens (image placeholders "
                    "and the like) of model %r, since %s; give the agent tokenizer=<the model's "
                    "folder or hub id> to ban them", self.model, reason)
        return {}

    def _with_retries(self, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return self._request("POST", "/chat/completions", body, self.timeout, base_url)
            except ServerError as error:
                if not error.retryable or attempt == self.retries:
                    raise
            time.sleep(self.backoff * 2**attempt)
            attempt += 1

    def _request(self, method: str, path: str, body: dict[str, Any] | None, timeout: float,
                 base_url: str | None = None) -> dict[str, Any]:
        """``method`` on ``{base_url}{path}`` (this agent's server by default): the JSON answer,
        ``{}`` for an empty one."""
        url = (base_url or self.base_url) + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method,
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = response.read()
                return json.loads(answer) if answer else {}
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise ServerError(f"{method} {url} answered {error.code}: {detail}",
                              retryable=error.code in _RETRIED_STATUS, status=error.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise ServerError(f"cannot reach {url}: {reason} (is the server running? e.g. "
                              f"`vllm serve <model> --port 8000`)", retryable=True) from None
        except json.JSONDecodeError as error:
            raise ServerError(f"{method} {url} did not answer JSON: {error}") from None


def _load_tokenizer(source: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source))


def _ban(tokenizer: Any) -> dict[str, float]:
    """A request's ``logit_bias`` that bans ``tokenizer``'s special tokens."""
    return {str(token): BAN_LOGIT_BIAS for token in banned_token_ids(tokenizer)}


def _data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
