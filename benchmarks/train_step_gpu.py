"""What a self-play GRPO step costs on one GPU: rollouts on a colocated vLLM engine, the update.

    python benchmarks/train_step_gpu.py --shape 7b   # Qwen2-VL-7B-shaped, LoRA (r 64, all linear)
    python benchmarks/train_step_gpu.py --shape 3b   # 3B-shaped language model, full fine-tuning
    python benchmarks/train_step_gpu.py --games 128 --steps 2 --gradient-checkpointing off
    python benchmarks/train_step_gpu.py --profile /tmp/train-profile.txt  # where GPU time goes
    python benchmarks/train_step_gpu.py --games 32 --round-games 128 --max-policy-lag 3 --steps 6

It runs train.py's own trainer (``train.build`` on the Hydra config: ``agent=vllm`` with sleep mode,
``trainer=gpu``) on spy games for ``--steps`` steps with the stages alternating (decision, clue,
...), so both stages are timed. The model has the real model's shape and random weights: saved
once to ``--model-folder`` for the trainer, while vLLM builds dummy weights and receives the
trainer's at the start, as after every step. The tiny tokenizer cannot decode the big vocabulary,
so completions are fixed-length (``ignore_eos``, ``--max-tokens``) and not detokenised: every move
is an invalid move, which costs the games nothing in speed.

A step trains as many rows as ``--games`` games give clue turns (8 a game; a decision step with
the civilians' 3 votes a game plays three rounds; a clue step may use the rows a decision step's
games left).
``--round-games`` plays more games a round than a step needs, ahead of the steps that take their
rows (up to ``--max-policy-lag`` steps later; selfplay.max_policy_lag).
Printed per step: stage, games played, rows trained, seconds in rollouts (of them, putting the
engine to sleep) and in the update (the weight push to vLLM included) and, of the update, in
scoring the rows before the step (the reference model's log-probs, the images' pixels), and the
peak GPU memory in use (all processes' allocations, sampled every 20 ms), then each round's games
and seconds. From them: rollout seconds per game (the rounds after the first, a warm-up; a
decision step with the civilians' votes plays three) and per playing step outside its rounds
(the sleep, the rows; the playing steps after the first if any), update seconds per row (the
steps after the first), and the projection for Vision-Zero's CLEVR recipe — 100 iterations of
128 four-player games, a step playing one round and training 8 rows a game in the clue stage
and, in the decision stage, as many as the game's vote gives (``--decision``: the recipe's
observer samples 8 votes, the paper's three civilians vote once each) — against the paper's 127
A100-hours. The rollout seconds a game are those of the vote played: an observer's 8 votes cost
more than 3 civilians'. ``--profile`` records the steps after the first.
"""

from __future__ import annotations

import argparse
import runpy
import shutil
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from profile_summary import profiled
from shapes import saved_shaped_model
from transformers import TrainerCallback

from games.spy import SpyConfig

ROOT = Path(__file__).resolve().parent.parent
#: train.py's ``build``, loaded from its file (a script, not an installed module)
build = runpy.run_path(str(ROOT / "train.py"))["build"]
LORA = {"7b": True, "3b": False}  # LoRA on the 7B shape, full fine-tuning of the 3B
PAPER_A100_HOURS = 127
SPY = SpyConfig()  # the spy game as the benchmark plays it (its vote aside)
CLUE_ROWS = SPY.num_players * SPY.num_rounds  # rows a game gives a clue step
#: rows a game gives a decision step, by env.decision: the observer's samples, the civilians' votes
DECISION_ROWS = {"observer": SPY.observer_samples, "civilians": SPY.num_players - SPY.num_spies}


class PeakMemory:
    """The most GPU memory in use (``total - free``, every process) since the last reset."""

    def __init__(self, every: float = 0.02):
        self.peak, self.every = 0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            time.sleep(self.every)

    def reset(self) -> int:
        peak, self.peak = self.peak, 0
        return peak

    def stop(self) -> None:
        """Ends the polling: a thread still calling CUDA while the interpreter exits aborts it
        ("terminate called without an active exception", exit 134)."""
        self._stop.set()
        self._thread.join()


