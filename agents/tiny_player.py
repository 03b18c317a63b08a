"""The tiny player: a small Qwen2-VL that plays every zeroplay game, warm-started by imitation.

The random default model (:mod:`agents.default_model`) makes no legal move, so self-play has
nothing to work with. The tiny player is a Qwen2-VL of 4.4M parameters (every backend serves
it) taught by supervised fine-tuning to imitate the scripted agents
(:mod:`agents.imitation`) in three stages:

1. **seeing**: vision drills only — name the object of a one-object picture, name any object of a
   scene, list a scene's objects — with the vision tower learning faster than the rest;
2. **playing**: every seat and phase of scripted games (spy with civilians voting and with an
   observer, the QA duel's questioner and solver) mixed with the drills;
3. **variety**: spy games of fallible scripted players — a spy that is sometimes bold (a
   civilian's specific clue about its own picture) and voters that sometimes guess — with some
   of the playing mix. After stage 2 the player copies the scripted spy's one strategy (vague
   clues, always caught) and votes as surely as the scripted voter: every game ends the same way,
   GRPO's groups have no reward variance and self-play learns nothing. Mixed strategies give it
   choices to weigh.

Its tokenizer is learnt from the same texts, so game talk takes few tokens. The build is
deterministic per seed (deterministic kernels, seeded data) and takes minutes
on a GPU::

    python -m agents.tiny_player --device cuda          # writes agents/assets/tiny-player/

A build can also go on from a saved player: ``--init FOLDER --stages variety`` runs only the last
stage on that player's weights and tokenizer (``build.json`` records each stage and the device
it ran on).

It is kept small and short-trained on purpose: it plays legal moves and names what it sees far
more often than chance, but much worse than the scripted agents, so self-play has room to improve
it. The weights ship with the project (under 10 MB); :func:`tiny_player_path` checks them against
the checksum written by the build before anyone loads them.

Why transformers' ``Trainer`` and not TRL's ``SFTTrainer``: each example must be the exact ids a
game's backend produces (the chat template with one placeholder per image, the answer tokenised on
its own and ended by ``<|im_end|>``), the vision tower needs its own learning rate and the stages
run one after the other; a collator and two optimizer parameter groups on the plain ``Trainer``
say that directly, and the build needs nothing beyond torch and transformers.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.default_model import (
    CORPUS,
    build_processor,
    build_tokenizer,
    generation_config,
    qwen2_vl_config,
)
from agents.imitation import DRILL_PROMPTS, Example, scripted_turns, texts, vision_drills
from agents.model import chat_messages

ASSET_DIR = Path(__file__).parent / "assets" / "tiny-player"
WEIGHTS = "model.safetensors"
#: What the build writes beside the model: its recipe, seed, checksum and timings.
BUILD_RECORD = "build.json"
#: Images are scaled to at most this many pixels: 48 image tokens for a 320x240 picture.
MAX_PIXELS = 28 * 28 * 48


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build depends on (recorded in ``build.json``)."""

    seed: int = 0
    spy_games: int = 2500
    observer_games: int = 500
    duel_games: int = 1500
    drills_per_task: int = 6000
    vocab_size: int = 2048
    hidden_size: int = 256
    layers: int = 4
    vision_depth: int = 4
    seeing_steps: int = 600
    playing_steps: int = 1200
    batch_size: int = 64
    learning_rate: float = 1e-3
    vision_learning_rate: float = 2e-3
    variety_spy_games: int = 800
    variety_duel_games: int = 400
    spy_boldness: float = 0.5
    voter_accuracy: float = 0.6
    variety_steps: int = 300
    variety_batch_size: int = 32
    variety_learning_rate: float = 5e-4

#: The stages of a build, in order.
STAGES = ("seeing", "playing", "variety")


