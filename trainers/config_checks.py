"""Checks of ``train.py``'s resolved Hydra config, made before torch, transformers or TRL are
imported: a bad value is a :class:`ConfigError` of one line that names the key, the value and what
is allowed.

- ``model``: ``path`` is null (the tiny player), ``tiny-random``, a local folder holding a
  ``config.json`` or a hub id ``owner/name`` (downloaded on the machine that trains); ``dtype``;
  ``lora`` a mapping or null.
- ``trainer``: every field is one of the installed TRL's ``GRPOConfig`` (read from its source,
  :mod:`trainers.grpo_fields`) or :class:`trainers.grpo.TrajectoryGRPOConfig`'s own
  (``importance_cap``, ``scoring_batch_size``); an unknown one is named with the closest field
  names; each of the type its annotation allows and, for the fields train.py relies on, in
  range.
- ``selfplay``, ``sampling`` (:class:`agents.model.SamplingConfig`'s own checks), ``seed``,
  ``agent`` (the policy's backend and its config file's options) and ``env`` (the game's config
  class checks its options: :func:`envs.registry.configure`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import math
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agents.model import EMBEDDED_MODELS, SamplingConfig
from envs.registry import configure, registered, resolve
from games.checks import check_int
from trainers.grpo_fields import GRPOField, grpo_config_fields
from trainers.selfplay_config import TINY_PLAYER_SWITCH, SelfPlayConfig


class ConfigError(ValueError):
    """A bad value in the training config; its message is one line that names the key."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


#: ``model.dtype``'s values: names of torch dtypes.
DTYPES = ("float32", "bfloat16", "float16")
#: A hub model id: ``owner/name``.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
#: Trainer fields that train.py sets itself, and what to set instead.
SET_BY_TRAIN = {"output_dir": "hydra.run.dir (checkpoints go to its checkpoints/ folder)",
                "seed": "the top-level seed",
                "num_generations": "the games' own groups (selfplay.repeats, the spy's roles, "
                                   "selfplay.questions_per_image)"}
#: Fields that :class:`trainers.grpo.TrajectoryGRPOConfig` adds to TRL's ``GRPOConfig``.
TRAJECTORY_FIELDS = {
    "importance_cap": GRPOField("importance_cap", "float", frozenset({"float"})),
    "scoring_batch_size": GRPOField("scoring_batch_size", "int | None",
                                    frozenset({"int", "None"})),
}
#: Ranges of the trainer fields train.py relies on (their types come from ``GRPOConfig``).
#: ``*_steps`` below 1 are fractions of ``max_steps`` (transformers' rule).
TRAINER_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "learning_rate": ("> 0", lambda value: value > 0),
    "max_steps": (">= 1", lambda value: value >= 1),
    "per_device_train_batch_size": (">= 1", lambda value: value >= 1),
    "gradient_accumulation_steps": (">= 1", lambda value: value >= 1),
    "importance_cap": (">= 1", lambda value: value >= 1),
    "scoring_batch_size": (">= 1", lambda value: value >= 1),
    "beta": (">= 0", lambda value: value >= 0),
    "epsilon": ("> 0", lambda value: value > 0),
    "warmup_steps": (">= 0", lambda value: value >= 0),
    "logging_steps": ("> 0, and whole when >= 1", lambda value: _steps(value)),
    "save_steps": ("> 0, and whole when >= 1", lambda value: _steps(value)),
    "weight_decay": (">= 0", lambda value: value >= 0),
    "max_grad_norm": (">= 0", lambda value: value >= 0),
}
#: The agent options of ``configs/agent/*.yaml``: positive integers and booleans.
AGENT_COUNTS = ("batch_size", "max_model_len", "max_images", "chunk_mb", "group_port")
AGENT_FLAGS = ("enforce_eager", "sleep")
#: The backends that play on other GPUs or machines, so that games can go on during an update.
REMOTE_AGENTS = ("vllm_server",)
#: Iterative-SPO's moving-average rate and thresholds (``selfplay.switch``).
SWITCH_KEYS = tuple(TINY_PLAYER_SWITCH)


def check_train_config(cfg: DictConfig, *, config_file: Path, agents: Collection[str]) -> None:
    """Raise a :class:`ConfigError` for the first bad value of ``cfg``, composed from
    ``config_file``; ``agents`` are the backends train.py plays with."""
    try:
        options = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{_first_line(error)} (key {error.full_key})") from None
    _check_keys("", options, primary_keys(config_file))
    check_int_value("seed", options["seed"], 0)
    check_model(options["model"])
    check_trainer(options["trainer"])
    check_selfplay(options["selfplay"])
    check_sampling(options["sampling"])
    check_agent(options["agent"], agents)
    check_env(options["env"])
    check_fidelity(options.get("fidelity", "paper"), options["env"]["name"],
                   config_file.parent / "fidelity" / "game")
    if options["selfplay"]["asynchronous"] and options["agent"]["name"] not in REMOTE_AGENTS:
        raise ConfigError(f"selfplay.asynchronous plays the next games during the update, which "
                          f"needs a policy served elsewhere (agent={REMOTE_AGENTS[0]}), not "
                          f"agent={options['agent']['name']}")


