"""Proof of learning: GRPO teaches the tiny random-weight model to find the spy, on a CPU.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/learning_curve.py   # ~13 minutes, one core
    python benchmarks/learning_curve.py --steps 40 --out /tmp/curve.png  # a quick look

**The task** is the decision stage of Who Is the Spy against scripted clue-givers:
``envs.make("spy", decision="observer", spy_image="blank", num_rounds=1, ...)``. Four scripted
players (``agents.scripted``) give one clue each: the civilians a true, specific fact about the
CLEVR-like scene ("There is a large red metal cube in the back left."), the spy, who was shown a
blank picture, a generic sentence ("It shows several different things."). The trained model sits
in the observer seat and votes ``--samples`` times per game for the player it takes for the spy.
The reward is the game's own and verifiable against the ground truth: +1 for a vote for the spy,
-1 for any other (``decision_reward="paper"``).

**Why it starts near chance.** The spy's seat is drawn uniformly and the random-weight model
cannot read the clues, so whichever player it favours is the spy one game in four: vote accuracy
1/4, mean reward 1/4 - 3/4 = -0.5.

**The one concession: a vote is one token.** A random-weight model never writes ``\\boxed{2}`` by
chance, so all its votes would be invalid (reward -1 every time: no variance, nothing to learn).
So the policy samples a single token among "1".."4" (every other token is suppressed through the
model's ``generation_config.suppress_tokens``, which ``TransformersAgent``'s ``generate`` honours)
and :class:`VoteAgent` hands the game ``\\boxed{k}``. The sampler's log-probs are those of the
restricted distribution, so the trainer's importance weight ``exp(trainer - sampler)`` is the
full-vocabulary mass of the four digits: a per-row factor (~4/722 at the start) that Adam's
per-parameter normalisation absorbs.

**What else differs from ``train.py``.** The observer's prompt is shortened (the game's
``prompts`` option) and the scenes are small, so a step takes ~2 s on one core. Advantages are
the votes' rewards minus their game's mean, without GRPO's division by the group's standard
deviation (Dr. GRPO): with that division (``trainers.rows.spy_rows``) the policy collapsed onto
one player number before it learned anything, in the runs made for this script.

Everything else is the project's machinery: ``trainers.selfplay.SelfPlay`` plays ``--games``
games per step through ``RolloutRunner`` with the current weights (the policy shares the trained
model object), a small recipe (:class:`VoteRecipe`) keeps the observer's votes, and
``TrajectoryGRPOTrainer`` takes one TRL GRPO step on them. The curve is the mean reward of each
step's votes, sampled before that step's update: printed as a table, saved as a PNG (drawn with
Pillow) and as JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import GRPOConfig

import envs
from agents import make_agent
from agents.base import Agent, Completion
from agents.default_model import default_model_path
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner
from agents.trajectory import GameResult
from agents.transformers_agent import TransformersAgent
from trainers.advantages import group_normalize
from trainers.grpo import TrajectoryGRPOTrainer
from trainers.rows import TrainingRow
from trainers.selfplay import SelfPlay

NUM_PLAYERS = 4
CHANCE_ACCURACY = 1 / NUM_PLAYERS
CHANCE_REWARD = CHANCE_ACCURACY * 1.0 + (1 - CHANCE_ACCURACY) * -1.0  # paper reward: +1 / -1

#: The observer's prompt, shortened from the game's default so that a CPU step takes seconds.
OBSERVER_PROMPT = ("Who Is the Spy? The clues:\n{clues}\n"
                   "Which player is the spy? Answer with the number in \\boxed{{}}.")
#: Options of ``envs.make("spy", ...)``: one clue round, a blank picture for the spy (the paper's
#: main setting), the observer's vote as the decision, small pre-rendered scenes.
ENV_OPTIONS: dict[str, Any] = {
    "num_players": NUM_PLAYERS, "num_rounds": 1, "spy_image": "blank", "decision": "observer",
    "decision_reward": "paper", "prompts": {"observer": OBSERVER_PROMPT},
    "images": {"source": "clevr", "width": 128, "height": 96, "pool_size": 64},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=350, help="GRPO steps (the fixed budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_curve.png"),
                        help="the PNG; the JSON goes beside it")
    parser.add_argument("--games", type=int, default=16, help="games per step")
    parser.add_argument("--samples", type=int, default=4, help="votes per game (a GRPO group)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW, constant)")
    parser.add_argument("--window", type=int, default=10, help="steps averaged at each end")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args()


class VoteAgent(Agent):
    """The policy in the observer seat: one sampled token among the player numbers (the model's
    ``generation_config`` suppresses every other token), given to the game as ``\\boxed{k}``."""

    def __init__(self, policy: TransformersAgent):
        self.policy = policy

    def act(self, observations: Sequence[dict[str, Any]]) -> list[Completion]:
        return [replace(c, text=f"\\boxed{{{c.text.strip()}}}")
                for c in self.policy.act(observations)]


@dataclass
class VoteRecipe:
    """A :class:`trainers.selfplay.Recipe` with one stage, the observer's votes (the scripted
    clue-givers' turns are not trained). Advantage: a vote's reward minus its game's mean. Each
    step's statistics make a point of the curve."""

    started: float = field(default_factory=time.perf_counter)
    curve: list[dict[str, float]] = field(default_factory=list)
    stages: tuple[str, ...] = ("decision",)
    repeats: int = 1

    @property
    def stage(self) -> str:
        return "decision"

    def rows(self, results: list[GameResult]) -> dict[str, list[TrainingRow]]:
        votes = [t for r in results for t in r.turns if t.phase == "decision"]
        advantages = group_normalize([v.game_id for v in votes], [v.reward for v in votes],
                                     scale=False)
        return {"decision": [TrainingRow(v, a) for v, a in zip(votes, advantages, strict=True)]}

    def observe(self, statistics: dict[str, float]) -> None:
        point = {"step": len(self.curve) + 1, "mean_reward": statistics["return_observer"],
                 "vote_accuracy": statistics["vote_accuracy"],
                 "seconds": time.perf_counter() - self.started}
        self.curve.append(point)
        print(f"{point['step']:>5} {point['mean_reward']:>+12.3f} {point['vote_accuracy']:>14.3f}"
              f" {point['seconds']:>9.0f}", flush=True)

    def skip(self) -> None:
        raise RuntimeError("every game ends with the observer's votes")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def build(args: argparse.Namespace, recipe: VoteRecipe) -> TrajectoryGRPOTrainer:
    """The model, the players, the self-play row source and the trainer."""
    path = str(default_model_path())
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    digits = [processor.tokenizer.convert_tokens_to_ids(str(p))
              for p in range(1, NUM_PLAYERS + 1)]
    model.generation_config.suppress_tokens = [
        i for i in range(model.config.text_config.vocab_size) if i not in digits]
    sampling = SamplingConfig(max_tokens=1, temperature=1.0, seed=args.seed)
    policy = TransformersAgent(path, sampling, model_object=model, processor=processor,
                               batch_size=args.games * args.samples)
    clue_givers = make_agent("scripted", game="spy", seed=args.seed)
    seats: dict[str, Agent] = {f"player_{p}": clue_givers for p in range(1, NUM_PLAYERS + 1)}
    seats["observer_1"] = VoteAgent(policy)
    env_options = {**ENV_OPTIONS, "observer_samples": args.samples,
                   "images": {**ENV_OPTIONS["images"], "pool_seed": args.seed}}
    runner = RolloutRunner(lambda: envs.make("spy", **env_options), seats,
                           parallel_games=args.games)
    selfplay = SelfPlay(runner, recipe, args.games, seed=args.seed)
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="learning_curve-"), seed=args.seed,
        max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
        per_device_train_batch_size=args.games * args.samples, gradient_accumulation_steps=1,
        num_generations=args.samples, beta=0.0, loss_type="dapo", use_cpu=True, bf16=False,
        gradient_checkpointing=False, logging_steps=args.steps, save_strategy="no",
        report_to="none", disable_tqdm=True)
    return TrajectoryGRPOTrainer(model, processor, config, rows=selfplay,
                                 metrics=lambda: selfplay.metrics)


