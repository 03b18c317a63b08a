"""Checkpoints a run can trust: only complete ones are resumed from, and a kill loses none.

transformers' Trainer writes a checkpoint folder (``checkpoint-<step>``) file by file; ``kill -9``
in the middle leaves a folder with some of its files, empty or cut short. So a checkpoint counts as
*complete* only once its mark (:data:`MARK`) is in it: a list of every other file of the folder
with its size, written atomically (a temporary file, flushed, then renamed) as the folder's last
file by :class:`MarkComplete` — in ``on_save``, which transformers calls once ``_save_checkpoint``
has written everything (model, processor, optimizer, scheduler, RNG states, trainer state, TRL's
extras) and the callbacks registered before it (the self-play state) have run. With several
processes it first waits for all of them (a barrier: transformers has none between a process's
RNG state and process 0's ``on_save``). Every file is flushed to disk before the mark, so a
complete checkpoint also survives a power cut. A folder is complete when its mark reads and every
file it lists is there with its size.

Resuming (:func:`train_or_resume`, what train.py runs):
:func:`newest_complete_checkpoint` gives the checkpoint to resume from: the newest complete one,
with a warning naming each newer incomplete one it passes over, or ``None`` with a warning when
none is complete (the run starts from scratch). It deletes and moves nothing: a passed-over folder
stays as it is until the run saves that step again and writes over it (its stale mark, if it had
one, removed first).

Rotation: transformers' ``save_total_limit`` counts every ``checkpoint-*`` folder, the one being
written included, and deletes the oldest before that one is marked; with a limit of 1 a kill at
that moment would leave no complete checkpoint, and an incomplete folder of a higher step would be
kept while complete ones go. So :class:`MarkComplete` takes the limit over: it rotates after
marking, and counts and deletes complete checkpoints only (incomplete folders are never deleted).

Model weights on resume: ``save_pretrained`` writes a checkpoint's weights under the model's
original key names (Qwen2-VL: ``visual.*``, ``model.layers.*``) while the Trainer loads them with a
plain ``load_state_dict`` under the current ones (``model.visual.*``,
``model.language_model.*``): nothing but ``lm_head`` would load, silently (transformers issue
#43701, in 5.17 and 5.19). :func:`load_full_weights` reads them back through ``from_pretrained``,
which renames them, and loads them strictly: every weight or an error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from trainers.selfplay import SaveSelfPlayState, SelfPlay

log = logging.getLogger(__name__)

#: The file that makes a checkpoint folder complete: the other files' names and sizes.
MARK = "checkpoint_complete.json"


def load_full_weights(model: Any, checkpoint: str | Path) -> None:
    """The full weights of ``checkpoint`` into ``model`` (in place), every one of them, through
    ``from_pretrained``'s renaming of saved keys (see the module docstring)."""
    saved = type(model).from_pretrained(str(checkpoint), dtype=model.dtype)
    model.load_state_dict(saved.state_dict())


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` in ``path``, whole or not at all (also across a crash): a flushed temporary file
    renamed over it."""
    temporary = _temporary(path)
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def incomplete_reasons(folder: str | Path) -> list[str]:
    """Why the checkpoint ``folder`` is not complete (empty when it is)."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / MARK).read_text())["files"]
    except FileNotFoundError:
        return [f"no {MARK} (it was not finished)"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        return [f"unreadable {MARK}: {error!r}"]
    reasons = []
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            reasons.append(f"{name} is missing")
        elif path.stat().st_size != size:
            reasons.append(f"{name} has {path.stat().st_size} bytes, not {size}")
    return reasons


def newest_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint in ``output_dir`` to resume from (None: start afresh),
    warning about each newer incomplete one passed over; nothing is deleted."""
    if not Path(output_dir).is_dir():
        return None
    passed_over = []
    for checkpoint in reversed(sort_checkpoints(str(output_dir))):  # newest step first
        reasons = incomplete_reasons(checkpoint)
        if not reasons:
            return checkpoint
        passed_over.append(checkpoint)
        log.warning("passing over the incomplete checkpoint %s (%s); it is left as it is",
                    checkpoint, "; ".join(reasons))
    if passed_over:
        log.warning("no complete checkpoint in %s: training starts from scratch", output_dir)
    return None


def train_or_resume(trainer: Any, selfplay: SelfPlay) -> int:
    """Trains with checkpoints that count once complete (:class:`MarkComplete`, added last),
    resuming from the newest complete one with its self-play state; returns the step the model
    is at. One at ``max_steps`` (a run killed after its last save, or rerun once finished) only
    gives its weights: transformers would train a step past ``max_steps``."""
    trainer.add_callback(MarkComplete(trainer.args))
    last = newest_complete_checkpoint(trainer.args.output_dir)
    if last is None:
        trainer.train()
        return trainer.state.global_step
    SaveSelfPlayState.load(selfplay, last, trainer.args.process_index)
    step = json.loads((Path(last) / TRAINER_STATE_NAME).read_text())["global_step"]
    if 0 < trainer.args.max_steps <= step:
        log.info("resuming from %s: training is over at step %d", last, step)
        trainer._load_from_checkpoint(last)
        return step
    log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    return trainer.state.global_step


class MarkComplete(TrainerCallback):
    """Marks each checkpoint complete once all its files are written, and rotates complete
    checkpoints in place of transformers (see the module docstring). Register it after every
    callback that writes into checkpoints; it takes ``args.save_total_limit`` over (setting it to
    None for the trainer)."""

    def __init__(self, args: Any):
        self.save_total_limit, args.save_total_limit = args.save_total_limit, None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._unmark_before_saving(args, state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._unmark_before_saving(args, state, control)

    @staticmethod
    def _unmark_before_saving(args: Any, state: Any, control: Any) -> None:
        """A step saved again writes into a folder that may hold a mark: the mark goes before
        the first file, so that the folder never looks complete before it is."""
        if control.should_save and args.should_save:
            (_folder(args, state) / MARK).unlink(missing_ok=True)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        PartialState().wait_for_everyone()  # every process has written its files
        if not args.should_save:
            return
        folder = _folder(args, state)
        mark = folder / MARK
        files = sorted(p for p in folder.rglob("*")
                       if p.is_file() and p not in (mark, _temporary(mark)))
        for path in files:
            _fsync_file(path)
        listed = {str(path.relative_to(folder)): path.stat().st_size for path in files}
        write_atomically(mark, json.dumps({"step": state.global_step, "files": listed},
                                          indent=1).encode())
        self._rotate(args.output_dir, state.best_model_checkpoint)

    def _rotate(self, output_dir: str, best: str | None) -> None:
        """Deletes the oldest complete checkpoints beyond ``save_total_limit``; as in
        transformers, the newest and the best one stay."""
        limit = self.save_total_limit
        complete = [c for c in sort_checkpoints(output_dir) if not incomplete_reasons(c)]
        if not limit or limit <= 0 or len(complete) <= limit:
            return
        protected = {complete[-1]} | ({str(Path(best))} if best else set())
        deletable = [c for c in complete if c not in protected]  # oldest first
        for checkpoint in deletable[:len(complete) - max(limit, len(protected))]:
            log.info("deleting the old checkpoint %s (save_total_limit=%d)", checkpoint, limit)
            shutil.rmtree(checkpoint)


def _folder(args: Any, state: Any) -> Path:
    return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