def check_fidelity(fidelity: str, env: str, presets: Path) -> None:
    """``fidelity=released`` needs the game's released-code preset in ``presets``."""
    if fidelity == "released" and not (presets / f"{env}_released.yaml").is_file():
        known = sorted(path.stem.removesuffix("_released") for path in presets.glob("*.yaml"))
        raise ConfigError(f"fidelity=released: no released-code preset for env={env} "
                          f"(presets: {', '.join(known)}; configs/fidelity/game/)")


def primary_keys(config_file: Path) -> list[str]:
    """The top-level keys of a primary config: its own, its defaults list's groups
    (``optional recipe: ...`` is ``recipe``) and the packages of its configs (``name@package``)."""
    config = OmegaConf.load(config_file)
    merged = [next(iter(entry)).removeprefix("optional ") if isinstance(entry, Mapping)
              else entry.partition("@")[2] for entry in config.get("defaults", [])]
    return [key for key in merged if key] + [key for key in config
                                             if key not in ("defaults", "hydra")]


def check_model(model: dict[str, Any]) -> None:
    """``model.path``, ``model.dtype`` and ``model.lora``."""
    _check_keys("model", model, ("path", "dtype", "lora"), required=("path", "dtype"))
    check_model_path(model["path"])
    if model["dtype"] not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {list(DTYPES)}, got {model['dtype']!r}")
    lora = model.get("lora")
    if lora is not None and not isinstance(lora, Mapping):
        raise ConfigError(f"model.lora must be null or a mapping of peft LoraConfig fields, e.g. "
                          f"{{r: 16, lora_alpha: 32, target_modules: all-linear}}; got {lora!r}")


def check_model_path(path: Any) -> None:
    """Null (the tiny player), an embedded model's name, a model folder (with a config.json) or
    a hub id."""
    allowed = ("allowed: null (the tiny player), 'tiny-random' (the random tiny model), a local "
               "model folder holding a config.json, or a hub id 'owner/name' such as "
               "'Qwen/Qwen2.5-VL-3B-Instruct' (downloaded from the hub by the machine that trains)")
    if path is None or path in EMBEDDED_MODELS:
        return
    if not isinstance(path, str) or not path:
        raise ConfigError(f"model.path={path!r} is not a folder or a hub id; {allowed}")
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.path={path!r} is a folder without a config.json, not a "
                              f"saved model; {allowed}")
    elif folder.exists():
        raise ConfigError(f"model.path={path!r} is a file, not a model folder; {allowed}")
    elif not HUB_ID.fullmatch(path):
        tilde = " ('~' is not expanded: give the full path)" if path.startswith("~") else ""
        raise ConfigError(f"model.path={path!r}: no such folder here{tilde}, and not a hub id; "
                          f"{allowed}")


def check_trainer(trainer: dict[str, Any]) -> None:
    """Each ``trainer.*`` option: a field of the installed TRL's ``GRPOConfig``, of its type, in
    range."""
    fields = grpo_config_fields() | TRAJECTORY_FIELDS
    for name, value in trainer.items():
        if name in SET_BY_TRAIN:
            raise ConfigError(f"trainer.{name} is set by train.py; use {SET_BY_TRAIN[name]}")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
            hint = (f"closest field names: {', '.join(close)}" if close
                    else "see TRL's GRPOConfig and transformers' TrainingArguments")
            raise ConfigError(f"trainer.{name}={value!r}: not a field of GRPOConfig (trl "
                              f"{importlib.metadata.version('trl')}); {hint}")
        field = fields[name]
        if not field.accepts(value):
            raise ConfigError(f"trainer.{name} must be {field.describe()} (GRPOConfig: {name}: "
                              f"{field.annotation}), got {value!r}")
        if name in TRAINER_RANGES and value is not None:
            bound, in_range = TRAINER_RANGES[name]
            if not (math.isfinite(value) and in_range(value)):
                raise ConfigError(f"trainer.{name} must be {bound}, got {value!r}")


def check_selfplay(selfplay: dict[str, Any]) -> None:
    """The self-play row source's and the recipes' options (:class:`SelfPlayConfig`)."""
    keys = SelfPlayConfig.keys()
    _check_keys("selfplay", selfplay, keys, required=keys)
    if isinstance(selfplay["switch"], dict):
        _check_keys("selfplay.switch", selfplay["switch"], SWITCH_KEYS, required=SWITCH_KEYS)
    _construct("selfplay", SelfPlayConfig, selfplay)