def window_means(curve: list[dict[str, float]], key: str, window: int) -> tuple[float, float]:
    """The mean of ``key`` over the first and over the last ``window`` steps."""
    values = [point[key] for point in curve]
    return float(np.mean(values[:window])), float(np.mean(values[-window:]))


def draw_curve(curve: list[dict[str, float]], window: int, path: Path) -> None:
    """A line chart: the mean reward per step, its running mean and the chance level."""
    width, height, left, right, top, bottom = 900, 520, 80, 30, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    steps = [p["step"] for p in curve]
    rewards = [p["mean_reward"] for p in curve]
    running = [float(np.mean(rewards[max(0, i - window + 1): i + 1]))
               for i in range(len(rewards))]
    y_low, y_high = -1.0, 1.0

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - 1) / max(1, len(steps) - 1) * plot_w
        return x, top + (y_high - value) / (y_high - y_low) * plot_h

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for value in np.linspace(y_low, y_high, 9):  # y axis: grid lines and labels
        _, y = xy(1, value)
        draw.line([(left, y), (left + plot_w, y)], fill=(230, 230, 230))
        draw.text((left - 45, y - 6), f"{value:+.2f}", fill="black")
    spacing = max(1, int(np.ceil(len(steps) / 10 / 10)) * 10) if len(steps) > 10 else 1
    for step in [1, *range(spacing, len(steps) + 1, spacing)]:  # x axis: ticks and labels
        x, _ = xy(step, y_low)
        draw.line([(x, top + plot_h), (x, top + plot_h + 5)], fill="black")
        draw.text((x - 8, top + plot_h + 10), str(step), fill="black")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    _, chance_y = xy(1, CHANCE_REWARD)
    for x in range(left, left + plot_w, 12):  # the chance level, dashed
        draw.line([(x, chance_y), (min(x + 6, left + plot_w), chance_y)], fill=(200, 0, 0),
                  width=2)
    if len(steps) > 1:
        draw.line([xy(s, r) for s, r in zip(steps, rewards, strict=True)], fill=(150, 180, 230))
        draw.line([xy(s, r) for s, r in zip(steps, running, strict=True)], fill=(0, 60, 200),
                  width=3)
    draw.text((left, 15), "Who Is the Spy, the observer's vote against scripted clue-givers: "
              "GRPO on the tiny random-weight Qwen2-VL, CPU", fill="black")
    draw.text((left + plot_w // 2 - 30, height - 30), "GRPO step", fill="black")
    draw.text((10, top - 20), "mean reward", fill="black")
    legend = [((150, 180, 230), "per step"), ((0, 60, 200), f"mean of the last {window} steps"),
              ((200, 0, 0), f"chance ({CHANCE_REWARD:+.2f})")]
    for i, (colour, label) in enumerate(legend):
        y = top + 12 + 16 * i
        draw.line([(left + 12, y + 6), (left + 40, y + 6)], fill=colour, width=3)
        draw.text((left + 48, y), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    recipe = VoteRecipe()
    trainer = build(args, recipe)
    print(f"{'step':>5} {'mean reward':>12} {'vote accuracy':>14} {'seconds':>9}   "
          f"(chance: reward {CHANCE_REWARD:+.2f}, accuracy {CHANCE_ACCURACY:.2f})", flush=True)
    trainer.train()
    seconds = time.perf_counter() - recipe.started

    curve = recipe.curve
    first, last = window_means(curve, "mean_reward", args.window)
    first_accuracy, last_accuracy = window_means(curve, "vote_accuracy", args.window)
    draw_curve(curve, args.window, args.out)
    numbers = args.out.with_suffix(".json")
    numbers.write_text(json.dumps({
        "task": "Who Is the Spy: the observer's vote against scripted clue-givers",
        "env_options": ENV_OPTIONS, "steps": args.steps, "seed": args.seed,
        "games_per_step": args.games, "votes_per_game": args.samples, "learning_rate": args.lr,
        "threads": args.threads, "seconds": seconds, "window": args.window,
        "chance_reward": CHANCE_REWARD, "chance_accuracy": CHANCE_ACCURACY,
        "first_window_reward": first, "last_window_reward": last,
        "first_window_accuracy": first_accuracy, "last_window_accuracy": last_accuracy,
        "curve": curve}, indent=1))
    print(f"curve {args.out}, numbers {numbers}, {seconds:.0f} s")
    print(f"vote accuracy first {args.window} steps {first_accuracy:.3f} -> last {args.window} "
          f"steps {last_accuracy:.3f} (chance {CHANCE_ACCURACY:.2f})")
    print(f"mean reward first {args.window} steps {first:+.3f} -> last {args.window} steps "
          f"{last:+.3f} (chance {CHANCE_REWARD:+.2f})")


if __name__ == "__main__":
    main()
