"""Self-play GRPO: ``python train.py env=spy`` (or ``env=qa_duel``; Hydra, ``configs/train.yaml``).

Whenever the trainer needs rows for a step, the current policy plays a round of games
(:class:`trainers.selfplay.SelfPlay`); the game's recipe turns them into training rows for the
active stage — Iterative-SPO's clue or decision stage for the spy game, V-Zero's questioner or
solver for the duel — and TRL takes one GRPO step on them (:mod:`trainers.grpo`). Who plays is the
``agent`` group: ``transformers`` plays with the trained model object itself; ``vllm`` plays with
an in-process vLLM engine that gets the trained weights after every optimizer step;
``vllm_server`` plays through ``vllm serve`` processes that get them too (over NCCL, or by reloading
from disk on a CPU).

The run folder (``outputs/<env>``) holds the resolved config (``.hydra/``), ``train.log`` (every
run's log, appended: each step's metrics, any crash's traceback), TensorBoard logs
(``tensorboard/``: TRL's loss, KL, entropy and clip fractions with the games' ``selfplay/``
metrics), HTML replays (``replays/``), checkpoints (``checkpoints/``: safetensors and processor,
loadable by transformers and vLLM; LoRA adapters with ``model.lora``), the final model
(``final/``, adapters merged in) and ``evaluation.json`` (:mod:`trainers.evaluation`; sharded
runs evaluate afterwards with ``python -m trainers.evaluation RUN``). Rerunning the same command
resumes from the newest complete checkpoint (:mod:`trainers.checkpoints`: a kill mid-save leaves
one that is passed over): model, optimizer, scheduler, RNG, step, role baselines, the stage
machine, left-over rows and the policy's sampling seeds. ``accelerate launch train.py ...`` runs
data-parallel (README: Training).

``selfplay.models=separate`` (qa_duel) trains each role as a model of its own, V-Zero's loop:
phases of ``selfplay.cycle`` steps (``trainer.max_steps`` in all) take turns over the game's
:data:`~trainers.recipes.MODEL_PHASES` — the questioner against the solver, then the solver on
fresh answers labelled by its previous weights. A phase is a run of its own, in
``phase-NN-<model>/`` (log, checkpoints, resume, ``final/``), that trains one model from its
latest weights (at first ``model.path``) while the other seats play the other models' latest
weights, frozen; ``models.json`` names each model's latest folder. Every phase starts its
optimizer afresh, as V-Zero's phases do.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

import envs
from agents import Agent, make_agent
from agents.model import SamplingConfig, model_path
from agents.rollout import RolloutRunner
from envs.configs import store_env_configs
from trainers.config_checks import (
    ConfigError,
    check_sharded_training,
    check_train_config,
    sharding_from_launcher,
)
from trainers.evaluation import evaluate_training, evaluation_settings
from trainers.recipes import MODEL_PHASES, ModelPhase
from trainers.selfplay_config import SelfPlayConfig, store_selfplay_defaults

if TYPE_CHECKING:  # torch, transformers and TRL are imported once the config is checked
    from trainers.grpo import TrajectoryGRPOTrainer
    from trainers.selfplay import SelfPlay

log = logging.getLogger(__name__)
CONFIG_FILE = Path(__file__).parent / "configs" / "train.yaml"
POLICY_AGENTS = ("transformers", "vllm", "vllm_server")  # the backends make_policy plays with


def make_policy(agent: DictConfig, path: str, model: Any, processor: Any,
                sampling: SamplingConfig, one_engine_per_gpu: bool = False,
                ) -> tuple[Agent, bool, Callable[[], None] | None]:
    """The agent that plays the games (``agents.make_agent`` with the ``agent`` group's options),
    whether it needs the trained weights pushed into it after every step, and what to call once
    a step's games are played (or None). ``one_engine_per_gpu``: data-parallel processes on
    GPUs, each with a vLLM engine on its own GPU."""
    options = OmegaConf.to_container(agent, resolve=True)
    name = options.pop("name")
    if name == "transformers":  # plays with the trained model object itself
        options |= {"model": path, "model_object": model, "processor": processor}
    elif name == "vllm":  # an engine in this process, on this process's GPU
        options |= {"model": path, "in_process": True}
        if one_engine_per_gpu:  # else every engine takes GPU 0 (vLLM's single-process default);
            # this one reads its rank and GPU from the launcher's RANK and LOCAL_RANK
            options.setdefault("distributed_executor_backend", "external_launcher")
    elif name == "vllm_server":  # `vllm serve` processes elsewhere
        options["tokenizer"] = path
    else:
        raise ValueError(f"train.py plays with agent={' or agent='.join(POLICY_AGENTS)}, "
                         f"not {name!r}")
    policy = make_agent(name, sampling=sampling, **options)
    # asleep during the update, an engine drops its weights: the trainer pushes its own before
    # the next games (at the start of training and after every step: SyncRolloutWeights)
    sleep = functools.partial(policy.sleep, discard_weights=True) if options.get("sleep") else None
    return policy, name != "transformers", sleep


def build(cfg: DictConfig, out: Path, phase: PhaseSeating | None = None,
          ) -> tuple[TrajectoryGRPOTrainer, SelfPlay]:
    """The trainer and its self-play row source for a resolved ``train.yaml`` config, checked
    first: a bad value is a one-line :class:`ConfigError`, before anything heavy is imported.
    ``phase``: a phase of separate models (its stage, its frozen seats, the policy to reuse)."""
    check_train_config(cfg, config_file=CONFIG_FILE, agents=POLICY_AGENTS)
    try:  # checked now, used once training is over
        evaluation_settings(cfg)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    sharding = sharding_from_launcher(os.environ)
    check_sharded_training(sharding, cfg.agent.name, cfg.model.lora)
    import torch

    if sharding and (OmegaConf.select(cfg, "trainer.use_cpu", default=False)
                     or not torch.accelerator.is_available()):  # before TRL's 15 s of imports
        raise ConfigError(f"the launch asks for {sharding}, which accelerate runs on GPUs only "
                          f"(here it would start unsharded, unconnected processes): use "
                          f"configs/accelerate/ddp.yaml on a CPU")
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed

    from trainers.grpo import TrajectoryGRPOConfig, TrajectoryGRPOTrainer
    from trainers.log_metrics import LogMetrics
    from trainers.recipes import OneStage, make_recipe
    from trainers.selfplay import SaveSelfPlayState, SelfPlay
    from trainers.weight_sync import SyncRolloutWeights

    if phase is not None or "TENSORBOARD_LOGGING_DIR" not in os.environ:  # each phase its own
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")
    env_options = OmegaConf.to_container(cfg.env, resolve=True)
    selfplay_options = SelfPlayConfig(**OmegaConf.to_container(cfg.selfplay, resolve=True))
    recipe = make_recipe(envs.resolve(env_options["name"]), selfplay_options)
    if phase is not None:
        recipe = OneStage(recipe, phase.plan.stage)
    try:
        args = TrajectoryGRPOConfig(output_dir=str(out / "checkpoints"), seed=cfg.seed,
                                    **OmegaConf.to_container(cfg.trainer, resolve=True))
    except ValueError as error:  # TRL's checks across fields
        raise ConfigError(f"trainer: {error}") from None
    if sharding == "fsdp" and args.beta:  # TRL builds the reference model with device_map="auto"
        args.model_init_kwargs = {"device_map": None}  # under FSDP: spread over every GPU
    rank = args.process_index  # each data-parallel process plays its own games
    set_seed(cfg.seed + rank)

    path = model_path(cfg.model.path)
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, cfg.model.dtype))
    on_gpu = not args.use_cpu and torch.cuda.is_available()
    if on_gpu:  # the process's own GPU, current too: TRL's Triton kernels run on the current one
        torch.cuda.set_device(args.local_process_index)
        model.to(f"cuda:{args.local_process_index}")
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling, resolve=True),
                              seed=cfg.seed + rank)
    if phase is not None and phase.policy is not None:  # an engine of an earlier phase
        policy, pushes_weights, after_rollouts = phase.policy
    else:
        policy, pushes_weights, after_rollouts = make_policy(
            cfg.agent, path, model, processor, sampling,
            one_engine_per_gpu=on_gpu and args.world_size > 1)
    seats: Agent | dict[str, Agent] = policy
    if phase is not None:
        phase.policy = (policy, pushes_weights, after_rollouts) if pushes_weights else None
        seats = {**phase.frozen, phase.plan.plays: policy}

    if on_gpu:  # the engine's start-up may have made another GPU current
        torch.cuda.set_device(args.local_process_index)
        log.info("process %d: GPU %d, model on %s", rank, torch.cuda.current_device(),
                 next(model.parameters()).device)

    runner = RolloutRunner(lambda: envs.make(**env_options), seats,
                           parallel_games=selfplay_options.games_per_round)
    selfplay = SelfPlay(runner, recipe, selfplay_options.games_per_round,
                        seed=(cfg.seed * args.world_size + rank) * 1_000_000_000,
                        after_rollouts=after_rollouts,
                        asynchronous=selfplay_options.asynchronous,
                        max_policy_lag=selfplay_options.max_policy_lag,
                        rounds_per_stage=selfplay_options.rounds_per_stage,
                        replays=out / "replays" if rank == 0 else None)
    # the push waits for games still being played (asynchronous play) before the weights change
    callbacks = [SyncRolloutWeights(policy, before_push=selfplay.wait_for_rollouts)
                 ] if pushes_weights else []

    def step_metrics() -> dict[str, float]:  # the games' and the previous weight push's
        return selfplay.metrics | (callbacks[0].metrics if callbacks else {})

    lora = None
    if cfg.model.lora:
        from peft import LoraConfig

        lora = LoraConfig(task_type="CAUSAL_LM", **OmegaConf.to_container(cfg.model.lora))
    trainer = TrajectoryGRPOTrainer(model, processor, args, rows=selfplay,
                                    metrics=step_metrics, peft_config=lora,
                                    callbacks=[SaveSelfPlayState(selfplay), LogMetrics(),
                                               *callbacks])
    if trainer.accelerator.num_processes > 1:
        selfplay.share = functools.partial(mean_over_processes, trainer.accelerator)
    return trainer, selfplay


def save_final_model(trainer: TrajectoryGRPOTrainer, folder: Path, lora: bool) -> None:
    """The trained model as plain weights (LoRA merged in) that transformers and vLLM load, with
    the processor, written by process 0. Sharded weights (FSDP2, ZeRO-3) are gathered first, by
    every process (a collective call)."""
    state_dict = None
    if trainer.is_deepspeed_enabled:  # the DeepSpeed engine gathers
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    elif trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.args.process_index == 0:
        model = trainer.accelerator.unwrap_model(trainer.model)
        model = model.merge_and_unload() if lora else model
        model.save_pretrained(str(folder), state_dict=state_dict)
        trainer.processing_class.save_pretrained(str(folder))


def mean_over_processes(accelerator: Any, statistics: dict[str, float]) -> dict[str, float]:
    """Each statistic averaged over the data-parallel processes (so all switch stage alike)."""
    import torch

    names = sorted(statistics)
    values = torch.tensor([statistics[name] for name in names], device=accelerator.device)
    return dict(zip(names, accelerator.reduce(values, reduction="mean").tolist(), strict=True))


def report_errors(task: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """A bad config ends the job with one line on stderr and in the job's log, exit status 2, no
    traceback; any other exception is logged with its traceback (so that ``train.log`` holds it),
    then raised."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> None:
        try:
            task(cfg)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            log_to_file_only(logging.ERROR, f"config error: {error}")
            sys.exit(2)
        except Exception:
            log.exception("training failed")
            raise

    return run


def log_to_file_only(level: int, message: str) -> None:
    """``message`` in the job's log file (Hydra's file handler), not a second time on the
    console."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


store_env_configs()  # env=<name> for every registered game, from its config dataclass
store_selfplay_defaults()  # selfplay.*, from trainers.selfplay_config.SelfPlayConfig


class PhaseSeating:
    """Who plays in a phase of separate models: the phase's plan, an agent for each frozen seat,
    and the policy agent kept from the previous phase if it takes pushed weights (a vLLM engine
    is built once and gets each phase's model)."""

    def __init__(self, plan: ModelPhase, frozen: dict[str, Agent],
                 policy: tuple[Agent, bool, Callable[[], None] | None] | None):
        self.plan, self.frozen, self.policy = plan, frozen, policy


class FrozenModels:
    """One playing agent per model that a phase does not train, holding that model's latest
    weights: built again when they change (``agent=vllm``: an engine in a process of its own,
    the previous one stopped)."""

    def __init__(self, agent: DictConfig, sampling: SamplingConfig):
        self.options, self.sampling = OmegaConf.to_container(agent, resolve=True), sampling
        self._agents: dict[str, tuple[Path, Agent]] = {}

    def agent(self, model: str, weights: Path) -> Agent:
        held = self._agents.get(model)
        if held is not None and held[0] == weights:
            return held[1]
        if held is not None and hasattr(held[1], "close"):
            held[1].close()
        options = dict(self.options)
        agent = make_agent(options.pop("name"), model=str(weights), sampling=self.sampling,
                           **options)
        self._agents[model] = (weights, agent)
        return agent


def train_models_apart(cfg: DictConfig, out: Path) -> None:
    """``selfplay.models=separate``: the phases of the game's two-model loop, each a run of its
    own (see the module docstring)."""
    game = envs.resolve(cfg.env.name)
    if game not in MODEL_PHASES:
        raise ConfigError(f"selfplay.models=separate: env={cfg.env.name} has no two-model loop "
                          f"(games with one: {', '.join(MODEL_PHASES)}); use "
                          f"selfplay.models=shared")
    if cfg.agent.name not in ("transformers", "vllm") or sharding_from_launcher(os.environ):
        raise ConfigError("selfplay.models=separate plays the frozen models in the training "
                          "processes: agent=transformers or agent=vllm, unsharded (DDP at most)")
    plans = MODEL_PHASES[game](SelfPlayConfig(**OmegaConf.to_container(cfg.selfplay,
                                                                       resolve=True)))
    steps, cycle = cfg.trainer.max_steps, cfg.selfplay.cycle
    latest = {plan.model: Path(model_path(cfg.model.path)) for plan in plans}
    rank = int(os.environ.get("RANK", 0))
    frozen = FrozenModels(cfg.agent, SamplingConfig(**OmegaConf.to_container(cfg.sampling),
                                                    seed=cfg.seed + rank))
    policy = None
    for number, first in enumerate(range(0, steps, cycle)):
        plan = plans[number % len(plans)]
        folder = out / f"phase-{number + 1:02d}-{plan.model}"
        if not (folder / PHASE_DONE).is_file():
            phase_cfg = phase_config(cfg, plan, latest[plan.model], min(cycle, steps - first),
                                     seed=cfg.seed + number)
            seating = PhaseSeating(plan, {seat: frozen.agent(model, latest[model])
                                          for seat, model in plan.frozen.items()}, policy)
            log.info("phase %d: %s trains %s (%s) from %s", number + 1, plan.model,
                     plan.stage, plan.plays, latest[plan.model])
            trainer, _ = train_and_save(phase_cfg, folder, seating)
            policy = seating.policy
            if trainer.args.process_index == 0:
                (folder / PHASE_DONE).write_text("{}")
            trainer.accelerator.wait_for_everyone()
            del trainer
        latest[plan.model] = folder / "final"
    models = {model: str(path.relative_to(out)) if path.is_relative_to(out) else str(path)
              for model, path in latest.items()}
    if rank == 0:
        (out / "models.json").write_text(json.dumps(models, indent=2))
    log.info("done: the models' latest weights: %s", models)


PHASE_DONE = "phase_complete"


def phase_config(cfg: DictConfig, plan: ModelPhase, weights: Path, steps: int,
                 seed: int) -> DictConfig:
    """``cfg`` for one phase: its model's latest weights, its steps, the game options of its
    plan and its own seed (each phase plays other games); no evaluation."""
    phase = cfg.copy()
    phase.model.path, phase.trainer.max_steps, phase.seed = str(weights), steps, seed
    phase.evaluation.games = 0
    for key, value in plan.env.items():
        phase.env[key] = value
    return phase


def train_and_save(cfg: DictConfig, out: Path, phase: PhaseSeating | None = None,
                   ) -> tuple[TrajectoryGRPOTrainer, SelfPlay]:
    """Trains (or resumes) the run in ``out`` and saves its model in ``out/final``."""
    trainer, selfplay = build(cfg, out, phase)  # checks the config before importing torch
    from trainers.checkpoints import train_or_resume

    step = train_or_resume(trainer, selfplay)  # from the newest complete checkpoint, if any
    if step < trainer.args.max_steps:  # transformers only warns
        raise RuntimeError(f"training stopped at step {step} of {trainer.args.max_steps}")
    save_final_model(trainer, out / "final", lora=bool(cfg.model.lora))
    if selfplay.after_rollouts is not None:  # no more games: the engine's memory back (sleep)
        selfplay.after_rollouts()
    return trainer, selfplay


@hydra.main(version_base=None, config_path="configs", config_name="train")
@report_errors
def main(cfg: DictConfig) -> None:
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    if cfg.agent.name == "transformers":
        # TRL imports vLLM whenever it is installed (7 of the 20 s of imports on 2 cores); this
        # process plays with transformers and goes without it: TRL then finds no vLLM
        sys.modules.setdefault("vllm", None)
    if cfg.selfplay.models == "separate":
        check_train_config(cfg, config_file=CONFIG_FILE, agents=POLICY_AGENTS)
        train_models_apart(cfg, out)
        return
    trainer, selfplay = train_and_save(cfg, out)
    if sharding_from_launcher(os.environ):
        if trainer.args.process_index == 0 and evaluation_settings(cfg)[0]:
            log.info("evaluation: sharded training keeps its GPU memory until its processes "
                     "end; evaluate the final model afterwards with: python -m "
                     "trainers.evaluation %s", out)
    elif trainer.args.process_index == 0:  # the saved model, as a user loads it
        import torch
        from transformers import AutoModelForImageTextToText

        trainer.release_training_state()  # the evaluation loads two whole models on this GPU
        final = AutoModelForImageTextToText.from_pretrained(
            out / "final", dtype=getattr(torch, cfg.model.dtype))
        final.to(trainer.accelerator.device)
        evaluate_training(cfg, final, trainer.processing_class, out)  # evaluation.json
    trainer.accelerator.wait_for_everyone()  # while rank 0 evaluates
    log.info("done: %d games played; model in %s", selfplay.games_played, out / "final")


if __name__ == "__main__":
    main()