def check_sampling(sampling: dict[str, Any]) -> None:
    """How the policy samples: :class:`SamplingConfig`'s checks (its seed comes from ``seed``)."""
    names = [field.name for field in dataclasses.fields(SamplingConfig) if field.name != "seed"]
    _check_keys("sampling", sampling, names)
    _construct("sampling", SamplingConfig, sampling)


def check_agent(agent: dict[str, Any], agents: Collection[str]) -> None:
    """The policy's backend (one of ``agents``) and the options its config file sets."""
    name = agent.get("name")
    if name not in agents:
        choices = " or ".join(f"agent={choice}" for choice in agents)
        raise ConfigError(f"agent.name must be one of {list(agents)} (train.py plays with "
                          f"{choices}), got {name!r}")
    for option in AGENT_COUNTS:
        if option in agent:
            check_int_value(f"agent.{option}", agent[option], 1)
    for option in AGENT_FLAGS:
        if option in agent and not isinstance(agent[option], bool):
            raise ConfigError(f"agent.{option} must be true or false, got {agent[option]!r}")
    if name == "vllm_server":
        from agents.vllm_server_agent import check_options

        try:
            check_options(agent.get("base_urls"), agent.get("transport", "auto"),
                          agent.get("chunk_mb", 1))
        except ValueError as error:
            raise ConfigError(f"agent.{error}") from None


def check_env(env: dict[str, Any]) -> None:
    """The game (a registered name, or ``module:name`` whose module registers it) and its
    options (the game's config)."""
    options = dict(env)
    name = options.pop("name", None)
    try:
        registered_name = resolve(name)
    except KeyError as error:
        raise ConfigError(f"env.name: {error.args[0]}") from None
    if registered_name not in registered():
        raise ConfigError(f"env.name must be a registered environment {registered()} or "
                          f"'module:name' (the module registers name), got {name!r}")
    _construct("env", lambda **given: configure(name, **given), options)


def check_int_value(key: str, value: Any, minimum: int) -> None:
    """An integer >= ``minimum`` (:func:`games.checks.check_int`), as a :class:`ConfigError`."""
    _checked(check_int, key, value, minimum)


def _checked(check: Callable[..., Any], *arguments: Any) -> None:
    """Run one of :mod:`games.checks` (its messages name the key); its error as a ConfigError."""
    try:
        check(*arguments)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _construct(group: str, make: Callable[..., Any], options: dict[str, Any]) -> None:
    """Build a config object from a group's options, so that its own checks run; their message
    (``num_players must be ...``) becomes ``env.num_players must be ...``."""
    try:
        make(**options)
    except (TypeError, ValueError) as error:
        message = _first_line(error)
        first_word = re.match(r"\w+", message)
        named = first_word is not None and first_word.group() in options
        raise ConfigError(f"{group}.{message}" if named else f"{group}: {message}") from None


def _check_keys(group: str, options: dict[str, Any], known: Collection[str],
                required: Collection[str] = ()) -> None:
    """Refuse a key not in ``known`` (naming the closest ones) or a missing required one."""
    prefix = f"{group}." if group else ""
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"closest: {', '.join(close)}; " if close else ""
            raise ConfigError(f"{prefix}{key} is not an option of train.py's config ({hint}"
                              f"{group or 'top level'} options: {', '.join(known)})")
    missing = [key for key in required if key not in options]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]} is missing from the config")


def _steps(value: float) -> bool:
    """A step interval: a whole number of steps, or a fraction of ``max_steps`` below 1."""
    return 0 < value < 1 or (value >= 1 and float(value).is_integer())


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def sharding_from_launcher(environ: Mapping[str, str]) -> str | None:
    """How ``accelerate launch`` shards the model, from the variables it sets: ``"fsdp"``
    (FSDP2), ``"zero3"`` (DeepSpeed ZeRO-3) or None (every process holds the whole model: DDP,
    ZeRO-1/2). FSDP1 is refused: its flat parameters cannot be gathered for the weight push."""
    if environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        if environ.get("FSDP_VERSION", "1") != "2":
            raise ConfigError("FSDP needs fsdp_version: 2 (FSDP2) here: launch with "
                              "--config_file configs/accelerate/fsdp.yaml")
        return "fsdp"
    if (environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
            and environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"):
        return "zero3"
    return None


def check_sharded_training(sharding: str | None, agent: str, lora: Any) -> None:
    """What sharded training (FSDP2, ZeRO-3) cannot do here: play with the trained model object
    itself (each process holds a shard; their generations would have to run in lockstep), or
    merge LoRA adapters into sharded layers for the push."""
    if sharding is None:
        return
    if agent == "transformers":
        raise ConfigError(f"agent=transformers plays with the trained model itself, which "
                          f"{sharding} shards over the processes: use agent=vllm (or "
                          f"vllm_server), whose engines get the gathered weights")
    if lora:
        raise ConfigError(f"model.lora with {sharding}: LoRA adapters cannot be merged into "
                          f"sharded layers for the weight push; train LoRA with DDP "
                          f"(configs/accelerate/ddp.yaml)")
