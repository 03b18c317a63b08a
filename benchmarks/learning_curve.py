"""Proof of learning in the full games: train.py's self-play from the tiny player, over seeds.

    python benchmarks/learning_curve.py                          # both games, seeds 0 1 2, 24 steps
    python benchmarks/learning_curve.py --steps 2 --seeds 0 1    # a smoke run
    python benchmarks/learning_curve.py --games spy --override trainer=gpu --override agent=vllm

Nothing here trains: for each game (``--games``) and seed (``--seeds``), one after the other, it
runs the project's main job as it is,

    python train.py env=<game> seed=<seed> trainer.max_steps=<steps> evaluation.games=0 \\
        ++trainer.save_total_limit=1 hydra.run.dir=<runs>/<game>/seed<seed> [--override ...]

— the default config: the tiny player (``model.path`` null), Iterative-SPO's clue and decision
stages for the spy game (``selfplay.switch``'s thresholds, ``configs/recipe/spy.yaml``), the
questioner and solver stages for the duel.
``--override key=value`` (repeatable) passes any other Hydra override through (also replacing
the two defaults above), so the same script runs bigger settings on a GPU. Each run's console
output goes to ``console.log`` in its folder (beside train.py's ``train.log``).

**The metrics** are what train.py logs at every step (TRL's loss with the games' ``selfplay/``
statistics), read back from the ``log_history`` of ``trainer_state.json`` in the run's newest
complete checkpoint: transformers saves one at the last step, and a resumed run's history is
restored from its checkpoint, so the history is whole. A run folder that already holds a run with
the same overrides is resumed (or, when finished, just read back) by train.py itself; one holding a
run with other overrides is an error, never overwritten.

**The outputs**, per game, in ``--results``: ``learning_curve_<game>.png``, one panel per metric
(spy: vote accuracy, N/A rate, spy caught, invalid clue and vote rates, the return of each role,
the active stage, the loss; duel: the questioner's valid-question rate, the in-band rate, the
solver's confidence and valid-answer rate, the return of each role, the active stage, the skipped
solver stages, the loss) with the mean over seeds as a line and their min-max as a band; and
``learning_curve_<game>.json``: every seed's per-step metrics and the summary — per metric the
means of the first and of the last ``--window`` steps and their change, each as the mean over
seeds with its min and max — which is also printed as a table. The figures are drawn with Pillow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
GAMES = ("spy", "qa_duel")
GAME_TITLES = {"spy": "Who Is the Spy", "qa_duel": "QA duel"}
#: The panels of each game, in order: (metric, label); the return of every role found in the
#: logs follows the statistics.
STATISTICS = {
    "spy": [("selfplay/vote_accuracy", "vote accuracy"), ("selfplay/na_rate", "N/A rate"),
            ("selfplay/spy_caught", "spy caught"),
            ("selfplay/invalid_clue_rate", "invalid clue rate"),
            ("selfplay/invalid_vote_rate", "invalid vote rate")],
    "qa_duel": [("selfplay/valid_question", "valid question rate (questioner)"),
                ("selfplay/in_band", "in-band rate"),
                ("selfplay/confidence", "solver's confidence"),
                ("selfplay/valid_answer_rate", "valid answer rate (solver)")],
}
TRAINING = {
    "spy": [("selfplay/stage_clue", "stage (clue 1, decision 0)"), ("loss", "loss")],
    "qa_duel": [("selfplay/stage_answer", "stage (solver 1, questioner 0)"),
                ("selfplay/skipped_stages", "stages skipped (total)"), ("loss", "loss")],
}
RETURN_PREFIX = "selfplay/return_"
#: Metrics drawn on a fixed 0-1 axis: the games' rates and the stage flags.
UNIT_RANGE = ({metric for game in GAMES for metric, _ in STATISTICS[game]}
              | {"selfplay/stage_clue", "selfplay/stage_answer"})
#: Keys set from this script's own options, not through --override.
OWN_KEYS = {"env": "--games", "seed": "--seeds", "trainer.max_steps": "--steps",
            "hydra.run.dir": "--runs"}
#: Overrides added to every run unless an --override sets the same key: no end-of-run evaluation
#: (the curve is the point), only the newest checkpoint kept (it holds the whole history).
DEFAULT_OVERRIDES = ("evaluation.games=0", "++trainer.save_total_limit=1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24,
                        help="training steps of every run (24: the default job's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--games", nargs="+", choices=GAMES, default=list(GAMES))
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for train.py (repeatable)")
    parser.add_argument("--window", type=int, default=5,
                        help="steps averaged at each end for the summary")
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "learning_curve",
                        help="the run folders go in <runs>/<game>/seed<seed>")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                        help="where the PNG and JSON of each game go")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.window < 1:
        parser.error("--steps and --window must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must differ, got {args.seeds}")
    try:
        shared_overrides(args.override)
    except ValueError as error:
        parser.error(str(error))
    return args


def override_key(override: str) -> str:
    """The config key of a Hydra override ``[+|++]key=value``."""
    key, equals, _ = override.partition("=")
    key = key.lstrip("+")
    if not equals or not key:
        raise ValueError(f"an override is key=value, got {override!r}")
    return key


def shared_overrides(extra: Sequence[str]) -> list[str]:
    """The overrides of every run besides the script's own keys: the defaults, each replaced by
    an ``extra`` override of the same key, then the other ``extra`` ones."""
    chosen = {override_key(override): override for override in DEFAULT_OVERRIDES}
    for override in extra:
        key = override_key(override)
        if key in OWN_KEYS:
            raise ValueError(f"{key} is set with {OWN_KEYS[key]}, not --override")
        chosen[key] = override
    return list(chosen.values())


def train_overrides(game: str, seed: int, steps: int, run_dir: Path,
                    extra: Sequence[str]) -> list[str]:
    """train.py's overrides for one run."""
    return [f"env={game}", f"seed={seed}", f"trainer.max_steps={steps}",
            *shared_overrides(extra), f"hydra.run.dir={run_dir}"]