def tiny_player_path(folder: Path = ASSET_DIR) -> Path:
    """The tiny player's folder, after checking its weights against the build's checksum."""
    record_file, weights = folder / BUILD_RECORD, folder / WEIGHTS
    if not record_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"the tiny player is missing from {folder}: build it with "
                                f"`python -m agents.tiny_player --device cuda`")
    expected = json.loads(record_file.read_text())["sha256"]
    actual = _sha256(weights)
    if actual != expected:
        raise ValueError(f"{weights} does not match its checksum in {record_file} "
                         f"({actual[:12]}... != {expected[:12]}...): rebuild it with "
                         f"`python -m agents.tiny_player`")
    return folder


@functools.cache
def imitation_data(config: BuildConfig, stage: str) -> list[Example]:
    """The examples of one stage of the build (made once per build: the tokenizer and the stages
    share them)."""
    seeds = _seeds(config)
    drills = _drills(config)
    if stage == "seeing":
        return drills
    if stage == "playing":
        return (scripted_turns("spy", config.spy_games, seeds[3])
                + scripted_turns("spy", config.observer_games, seeds[4], decision="observer")
                + scripted_turns("qa_duel", config.duel_games, seeds[5]) + drills)
    fallible = {"boldness": config.spy_boldness, "vote_accuracy": config.voter_accuracy}
    return (scripted_turns("spy", config.variety_spy_games, seeds[6], fallible)
            + scripted_turns("qa_duel", config.variety_duel_games, seeds[7])
            + drills[:: max(1, len(drills) // config.variety_spy_games)])


def _seeds(config: BuildConfig) -> list[int]:
    return np.random.default_rng(config.seed).integers(0, 2**31, size=9).tolist()


@functools.cache
def _drills(config: BuildConfig) -> list[Example]:
    return [example for seed, task in zip(_seeds(config), sorted(DRILL_PROMPTS), strict=False)
            for example in vision_drills(task, config.drills_per_task, seed)]


def build_tiny_player(out: Path, config: BuildConfig, device: str,
                      stages: tuple[str, ...] = STAGES, init: Path | None = None) -> Path:
    """Build the tiny player into ``out`` (created; its files replaced): ``stages`` from a fresh
    model, or from the player saved in ``init``."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration, set_seed

    set_seed(config.seed)
    if device != "cpu":  # deterministic kernels (cuBLAS needs its workspace fixed before start);
        # strict, or SDPA's memory-efficient backward keeps its non-deterministic algorithm
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    record: dict[str, Any] = {"config": asdict(config), "torch": torch.__version__, "stages": []}
    if init is None:
        tokenizer = build_tokenizer([*CORPUS.splitlines(),
                                     *texts(imitation_data(config, "playing"))],
                                    config.vocab_size)
        processor = build_processor(tokenizer, MAX_PIXELS)
        model = Qwen2VLForConditionalGeneration(_model_config(tokenizer, config))
        model.generation_config = generation_config(tokenizer)
    else:
        record["init"] = json.loads((Path(init) / BUILD_RECORD).read_text())
        processor = AutoProcessor.from_pretrained(init)
        model = Qwen2VLForConditionalGeneration.from_pretrained(init, dtype=torch.float32)
    model.to(device)
    print(f"tiny player: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    for stage in stages:
        started = time.perf_counter()
        examples = imitation_data(config, stage)
        print(f"stage {stage}: {dict(sorted(Counter(e.task for e in examples).items()))}")
        _imitate(model, processor, examples, config, device, stage)
        record["stages"].append({"stage": stage, "device": device,
                                 "minutes": round((time.perf_counter() - started) / 60, 1)})
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    processor.save_pretrained(out)
    record["sha256"] = _sha256(out / WEIGHTS)
    (out / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    print(f"tiny player written to {out}; sha256 {record['sha256']}")
    return out


def _model_config(tokenizer: Any, config: BuildConfig) -> Any:
    return qwen2_vl_config(
        tokenizer,
        text={"hidden_size": config.hidden_size, "intermediate_size": 640,
              "num_hidden_layers": config.layers, "num_attention_heads": config.hidden_size // 64,
              "num_key_value_heads": max(1, config.hidden_size // 128)},
        vision={"depth": config.vision_depth, "embed_dim": 128, "num_heads": 2, "mlp_ratio": 4},
        tie_word_embeddings=True,
    )


class ImitationSet:
    """Examples as model inputs: the prompt as a backend renders it, then the answer's tokens
    and ``<|im_end|>``, with the loss on the answer only."""

    def __init__(self, examples: list[Example], processor: Any):
        self.examples, self.processor = examples, processor
        self.end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        example = self.examples[index]
        observation = {"prompt": example.prompt, "images": example.images}
        prompt = self.processor.apply_chat_template(chat_messages(observation),
                                                    add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=[Image.fromarray(i) for i in example.images],
                                return_tensors="pt")
        answer = self.processor.tokenizer(example.answer, add_special_tokens=False)["input_ids"]
        answer = [*answer, self.end]
        prompt_ids = inputs["input_ids"][0].tolist()
        return {"input_ids": prompt_ids + answer,
                "labels": [-100] * len(prompt_ids) + answer,
                "mm_token_type_ids": inputs["mm_token_type_ids"][0].tolist() + [0] * len(answer),
                "pixel_values": inputs["pixel_values"],
                "image_grid_thw": inputs["image_grid_thw"]}


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Rows padded on the right into one batch; images concatenated in row order."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)

    def padded(name: str, value: int) -> torch.Tensor:
        return torch.tensor([row[name] + [value] * (width - len(row[name])) for row in rows])

    return {"input_ids": padded("input_ids", pad_id),
            "attention_mask": torch.tensor([[1] * len(row["input_ids"])
                                            + [0] * (width - len(row["input_ids"]))
                                            for row in rows]),
            "labels": padded("labels", -100),
            "mm_token_type_ids": padded("mm_token_type_ids", 0),
            "pixel_values": torch.cat([row["pixel_values"] for row in rows]),
            "image_grid_thw": torch.cat([row["image_grid_thw"] for row in rows])}


def _imitate(model: Any, processor: Any, examples: list[Example], config: BuildConfig,
             device: str, stage: str) -> None:
    """One supervised stage on ``examples``, as long and with the learning rates the config
    gives that stage."""
    import torch
    from transformers import Trainer, TrainingArguments

    vision = [p for name, p in model.named_parameters() if ".visual." in f".{name}"]
    others = [p for name, p in model.named_parameters() if ".visual." not in f".{name}"]
    variety = stage == "variety"
    steps = getattr(config, f"{stage}_steps")
    batch_size = config.variety_batch_size if variety else config.batch_size
    learning_rate = config.variety_learning_rate if variety else config.learning_rate
    vision_rate = learning_rate * config.vision_learning_rate / config.learning_rate
    optimizer = torch.optim.AdamW([{"params": others, "lr": learning_rate},
                                   {"params": vision, "lr": vision_rate}], weight_decay=0.0)
    pad_id = processor.tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
            max_grad_norm=1.0, use_cpu=device == "cpu",
            logging_steps=max(1, steps // 20), save_strategy="no", report_to="none",
            seed=config.seed, data_seed=config.seed, remove_unused_columns=False,
            dataloader_num_workers=0 if device == "cpu" else min(12, os.cpu_count() or 1),
            run_name=f"tiny-player-{stage}")
        trainer = Trainer(model=model, args=args, train_dataset=ImitationSet(examples, processor),
                          data_collator=lambda rows: collate(rows, pad_id),
                          optimizers=(optimizer, None))
        print(f"stage {stage}: {steps} steps of {batch_size} examples")
        trainer.train()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise FloatingPointError(f"the {stage} stage left non-finite weights: lower the "
                                 f"learning rates")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    parser.add_argument("--device", default="cuda", help="cuda (minutes) or cpu (hours)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--init", type=Path, default=None,
                        help="go on from the player saved in this folder")
    for name, default in asdict(BuildConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    options = vars(parser.parse_args(argv))
    out, device = options.pop("out"), options.pop("device")
    stages, init = tuple(options.pop("stages")), options.pop("init")
    random.seed(options["seed"])
    build_tiny_player(out, BuildConfig(**options), device, stages, init)


if __name__ == "__main__":
    main()
