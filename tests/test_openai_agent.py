"""The OpenAI-compatible client without vLLM: server down, retries with backoff, bad answers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.model import RequestSeeds, SamplingConfig
from agents.openai_agent import OpenAIAgent, ServerError

OBSERVATION = {"prompt": "Hello", "images": (), "phase": "", "context": ""}


class Scripted(BaseHTTPRequestHandler):
    """Answers with the statuses in ``server.statuses`` in turn, then a completion."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self._send(200, {"data": [{"id": "fake"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        if status == "empty":
            self._send(200, {"object": "nothing"})
            return
        if status == "garbage":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>not json")
            return
        if status != 200:
            self._send(status, {"error": "busy"})
            return
        self._send(200, {"prompt_token_ids": [1, 2], "choices": [{
            "index": i, "message": {"content": f"\\boxed{{{'ABCD'[i]}}}"}, "token_ids": [5, 6],
            "logprobs": {"content": [{"logprob": -0.1}, {"logprob": -0.2}]}}
            for i in reversed(range(body.get("n", 1)))]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.statuses, server.bodies = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def agent_for(server, **options) -> OpenAIAgent:
    return OpenAIAgent(f"http://127.0.0.1:{server.server_address[1]}/v1", backoff=0.01,
                       sampling=SamplingConfig(max_tokens=4, seed=3), **options)


def test_completion_fields_and_request(fake_server):
    agent = agent_for(fake_server)
    [completion] = agent.act([OBSERVATION])
    assert completion.text == "\\boxed{A}" and completion.prompt_ids == [1, 2]
    assert completion.completion_ids == [5, 6] and completion.logprobs == [-0.1, -0.2]
    body = fake_server.bodies[0]
    assert body["model"] == "fake" and body["return_token_ids"] and body["logprobs"]
    # the first request's seed of the stream drawn from the sampling seed 3
    assert body["max_completion_tokens"] == 4 and body["seed"] == RequestSeeds(3).take(1)[0]


def test_request_options_go_into_every_request_under_the_agents_own_fields(fake_server):
    agent_for(fake_server, request_options={"ignore_eos": True, "top_k": 5, "n": 9}).sample(
        [OBSERVATION], 2)
    body = fake_server.bodies[0]
    assert body["ignore_eos"] is True and body["top_k"] == 5
    assert body["n"] == 2  # the agent's own field wins


def test_several_samples_are_one_request(fake_server):
    [group] = agent_for(fake_server).sample([OBSERVATION], 3)
    assert [c.text for c in group] == ["\\boxed{A}", "\\boxed{B}", "\\boxed{C}"]
    assert len(fake_server.bodies) == 1 and fake_server.bodies[0]["n"] == 3


def test_answer_missing_fields_is_a_clear_error(fake_server):
    fake_server.statuses = ["empty"]
    with pytest.raises(ServerError, match="without the expected fields"):
        agent_for(fake_server, retries=0).act([OBSERVATION])


def test_overloaded_server_is_retried_with_backoff(fake_server):
    fake_server.statuses = [503, 429, 200]
    [completion] = agent_for(fake_server, retries=3).act([OBSERVATION])
    assert completion.completion_ids == [5, 6] and len(fake_server.bodies) == 3


def test_retries_run_out(fake_server):
    fake_server.statuses = [503] * 5
    with pytest.raises(ServerError, match="503"):
        agent_for(fake_server, retries=2).act([OBSERVATION])
    assert len(fake_server.bodies) == 3


def test_client_errors_are_not_retried(fake_server):
    fake_server.statuses = [400]
    with pytest.raises(ServerError, match="400"):
        agent_for(fake_server, retries=3).act([OBSERVATION])
    assert len(fake_server.bodies) == 1


def test_non_json_answer(fake_server):
    fake_server.statuses = ["garbage"]
    with pytest.raises(ServerError, match="did not answer JSON"):
        agent_for(fake_server, retries=0).act([OBSERVATION])


def test_server_down_is_a_clear_error_quickly():
    agent = OpenAIAgent("http://127.0.0.1:9/v1", model="m", retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ServerError, match="cannot reach .*is the server running"):
        agent.act([OBSERVATION])
    with pytest.raises(ServerError, match="no OpenAI-compatible server ready"):
        OpenAIAgent("http://127.0.0.1:9/v1").wait_until_ready(timeout=0.5, poll=0.1)
    assert time.monotonic() - started < 10