class StepTimer(TrainerCallback):
    """Per step: seconds in all, inside the row source (rollouts: its rounds, the engine's
    sleep), in scoring the rows (rollouts excluded), games, memory; and every round played."""

    def __init__(self, trainer: Any, selfplay: Any, memory: PeakMemory):
        self.selfplay, self.memory, self.steps = selfplay, memory, []
        self.rounds: list[tuple[int, float]] = []  # (games, seconds) of every round played
        self.rollout_seconds = self.scoring_seconds = self.sleep_seconds = self.round_seconds = 0.0
        rows, score = trainer.rows, trainer._generate_and_score_completions
        play_round, sleep = selfplay._play_round, selfplay.after_rollouts

        def timed_round(*args: Any) -> Any:
            played = play_round(*args)
            self.rounds.append((played.games, played.seconds))
            self.round_seconds += played.seconds
            return played

        def timed_rows(count: int) -> Any:
            started, games = time.perf_counter(), selfplay.games_played
            out = rows(count)
            seconds = time.perf_counter() - started
            self.rollout_seconds += seconds
            self.stage = out[0].turn.phase
            print(f"rollouts: {selfplay.games_played - games} games in {seconds:.1f} s",
                  flush=True)  # before the update, in case a time limit cuts the run
            return out

        def timed_scoring(inputs: Any) -> Any:
            started, rollouts = time.perf_counter(), self.rollout_seconds
            out = score(inputs)
            torch.cuda.synchronize()
            self.scoring_seconds += (time.perf_counter() - started
                                     - (self.rollout_seconds - rollouts))
            return out

        def timed_sleep() -> None:
            started = time.perf_counter()
            sleep()
            self.sleep_seconds += time.perf_counter() - started

        trainer.rows, trainer._generate_and_score_completions = timed_rows, timed_scoring
        selfplay._play_round, selfplay.after_rollouts = timed_round, timed_sleep

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.games = time.perf_counter(), self.selfplay.games_played
        self.rollout_seconds = self.scoring_seconds = self.sleep_seconds = self.round_seconds = 0.0
        self.memory.reset()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        seconds = time.perf_counter() - self.started
        games = self.selfplay.games_played - self.games
        self.steps.append({"step": state.global_step, "stage": self.stage, "games": games,
                           "rows": args.per_device_train_batch_size
                           * args.gradient_accumulation_steps,
                           "rollout_s": self.rollout_seconds, "rounds_s": self.round_seconds,
                           "sleep_s": self.sleep_seconds,
                           "update_s": seconds - self.rollout_seconds,
                           "scoring_s": self.scoring_seconds,
                           "peak_gib": self.memory.reset() / 2**30})
        print(self.steps[-1], flush=True)


