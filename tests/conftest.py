"""Shared test fixtures (a tiny in-memory image source so rule tests need no rendering, the
default model, runs and servers that several tests read), and the suite's split over two
pytest-xdist workers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from agents.model import SamplingConfig
from agents.openai_agent import OpenAIAgent
from games.images import ImagePair, ImageSource, SceneImage

# ----- parallel workers: pyproject's addopts run the suite on pytest-xdist's workers -----


def usable_cores() -> list[int]:
    """The CPU cores this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


if "PYTEST_XDIST_WORKER" in os.environ:  # set before any test imports torch or starts vLLM
    # each worker's torch and vLLM threads on their own share of the cores: side by side, two
    # workers each using every core ran their heavy tests up to 1.8x slower
    _worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    _cores = usable_cores()
    _mine = _cores[_worker::_workers] or _cores
    os.environ.setdefault("OMP_NUM_THREADS", str(len(_mine)))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, _mine)))


def is_gpu_run(config: pytest.Config) -> bool:
    """Whether this run selects the GPU tests (``pytest -m gpu``)."""
    return config.option.markexpr.strip() == "gpu"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers (one per core on the 2-core machines the suite is sized for), or
    none for a GPU run, whose tests share one GPU."""
    if is_gpu_run(config):
        return 0
    return min(2, len(usable_cores()))


class SolidColourSource(ImageSource):
    """Pairs of 8x8 solid images (original grey, modified red): rules tests need no real images."""

    domain = "scenes"

    def sample_image(self, rng: np.random.Generator) -> SceneImage:
        return SceneImage(np.full((8, 8, 3), 128, np.uint8), "solid", {})

    def sample_pair(self, rng: np.random.Generator) -> ImagePair:
        original = np.full((8, 8, 3), 128, np.uint8)
        modified = original.copy()
        modified[..., 0] = 255
        return ImagePair(original, modified, "solid", changes=(
            {"object": 0, "attribute": "colour", "before": "gray", "after": "red"},))


@pytest.fixture
def solid_source() -> SolidColourSource:
    return SolidColourSource()


# ----- models: the embedded default model, built once per test session -----

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


@pytest.fixture(scope="session")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny model, built offline into this session's temporary cache (under xdist,
    one cache for all workers: the first build to finish is renamed into place, the others see
    it there or lose the race harmlessly)."""
    from agents.default_model import default_model_path

    if "PYTEST_XDIST_WORKER" in os.environ:  # the workers' folders share a parent per session
        return default_model_path(tmp_path_factory.getbasetemp().parent / "zeroplay-cache")
    return default_model_path(tmp_path_factory.mktemp("zeroplay-cache"))


class CrashedThenEvaluatedRun(NamedTuple):
    """A run folder of ``python train.py``, the crashed run's result and ``train.log`` as it left
    it, then the result of the run that trained in the same folder."""

    run_dir: Path
    crashed: subprocess.CompletedProcess
    log_after_crash: str
    trained: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def crashed_then_evaluated_run(default_model, tmp_path_factory: pytest.TempPathFactory,
                               ) -> CrashedThenEvaluatedRun:
    """One spy run folder of ``python train.py`` (for each xdist worker that needs it), shared
    because two tests would each train it: a run that crashes once training has started (a
    missing image folder), then in the same folder a run of one step with the end-of-run
    evaluation of 2 games.
    tests/test_config_checks.py reads the appended ``train.log``, tests/test_evaluation.py the
    evaluation."""
    from tests.test_config_checks import run_train

    run_dir = tmp_path_factory.mktemp("crashed-then-evaluated")
    small = [f"model.path={default_model}", "selfplay.games_per_round=2",
             "sampling.max_tokens=8", "trainer.per_device_train_batch_size=4",
             "trainer.max_steps=1"]

    def train(*overrides: str) -> subprocess.CompletedProcess:
        return run_train(run_dir, *small, *overrides)

    crashed = train("evaluation.games=0", "env.images.source=pair_folder",
                    "+env.images.path=/nonexistent")
    log = run_dir / "train.log"
    log_after_crash = log.read_text() if log.is_file() else ""
    trained = train("trainer.save_steps=1", "evaluation.games=2", "evaluation.parallel_games=2")
    return CrashedThenEvaluatedRun(run_dir, crashed, log_after_crash, trained)


@pytest.fixture(scope="session")
def default_model_server(default_model, tmp_path_factory: pytest.TempPathFactory,
                         ) -> Iterator[tuple[OpenAIAgent, Path]]:
    """`vllm serve` of the default model with vLLM's development routes on (weight pushes), its
    output (the access log) in a file: a client of it and that file. One server for the session
    (for each xdist worker that runs such tests), because tests/test_vllm.py and
    tests/test_server_mode.py would each start one (~40 s); the tests that push weights into it
    push the default model's own back when they end (tests/test_server_mode.py's ``server``)."""
    from tests.test_vllm import vllm_server  # imports vLLM

    log = tmp_path_factory.mktemp("server") / "vllm-serve.log"
    with vllm_server(default_model, SamplingConfig(), log=log,
                     env={"VLLM_SERVER_DEV_MODE": "1", "PYTHONUNBUFFERED": "1"}) as client:
        yield client, log


@pytest.fixture(scope="session")
def spy_observations() -> list[dict]:
    """Observations of real spy turns: a first clue (one image) and a vote (one image)."""
    import envs

    env = envs.make("spy")
    env.reset(seed=0)
    first = env.pending_turns()[0][1]
    while env.pending_turns()[0][2]["phase"] == "clue":
        env.step("I see \\boxed{a red cube}")
    return [first, env.pending_turns()[0][1]]


# ----- `pytest -m gpu` fails rather than passing vacuously -----

def pytest_collection_finish(session: pytest.Session) -> None:
    """A GPU run (``-m gpu``) that selected no test, or that sees no CUDA GPU, fails at once."""
    if not is_gpu_run(session.config):
        return
    if not session.items:
        pytest.exit("`pytest -m gpu` selected no test", returncode=pytest.ExitCode.TESTS_FAILED)
    import torch

    if not torch.cuda.is_available():
        pytest.exit("`pytest -m gpu` needs a CUDA GPU and none is visible",
                    returncode=pytest.ExitCode.TESTS_FAILED)
