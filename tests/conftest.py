"""Shared test fixtures: a tiny in-memory image source so rule tests need no rendering."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from games.images import ImagePair, ImageSource, SceneImage


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
    """The default tiny model, built offline into this session's temporary cache."""
    from agents.default_model import default_model_path

    return default_model_path(tmp_path_factory.mktemp("zeroplay-cache"))


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
    if session.config.option.markexpr.strip() != "gpu":
        return
    if not session.items:
        pytest.exit("`pytest -m gpu` selected no test", returncode=pytest.ExitCode.TESTS_FAILED)
    import torch

    if not torch.cuda.is_available():
        pytest.exit("`pytest -m gpu` needs a CUDA GPU and none is visible",
                    returncode=pytest.ExitCode.TESTS_FAILED)