class ProfileLaterSteps(TrainerCallback):
    """Profiles (:func:`profile_summary.profiled`) every step after the first, a warm-up."""

    def __init__(self, path: Path):
        self.path, self.profile = path, ExitStack()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 1:
            self.profile.enter_context(profiled(self.path))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.profile.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(LORA), default="7b")
    parser.add_argument("--games", type=int, default=32, help="games whose clues a step trains")
    parser.add_argument("--round-games", type=int, default=None,
                        help="games a round (default --games): more plays ahead")
    parser.add_argument("--max-policy-lag", type=int, default=1,
                        help="selfplay.max_policy_lag: steps a row may wait")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--scoring-batch", type=int, default=None,
                        help="trainer.scoring_batch_size: rows a no-grad pass runs at once "
                             "(default: trainer=gpu's)")
    parser.add_argument("--gradient-checkpointing", choices=["on", "off"], default="on",
                        help="recompute activations in the backward pass (less memory)")
    parser.add_argument("--gpu-memory", type=float, default=0.4,
                        help="vLLM's gpu_memory_utilization")
    parser.add_argument("--prompt-layout", choices=["seat_first", "shared_first"],
                        default="seat_first", help="the spy game's prompt layout")
    parser.add_argument("--decision", choices=sorted(DECISION_ROWS), default="observer",
                        help="the spy game's vote (env.decision): the recipe's or the paper's")
    parser.add_argument("--model-folder", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zeroplay-train-step"))
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a profile summary of the steps after the first")
    args = parser.parse_args()
    folder = saved_shaped_model(args.shape,
                                args.model_folder or Path(f"/tmp/zeroplay-{args.shape}"))
    rows, round_games = CLUE_ROWS * args.games, args.round_games or args.games
    if rows % args.micro_batch:
        raise SystemExit(f"{CLUE_ROWS} x --games ({rows}) must be a multiple of --micro-batch")
    # the language model's linear layers (Qwen2-VL's vision tower names its own differently)
    lora = ("+model.lora={r: 64, lora_alpha: 128, target_modules: "
            "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}")
    overrides = [
        "env=spy", f"env.prompt_layout={args.prompt_layout}", f"env.decision={args.decision}",
        f"model.path={folder}",
        "model.dtype=bfloat16", "agent=vllm",
        "agent.sleep=true", "+agent.load_format=dummy",
        f"+agent.gpu_memory_utilization={args.gpu_memory}",
        "+agent.sampling_options.ignore_eos=true", "+agent.sampling_options.detokenize=false",
        f"sampling.max_tokens={args.max_tokens}", "trainer=gpu",
        f"trainer.max_steps={args.steps}", "+trainer.save_strategy=no", "trainer.report_to=none",
        f"trainer.per_device_train_batch_size={args.micro_batch}",
        f"trainer.gradient_checkpointing={args.gradient_checkpointing == 'on'}",
        f"trainer.gradient_accumulation_steps={rows // args.micro_batch}",
        f"selfplay.games_per_round={round_games}",
        f"selfplay.max_policy_lag={args.max_policy_lag}", "selfplay.schedule=alternate",
    ] + ([lora] if LORA[args.shape] else [])
    if args.scoring_batch:
        overrides.append(f"trainer.scoring_batch_size={args.scoring_batch}")
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    trainer, selfplay = build(cfg, args.out)
    memory = PeakMemory()
    timer = StepTimer(trainer, selfplay, memory)
    trainer.add_callback(timer)
    print(f"set-up (model load, vLLM start): {time.perf_counter() - started:.0f} s")
    if args.profile:
        trainer.add_callback(ProfileLaterSteps(args.profile))
    trainer.train()
    memory.stop()

    print(f"\n{args.shape}-shaped, {'LoRA' if LORA[args.shape] else 'full'}, "
          f"{round_games} games a round, max policy lag "
          f"{args.max_policy_lag}, {args.max_tokens} tokens a turn, {rows} rows a step, "
          f"micro-batch {args.micro_batch} (scoring "
          f"{cfg.trainer.scoring_batch_size or args.micro_batch}), "
          f"gradient checkpointing {args.gradient_checkpointing}")
    print(f"{'step':>4} {'stage':>9} {'games':>5} {'rows':>5} {'rollout s':>9} "
          f"{'of it sleep s':>13} {'update s':>8} {'of it scoring s':>15} {'peak GiB':>8}")
    for s in timer.steps:
        print(f"{s['step']:>4} {s['stage']:>9} {s['games']:>5} {s['rows']:>5} "
              f"{s['rollout_s']:>9.1f} {s['sleep_s']:>13.1f} {s['update_s']:>8.1f} "
              f"{s['scoring_s']:>15.1f} {s['peak_gib']:>8.1f}")
    print("rounds (games, seconds): "
          + ", ".join(f"{games} {seconds:.1f}" for games, seconds in timer.rounds))
    # the rounds after the first (a warm-up: the engine's first requests), or all if it was alone
    warm = timer.rounds[1:] or timer.rounds
    per_game = sum(seconds for _, seconds in warm) / sum(games for games, _ in warm)
    # what a step that plays spends outside its rounds (the engine's sleep, the rows'
    # advantages): the playing steps after the first, or the first if none after it played
    playing = [s for s in timer.steps[1:] if s["games"]] or timer.steps[:1]
    outside = sum(s["rollout_s"] - s["rounds_s"] for s in playing) / len(playing)
    sleep = sum(s["sleep_s"] for s in playing) / len(playing)
    # the update: the steps after the first (a warm-up), or the first if it was alone
    timed = timer.steps[1:] or timer.steps
    per_row = sum(s["update_s"] for s in timed) / sum(s["rows"] for s in timed)
    print(f"rollouts {per_game:.3f} s a game (rounds after the first) and {outside:.1f} s a step "
          f"outside the rounds (of it, the engine's sleep {sleep:.1f}); updates {per_row:.3f} s "
          f"a row (weight push to vLLM included); peak GPU memory "
          f"{max(s['peak_gib'] for s in timer.steps):.1f} GiB")
    for stage, rows_a_game, target in (("decision", DECISION_ROWS[args.decision], 2.5),
                                       ("clue", CLUE_ROWS, 4)):
        step = 128 * (per_game + rows_a_game * per_row) + outside
        print(f"projection, {stage} stage ({args.decision} vote): a step of 128 games = "
              f"{step:.0f} s; 100 steps = "
              f"{100 * step / 3600:.1f} {torch.cuda.get_device_name()} GPU-hours (target <= "
              f"{target}; the paper: {PAPER_A100_HOURS} A100-hours in all)")


if __name__ == "__main__":
    main()