def task_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides Hydra records in a run's ``.hydra/overrides.yaml`` (not ``hydra.*``)."""
    return [o for o in overrides
            if override_key(o) != "hydra" and not override_key(o).startswith(("hydra.", "hydra/"))]


def check_run_folder(run_dir: Path, overrides: Sequence[str]) -> None:
    """Raises if ``run_dir`` holds a run of train.py with other overrides (resuming it would
    mix two configurations)."""
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        return
    before = list(OmegaConf.load(recorded))
    if before != task_overrides(overrides):
        raise SystemExit(f"error: {run_dir} holds a run with the overrides {before}, not "
                         f"{task_overrides(overrides)}: remove that folder or choose other --runs")


def run_training(overrides: Sequence[str], run_dir: Path) -> None:
    """``python train.py <overrides>``, its console output appended to ``run_dir/console.log``;
    a failure ends the script with the log's last lines."""
    run_dir.mkdir(parents=True, exist_ok=True)
    console = run_dir / "console.log"
    with console.open("a") as log:
        finished = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, check=False)
    if finished.returncode:
        tail = "\n".join(console.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{tail}\nerror: train.py exited with status {finished.returncode} "
                         f"(whole output: {console}; rerunning resumes the run)")


def per_step_metrics(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """The training steps' entries of a Trainer's ``log_history`` (those with a loss: not the
    end-of-training summary), their numbers only, in step order."""
    entries = [{name: float(value) for name, value in entry.items()
                if isinstance(value, int | float) and not isinstance(value, bool)}
               for entry in log_history if "loss" in entry and "step" in entry]
    return sorted(entries, key=lambda entry: entry["step"])


def read_history(run_dir: Path, steps: int) -> list[dict[str, float]]:
    """The per-step metrics of a finished run, from its newest complete checkpoint."""
    from trainers.checkpoints import newest_complete_checkpoint

    checkpoint = newest_complete_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise SystemExit(f"error: {run_dir / 'checkpoints'} has no complete checkpoint")
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    history = per_step_metrics(state["log_history"])
    if not history or history[-1]["step"] != steps:
        last = history[-1]["step"] if history else 0
        raise SystemExit(f"error: {checkpoint} logs steps up to {last:g}, not {steps}")
    return history


def panels(game: str, histories: dict[int, list[dict[str, float]]]) -> list[tuple[str, str]]:
    """The (metric, label) panels of ``game``: its statistics, each role's return, training."""
    logged = {name for history in histories.values() for entry in history for name in entry}
    returns = [(name, f"return, {name.removeprefix(RETURN_PREFIX)}")
               for name in sorted(logged) if name.startswith(RETURN_PREFIX)]
    return [*STATISTICS[game], *returns, *TRAINING[game]]


def seed_curves(histories: dict[int, list[dict[str, float]]],
                metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps logged by every seed and the metric's values there, one row per seed (NaN
    where a step's entry lacks it)."""
    steps = sorted(set.intersection(*({e["step"] for e in h} for h in histories.values())))
    if not steps:
        raise ValueError("the seeds have no logged step in common")
    values = np.array([[by_step[step].get(metric, np.nan) for step in steps]
                       for by_step in ({e["step"]: e for e in h} for h in histories.values())])
    if np.isnan(values).all():
        logged = sorted({name for h in histories.values() for e in h for name in e})
        raise ValueError(f"no step logs {metric!r}; logged: {logged}")
    return np.array(steps), values


def finite_mean(values: np.ndarray) -> float:
    """The mean of the finite values (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def spread(values: np.ndarray) -> dict[str, float | None]:
    """Mean, min and max of per-seed values (None where no seed has one)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(finite.mean()), "min": float(finite.min()), "max": float(finite.max())}


def summarize(histories: dict[int, list[dict[str, float]]], metrics: Sequence[str],
              window: int) -> dict[str, Any]:
    """Per metric: each seed's mean over the first and the last ``window`` steps (at most half
    of the steps each) and their change, as the mean over seeds with min and max."""
    summary: dict[str, Any] = {}
    for metric in metrics:
        steps, values = seed_curves(histories, metric)
        size = min(window, max(1, len(steps) // 2))
        first = np.array([finite_mean(row) for row in values[:, :size]])
        last = np.array([finite_mean(row) for row in values[:, -size:]])
        summary[metric] = {"window": size, "first": spread(first), "last": spread(last),
                           "change": spread(last - first)}
    return summary


def format_spread(value: dict[str, float | None], sign: bool = False) -> str:
    if value["mean"] is None:
        return "n/a"
    form = "+.3f" if sign else ".3f"
    return f"{value['mean']:{form}} [{value['min']:{form}}, {value['max']:{form}}]"


def summary_table(game: str, summary: dict[str, Any], labels: dict[str, str]) -> str:
    """The summary as a text table: mean over seeds [min, max]."""
    lines = [f"{GAME_TITLES[game]}: means over the first and the last k steps, "
             f"mean over seeds [min, max]",
             f"{'metric':<36} {'k':>3} {'first k steps':>25} {'last k steps':>25} "
             f"{'change':>28}"]
    for metric, numbers in summary.items():
        lines.append(f"{labels[metric]:<36} {numbers['window']:>3} "
                     f"{format_spread(numbers['first']):>25} "
                     f"{format_spread(numbers['last']):>25} "
                     f"{format_spread(numbers['change'], sign=True):>28}")
    return "\n".join(lines)


# ----- the figure (Pillow) -----

PANEL_SIZE = (440, 270)
PLOT_MARGINS = (62, 30, 16, 34)  # left, top, right, bottom of a plot inside its panel
COLUMNS = 3
BAND, LINE, GRID = (190, 210, 240), (20, 70, 190), (228, 228, 228)


def tick_step(low: float, high: float, count: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` ticks."""
    raw = (high - low) / (count - 1)
    magnitude = 10 ** np.floor(np.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def value_ticks(metric: str, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The y axis's ticks, its first and last being its ends: 0-1 for rates and stages;
    otherwise round values around the band (widened when it is flat)."""
    bottom, top = (0.0, 1.0) if metric in UNIT_RANGE else (float(np.min(low)),
                                                           float(np.max(high)))
    if top - bottom < 1e-9:
        bottom, top = bottom - 0.5, top + 0.5
    size = tick_step(bottom, top)
    first, last = np.floor(bottom / size + 1e-9), np.ceil(top / size - 1e-9)
    return np.arange(first, last + 0.5) * size


def step_ticks(first: float, last: float) -> np.ndarray:
    """The x axis's ticks: round steps within the run (the first step alone for one step)."""
    if last == first:
        return np.array([first])
    size = max(1.0, tick_step(first, last))
    ticks = np.arange(np.ceil(first / size), np.floor(last / size) + 0.5) * size
    return ticks if ticks.size else np.array([first, last])


def draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], metric: str, label: str,
               steps: np.ndarray, values: np.ndarray, font: ImageFont.FreeTypeFont) -> None:
    """One metric: the seeds' min-max band and their mean against the step."""
    left = origin[0] + PLOT_MARGINS[0]
    top = origin[1] + PLOT_MARGINS[1]
    right = origin[0] + PANEL_SIZE[0] - PLOT_MARGINS[2]
    bottom = origin[1] + PANEL_SIZE[1] - PLOT_MARGINS[3]
    shown = ~np.isnan(values).all(axis=0)  # steps where some seed has the metric
    steps, values = steps[shown], values[:, shown]
    mean, low, high = (np.nanmean(values, axis=0), np.nanmin(values, axis=0),
                       np.nanmax(values, axis=0))
    y_ticks = value_ticks(metric, low, high)
    y_low, y_high = float(y_ticks[0]), float(y_ticks[-1])
    first, last = float(steps[0]), float(steps[-1])

    def xy(step: float, value: float) -> tuple[float, float]:
        x = (left + right) / 2 if last == first else left + (step - first) / (last - first) * (
            right - left)
        return x, bottom - (value - y_low) / (y_high - y_low) * (bottom - top)

    draw.text((origin[0] + PLOT_MARGINS[0], origin[1] + 8), label, fill="black", font=font)
    for value in y_ticks:
        _, y = xy(first, value)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 6, y), f"{value:.4g}", fill="black", font=font, anchor="rm")
    for step in step_ticks(first, last):
        x, _ = xy(step, y_low)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x, bottom + 6), f"{step:g}", fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    if len(steps) > 1:
        draw.polygon([xy(s, v) for s, v in zip(steps, high, strict=True)]
                     + [xy(s, v) for s, v in zip(steps[::-1], low[::-1], strict=True)], fill=BAND)
        draw.line([xy(s, v) for s, v in zip(steps, mean, strict=True)], fill=LINE, width=2)
    for step, value, lowest, highest in zip(steps, mean, low, high, strict=True):
        if len(steps) <= 30:  # points too, when few
            x, y = xy(step, value)
            draw.line([xy(step, lowest), xy(step, highest)], fill=BAND, width=5)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE)


def draw_figure(title: str, subtitle: str,
                curves: Sequence[tuple[str, str, np.ndarray, np.ndarray]], path: Path) -> None:
    """A grid of panels, one per (metric, label, steps, values per seed), saved as a PNG."""
    rows = -(-len(curves) // COLUMNS)
    header = 78
    image = Image.new("RGB", (COLUMNS * PANEL_SIZE[0], header + rows * PANEL_SIZE[1]), "white")
    draw = ImageDraw.Draw(image)
    font, big = ImageFont.load_default(size=13), ImageFont.load_default(size=17)
    draw.text((16, 10), title, fill="black", font=big)
    draw.text((16, 34), subtitle, fill=(80, 80, 80), font=font)
    draw.rectangle([16, 56, 40, 66], fill=BAND)
    draw.text((46, 54), "min-max over seeds", fill="black", font=font)
    draw.line([(200, 61), (224, 61)], fill=LINE, width=2)
    draw.text((230, 54), "mean over seeds", fill="black", font=font)
    draw.text((COLUMNS * PANEL_SIZE[0] - 16, 54), "x: training step", fill="black", font=font,
              anchor="ra")
    for number, (metric, label, steps, values) in enumerate(curves):
        origin = ((number % COLUMNS) * PANEL_SIZE[0], header + number // COLUMNS * PANEL_SIZE[1])
        draw_panel(draw, origin, metric, label, steps, values, font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


# ----- the job -----

def learning_curve(game: str, args: argparse.Namespace) -> None:
    """Trains ``game`` for every seed, then writes its figure and JSON and prints its table."""
    histories: dict[int, list[dict[str, float]]] = {}
    runs: dict[str, Any] = {}
    for seed in args.seeds:
        run_dir = (args.runs / game / f"seed{seed}").resolve()
        overrides = train_overrides(game, seed, args.steps, run_dir, args.override)
        started = time.perf_counter()
        print(f"{game} seed {seed}: python train.py {' '.join(overrides)}  "
              f"(output: {run_dir / 'console.log'})", flush=True)
        run_training(overrides, run_dir)
        histories[seed] = read_history(run_dir, args.steps)
        runs[str(seed)] = {"run_dir": str(run_dir), "overrides": overrides,
                           "train_seconds": sum(e.get("step_time", 0.0)
                                                for e in histories[seed]),
                           "steps": histories[seed]}
        print(f"{game} seed {seed}: train.py done in {time.perf_counter() - started:.0f} s",
              flush=True)

    shown = panels(game, histories)
    labels = dict(shown)
    summary = summarize(histories, labels, args.window)
    seeds = " ".join(map(str, args.seeds))
    title = (f"{GAME_TITLES[game]}: train.py self-play, {len(args.seeds)} seeds ({seeds}), "
             f"{args.steps} steps")
    subtitle = " ".join(["python train.py", f"env={game}", "seed=<seed>",
                         f"trainer.max_steps={args.steps}", *shared_overrides(args.override)])
    curves = [(metric, label, *seed_curves(histories, metric)) for metric, label in shown]
    figure = args.results / f"learning_curve_{game}.png"
    draw_figure(title, subtitle, curves, figure)
    numbers = figure.with_suffix(".json")
    numbers.write_text(json.dumps({
        "game": game, "steps": args.steps, "seeds": args.seeds, "window": args.window,
        "overrides": args.override, "summary": summary, "runs": runs}, indent=1))
    print(summary_table(game, summary, labels))
    print(f"figure {figure}, numbers {numbers}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    for game in args.games:  # before any training: no run folder holds another configuration
        for seed in args.seeds:
            run_dir = (args.runs / game / f"seed{seed}").resolve()
            check_run_folder(run_dir, train_overrides(game, seed, args.steps, run_dir,
                                                      args.override))
    for game in args.games:
        learning_curve(game, args)


if __name__ == "__main__":
    main()
