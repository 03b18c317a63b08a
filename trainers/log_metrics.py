"""The trainer's metrics as log lines, so that the job's log file (Hydra's ``train.log``) holds
them: ``step 3: loss=0.0123 grad_norm=0.5 ... selfplay/vote_accuracy=0.25``."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

log = logging.getLogger(__name__)


def format_metrics(metrics: dict[str, Any]) -> str:
    """``name=value`` pairs, numbers with 4 significant digits."""
    return " ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in metrics.items())


class LogMetrics(TrainerCallback):
    """Logs every metrics dict the trainer logs (TRL's losses, KL, rewards, the games'
    ``selfplay/`` statistics), one line per step, on the main process only."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            log.info("step %d: %s", state.global_step, format_metrics(logs))
