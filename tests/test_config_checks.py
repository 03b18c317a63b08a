"""train.py's config checks: each bad value is one line naming the key, found before torch,
transformers or TRL are imported; train.log keeps every run, its per-step metrics and any crash."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import train
from trainers.config_checks import ConfigError, check_model_path, check_train_config
from trainers.grpo_fields import grpo_config_fields

ROOT = Path(__file__).parent.parent


def config(*overrides: str):
    """train.yaml composed with ``overrides``, as Hydra gives it to train.py."""
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=list(overrides))


def check(*overrides: str) -> None:
    check_train_config(config(*overrides), config_file=train.CONFIG_FILE,
                       agents=train.POLICY_AGENTS)


def refused(*overrides: str) -> str:
    """The one-line message that refuses ``overrides``."""
    with pytest.raises(ConfigError) as error:
        check(*overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("overrides", [
    (), ("env=qa_duel",), ("trainer=gpu",), ("model=qwen2_5_vl_7b",), ("agent=vllm",),
    ("agent=vllm_server", "agent.base_urls=[http://a:8000/v1,https://b/v1]",
     "agent.transport=nccl"),
    ("+trainer.lr_scheduler_type=cosine", "+trainer.warmup_steps=0.1", "trainer.save_steps=0.5",
     "trainer.report_to=[tensorboard]", "trainer.learning_rate=3"),
    ("+trainer.num_generations_eval=null", "trainer.loss_type=grpo", "trainer.report_to=none"),
    ("sampling.temperature=0", "sampling.top_p=0.5", "seed=7", "env.num_players=5"),
    ("+model.lora={r: 4, lora_alpha: 8, target_modules: all-linear}",),
])
def test_good_configs_pass(overrides):
    check(*overrides)


def test_model_path_is_null_a_model_folder_or_a_hub_id(tmp_path):
    check_model_path(None)
    check_model_path("Qwen/Qwen2.5-VL-3B-Instruct")
    (tmp_path / "config.json").write_text("{}")
    check_model_path(str(tmp_path))
    for path in ("/nonexistent", "./x", "~/x", "no-owner"):
        message = refused(f"model.path={path!r}")
        assert message.startswith(f"model.path={path!r}: no such folder here")
        assert "hub id 'owner/name'" in message and "the machine that trains" in message
    assert "'~' is not expanded" in refused("model.path='~/x'")
    (tmp_path / "config.json").unlink()
    assert "folder without a config.json" in refused(f"model.path={tmp_path}")
    (tmp_path / "weights.bin").write_text("")
    assert "is a file" in refused(f"model.path={tmp_path / 'weights.bin'}")
    assert "model.path=5" in refused("model.path=5")


def test_model_dtype_and_lora():
    assert refused("model.dtype=float8") == ("model.dtype must be one of ['float32', 'bfloat16', "
                                             "'float16'], got 'float8'")
    assert refused("model.lora=5").startswith("model.lora must be null or a mapping")
    assert "closest: path" in refused("+model.paths=x")


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.learning_rate=abc",
     "trainer.learning_rate must be a number (GRPOConfig: learning_rate: float), got 'abc'"),
    ("trainer.learning_rate=0", "trainer.learning_rate must be > 0, got 0"),
    ("trainer.learning_rate=nan", "trainer.learning_rate must be > 0, got nan"),
    ("trainer.max_steps=0", "trainer.max_steps must be >= 1, got 0"),
    ("trainer.max_steps=1.5", "trainer.max_steps must be an integer (GRPOConfig: max_steps: int)"),
    ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size must be >= 1"),
    ("trainer.gradient_accumulation_steps=0", "trainer.gradient_accumulation_steps must be >= 1"),
    ("+trainer.num_generations=2", "trainer.num_generations is set by train.py; use the games' "
                                   "own groups"),
    ("trainer.importance_cap=0.5", "trainer.importance_cap must be >= 1, got 0.5"),
    ("trainer.importance_cap=big", "trainer.importance_cap must be a number"),
    ("+trainer.scoring_batch_size=0", "trainer.scoring_batch_size must be >= 1, got 0"),
    ("+trainer.scoring_batch_size=2.5", "trainer.scoring_batch_size must be an integer or null"),
    ("trainer.beta=-0.1", "trainer.beta must be >= 0, got -0.1"),
    ("trainer.epsilon=0", "trainer.epsilon must be > 0, got 0"),
    ("trainer.save_steps=0", "trainer.save_steps must be > 0, and whole when >= 1, got 0"),
    ("trainer.save_steps=2.5", "trainer.save_steps must be > 0, and whole when >= 1, got 2.5"),
    ("trainer.logging_steps=-1", "trainer.logging_steps must be > 0"),
    ("+trainer.warmup_steps=-1", "trainer.warmup_steps must be >= 0, got -1"),
    ("trainer.bf16=1",
     "trainer.bf16 must be true or false or null (GRPOConfig: bf16: bool | None), got 1"),
    ("trainer.use_cpu=yes", "trainer.use_cpu must be true or false"),
    ("trainer.loss_type=ppo", "trainer.loss_type must be one of ['"),
    ("+trainer.lr_scheduler_type=cos", "trainer.lr_scheduler_type must be one of ['linear', "),
    ("trainer.report_to=wandbx", "trainer.report_to must be one of ['all', 'none', "),
    ("trainer.report_to=[tensorboard,wandbx]", "trainer.report_to must be one of ['all', "),
    ("+trainer.learnig_rate=1", "trainer.learnig_rate=1: not a field of GRPOConfig (trl "),
    ("+trainer.output_dir=x", "trainer.output_dir is set by train.py; use hydra.run.dir"),
    ("+trainer.seed=1", "trainer.seed is set by train.py; use the top-level seed"),
])
def test_trainer_fields_have_grpo_config_types_and_ranges(override, expected):
    assert refused(override).startswith(expected)


def test_an_unknown_trainer_field_is_named_with_the_closest_ones():
    assert refused("+trainer.learnig_rate=1").endswith("closest field names: learning_rate")
    assert "closest field names: per_device_eval_batch_size, per_device_train_batch_size" in (
        refused("+trainer.per_device_batch_size=2"))
    assert "see TRL's GRPOConfig" in refused("+trainer.foo=1")


def test_grpo_fields_are_read_from_the_installed_trl_without_importing_it():
    command = ("import sys; from trainers.grpo_fields import grpo_config_fields; "
               "grpo_config_fields(); print(sorted({'torch', 'transformers', 'trl'} "
               "& set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
    from trl import GRPOConfig

    fields = grpo_config_fields()
    assert set(fields) == {field.name for field in dataclasses.fields(GRPOConfig)}
    for real in dataclasses.fields(GRPOConfig):  # each default of the real class passes
        default = (real.default_factory() if real.default is dataclasses.MISSING
                   else real.default)
        assert fields[real.name].accepts(default), (real.name, default)
    assert {"grpo", "dapo", "dr_grpo", "bnpo"} <= set(fields["loss_type"].choices)
    assert {"linear", "cosine", "constant"} <= set(fields["lr_scheduler_type"].choices)


@pytest.mark.parametrize(("overrides", "expected"), [
    ("selfplay.games_per_round=0", "selfplay.games_per_round must be an integer >= 1, got 0"),
    ("selfplay.schedule=fast", "selfplay.schedule must be one of ['paper', 'alternate']"),
    ("selfplay.min_steps=-1", "selfplay.min_steps must be an integer >= 0, got -1"),
    ("selfplay.switch.rho=2", "selfplay.switch.rho must be in [0, 1], got 2"),
    ("selfplay.switch.to_clue_accuracy=high",
     "selfplay.switch.to_clue_accuracy must be a finite number >= 0"),
    ("+selfplay.switch.alpha=1", "selfplay.switch.alpha is not an option of train.py's config"),
    ("~selfplay.switch.rho", "selfplay.switch.rho is missing from the config"),
    ("selfplay.cycle=x", "selfplay.cycle must be an integer >= 1, got 'x'"),
    ("selfplay.baseline_decay=1", "selfplay.baseline_decay must be in [0, 1), got 1"),
    ("selfplay.questions_per_image=0", "selfplay.questions_per_image must be an integer >= 1"),
    ("~selfplay.cycle", "selfplay.cycle is missing from the config"),
    ("selfplay.asynchronous=maybe", "selfplay.asynchronous must be true or false, got 'maybe'"),
    ("selfplay.asynchronous=true", "selfplay.asynchronous plays the next games during the update, "
                                   "which needs a policy served elsewhere (agent=vllm_server), "
                                   "not agent=transformers"),
    ("selfplay.max_policy_lag=-1", "selfplay.max_policy_lag must be an integer >= 0, got -1"),
    ("agent=vllm_server selfplay.asynchronous=true selfplay.max_policy_lag=0",
     "selfplay.max_policy_lag must be an integer >= 1, got 0"),
    ("+selfplay.cycles=2", "selfplay.cycles is not an option of train.py's config (closest: cycle"),
    ("sampling.max_tokens=abc", "sampling.max_tokens must be an integer >= 1, got 'abc'"),
    ("sampling.max_tokens=0", "sampling.max_tokens must be an integer >= 1, got 0"),
    ("sampling.temperature=-1", "sampling.temperature must be a finite number >= 0, got -1"),
    ("sampling.top_p=0", "sampling.top_p must be in (0, 1], got 0"),
    ("sampling.top_p=2", "sampling.top_p must be in (0, 1], got 2"),
    ("+sampling.seed=1", "sampling.seed is not an option of train.py's config"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("seed=abc", "seed must be an integer >= 0, got 'abc'"),
    ("agent=scripted", "agent.name must be one of ['transformers', 'vllm', 'vllm_server'] "
                       "(train.py plays with agent=transformers or agent=vllm or "
                       "agent=vllm_server), got 'scripted'"),
    ("agent=vllm_server agent.transport=udp",
     "agent.transport must be one of ['auto', 'nccl', 'reload'], got 'udp'"),
    ("agent=vllm_server agent.base_urls=[]", "agent.base_urls must be a list of one or more "
                                             "http(s) URLs"),
    ("agent=vllm_server agent.base_urls=localhost:8000", "agent.base_urls must be a list"),
    ("agent=vllm_server agent.chunk_mb=0", "agent.chunk_mb must be an integer >= 1, got 0"),
    ("agent.batch_size=0", "agent.batch_size must be an integer >= 1, got 0"),
    ("agent=vllm agent.enforce_eager=yes", "agent.enforce_eager must be true or false, got 'yes'"),
    ("env.name=chess", "env.name must be a registered environment ['qa_duel', 'spy'] or "
                       "'module:name' (the module registers name), got 'chess'"),
    ("env.name=no_such_module:chess", "env.name: environment 'no_such_module:chess': cannot "
                                      "import module 'no_such_module'"),
    ("selfplay.repeats=0", "selfplay.repeats must be an integer >= 1, got 0"),
    ("selfplay.rounds_per_stage=0", "selfplay.rounds_per_stage must be an integer >= 1, got 0"),
    ("env.num_players=abc", "env.num_players must be an integer >= 3, got 'abc'"),
    ("env.num_spies=3", "env.num_spies=3 leaves fewer than 2 civilians among num_players=4"),
    ("+env.foo=1", "env: unknown option(s) ['foo'] for environment 'spy'"),
    ("+foo=1", "foo is not an option of train.py's config (top level options: env, model, "),
    ("seed=${nope}", "Interpolation key 'nope' not found (key seed)"),
])
def test_selfplay_sampling_seed_agent_env_and_top_level(overrides, expected):
    assert refused(*overrides.split()).startswith(expected)


def test_sharded_training_is_read_from_the_launcher_and_refuses_what_it_cannot_do():
    from trainers.config_checks import check_sharded_training, sharding_from_launcher

    assert sharding_from_launcher({}) is None
    assert sharding_from_launcher({"ACCELERATE_USE_DEEPSPEED": "true",
                                   "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}) is None
    assert sharding_from_launcher({"ACCELERATE_USE_DEEPSPEED": "true",
                                   "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}) == "zero3"
    assert sharding_from_launcher({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}) == "fsdp"
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        sharding_from_launcher({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})
    check_sharded_training(None, "transformers", {"r": 8})
    check_sharded_training("fsdp", "vllm", None)
    with pytest.raises(ConfigError, match="agent=transformers plays with the trained model"):
        check_sharded_training("zero3", "transformers", None)
    with pytest.raises(ConfigError, match="model.lora with fsdp"):
        check_sharded_training("fsdp", "vllm_server", {"r": 8})


def test_importing_train_imports_nothing_heavy():
    command = ("import sys, train; print(sorted({'torch', 'transformers', 'trl', 'vllm', 'peft'} "
               "& set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


def run_train(run_dir: Path, *overrides: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | (env or {}))


@pytest.mark.parametrize(("override", "expected"), [
    ("model.path=/nonexistent", "error: model.path='/nonexistent': no such folder here"),
    ("trainer.learning_rate=abc", "error: trainer.learning_rate must be a number"),
    ("trainer.max_steps=0", "error: trainer.max_steps must be >= 1, got 0"),
    ("+trainer.foo=1", "error: trainer.foo=1: not a field of GRPOConfig"),
    ("env.num_players=abc", "error: env.num_players must be an integer >= 3, got 'abc'"),
])
def test_train_py_refuses_a_bad_value_in_one_line_before_importing_torch(tmp_path, override,
                                                                         expected):
    result = run_train(tmp_path, override)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith(expected)
    assert f"config error: {result.stderr.strip()[len('error: '):]}" in (
        tmp_path / "train.log").read_text()


def test_a_config_error_stops_train_py_before_torch_is_imported(tmp_path):
    command = (f"import runpy, sys\n"
               f"sys.argv = ['train.py', 'hydra.run.dir={tmp_path}', 'trainer.max_steps=0']\n"
               f"try:\n    runpy.run_path('train.py', run_name='__main__')\n"
               f"except SystemExit as stop:\n"
               f"    print(stop.code, sorted(name for name in ('torch', 'transformers', 'trl',"
               f" 'vllm', 'peft') if sys.modules.get(name) is not None))")
    result = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr[-2000:]


def test_a_sharded_launch_on_a_cpu_is_refused_not_run_unsharded(tmp_path):
    """accelerate starts FSDP on a CPU as unconnected, unsharded processes; train.py says so."""
    result = run_train(tmp_path, "agent=vllm",
                          env={"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: the launch asks for fsdp, which accelerate runs on GPUs only")


def test_hydra_itself_refuses_an_unknown_key_and_says_how_to_add_one(tmp_path):
    result = run_train(tmp_path, "foo=1")
    assert result.returncode == 1
    assert "Could not override 'foo'" in result.stderr and "use +foo=1" in result.stderr
    result = run_train(tmp_path, "+foo=1")  # added: refused by train.py's checks
    assert result.returncode == 2 and result.stderr.startswith("error: foo is not an option")


def test_log_metrics_logs_each_step_on_the_main_process_only(caplog):
    from transformers import TrainerControl, TrainerState

    from trainers.log_metrics import LogMetrics

    metrics = {"loss": 0.012345, "selfplay/vote_accuracy": 0.25, "selfplay/games": 4}
    with caplog.at_level("INFO", logger="trainers.log_metrics"):
        for main_process in (True, False):
            state = TrainerState(global_step=3, is_world_process_zero=main_process)
            LogMetrics().on_log(None, state, TrainerControl(), logs=metrics)
    assert caplog.messages == ["step 3: loss=0.01235 selfplay/vote_accuracy=0.25 selfplay/games=4"]


def test_train_log_appends_runs_with_metrics_and_tracebacks(crashed_then_evaluated_run):
    # a crash once training has started, then a run of one step in the same folder
    run_dir, crashed, first, trained = crashed_then_evaluated_run
    assert crashed.returncode == 1, crashed.stderr[-3000:]
    assert "training failed\nTraceback (most recent call last):" in first
    assert "FileNotFoundError: PairFolderSource: image folder '/nonexistent'" in first
    assert trained.returncode == 0, trained.stderr[-3000:]
    both = (run_dir / "train.log").read_text()
    assert both.startswith(first)  # appended, not overwritten
    step_lines = [line for line in both.splitlines() if "[trainers.log_metrics]" in line]
    assert step_lines[0].split(" - ", 1)[1].startswith("step 1: loss=")
    assert "selfplay/vote_accuracy=" in step_lines[0]
    assert "done:" in both
