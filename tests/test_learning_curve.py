"""The learning curve's bookkeeping, without training: train.py's overrides, the run-folder check,
the per-step metrics read from a Trainer's log history, the summary over seeds and the figure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks import learning_curve as lc


def step(number: int, **metrics: float) -> dict[str, float]:
    """A log_history entry of one training step, as transformers writes it."""
    return {"step": number, "epoch": number / 10, "loss": 0.0, **metrics}


def test_per_step_metrics_keep_the_steps_numbers_in_order():
    log_history = [step(2, **{"selfplay/vote_accuracy": 0.5}),
                   step(1, **{"selfplay/vote_accuracy": 0.25}),
                   {"step": 2, "train_runtime": 9.0, "train_loss": 0.0, "epoch": 1.0},
                   step(3, note="text", flag=True)]
    history = lc.per_step_metrics(log_history)
    assert [entry["step"] for entry in history] == [1, 2, 3]
    assert history[0]["selfplay/vote_accuracy"] == 0.25
    assert "note" not in history[2] and "flag" not in history[2]
    assert all("train_runtime" not in entry for entry in history)


def test_summary_is_first_and_last_window_means_over_seeds():
    rising = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    flatter = [0.2, 0.2, 0.4, 0.4, 0.6, 0.6]
    histories = {seed: [step(i + 1, accuracy=v) for i, v in enumerate(values)]
                 for seed, values in ((0, rising), (1, flatter))}
    summary = lc.summarize(histories, ["accuracy"], window=2)["accuracy"]
    assert summary["window"] == 2
    assert summary["first"] == pytest.approx({"mean": 0.1, "min": 0.0, "max": 0.2})
    assert summary["last"] == pytest.approx({"mean": 0.8, "min": 0.6, "max": 1.0})
    assert summary["change"] == pytest.approx({"mean": 0.7, "min": 0.4, "max": 1.0})
    # a window longer than half the run shrinks to half of it
    assert lc.summarize(histories, ["accuracy"], window=10)["accuracy"]["window"] == 3
    table = lc.summary_table("spy", lc.summarize(histories, ["accuracy"], window=2),
                             {"accuracy": "vote accuracy"})
    assert "0.100 [0.000, 0.200]" in table and "+0.700 [+0.400, +1.000]" in table


def test_missing_values_are_skipped_and_a_missing_metric_is_an_error():
    histories = {0: [step(1, x=1.0), step(2), step(3, x=3.0), step(4, x=5.0)],
                 1: [step(1, x=2.0), step(2, x=2.0), step(3, x=4.0), step(4, x=6.0)]}
    steps, values = lc.seed_curves(histories, "x")
    assert steps.tolist() == [1, 2, 3, 4] and np.isnan(values[0, 1])
    summary = lc.summarize(histories, ["x"], window=2)["x"]
    assert summary["first"] == pytest.approx({"mean": 1.5, "min": 1.0, "max": 2.0})
    assert lc.spread(np.array([np.nan, np.nan])) == {"mean": None, "min": None, "max": None}
    with pytest.raises(ValueError, match="no step logs 'y'"):
        lc.seed_curves(histories, "y")


def test_panels_add_the_return_of_every_logged_role():
    histories = {0: [step(1, **{"selfplay/return_spy": -0.3, "selfplay/return_civilian": 1.1})]}
    metrics = [metric for metric, _ in lc.panels("spy", histories)]
    assert metrics[:5] == [metric for metric, _ in lc.STATISTICS["spy"]]
    assert metrics[5:7] == ["selfplay/return_civilian", "selfplay/return_spy"]
    assert metrics[-2:] == ["selfplay/stage_clue", "loss"]


def test_overrides_replace_defaults_and_keep_the_scripts_own_keys(tmp_path):
    overrides = lc.train_overrides("qa_duel", 1, 7, tmp_path,
                                   ["evaluation.games=8", "+trainer.weight_decay=0.1"])
    assert overrides[:3] == ["env=qa_duel", "seed=1", "trainer.max_steps=7"]
    assert "evaluation.games=8" in overrides and "evaluation.games=0" not in overrides
    assert "++trainer.save_total_limit=1" in overrides and "+trainer.weight_decay=0.1" in overrides
    assert f"hydra.run.dir={tmp_path}" in overrides
    assert lc.task_overrides(overrides) == overrides[:-1]
    with pytest.raises(ValueError, match="--steps"):
        lc.shared_overrides(["trainer.max_steps=3"])
    with pytest.raises(ValueError, match="key=value"):
        lc.shared_overrides(["trainer.max_steps"])
    with pytest.raises(SystemExit):
        lc.parse_args(["--override", "seed=3"])


def test_a_run_folder_of_another_configuration_is_refused(tmp_path):
    overrides = lc.train_overrides("spy", 0, 4, tmp_path, [])
    lc.check_run_folder(tmp_path, overrides)  # no run yet
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in lc.task_overrides(overrides)))
    lc.check_run_folder(tmp_path, overrides)  # the same run: train.py resumes it
    with pytest.raises(SystemExit, match="remove that folder"):
        lc.check_run_folder(tmp_path, lc.train_overrides("spy", 0, 8, tmp_path, []))


def test_figure_draws_a_band_and_a_mean_per_panel(tmp_path):
    steps = np.arange(1, 21)
    values = np.stack([np.linspace(0.2, 0.8, 20), np.linspace(0.3, 0.9, 20)])
    curves = [("selfplay/vote_accuracy", "vote accuracy", steps, values),
              ("loss", "loss", steps, values - 0.5),
              ("selfplay/na_rate", "N/A rate", steps[:1], values[:, :1])]  # one step
    path = tmp_path / "curve.png"
    lc.draw_figure("title", "subtitle", curves, path)
    image = np.array(Image.open(path).convert("RGB"))
    assert image.shape[1] == lc.COLUMNS * lc.PANEL_SIZE[0]
    for column in range(len(curves)):  # each panel has both colours
        panel = image[80:, column * lc.PANEL_SIZE[0]:(column + 1) * lc.PANEL_SIZE[0]]
        for colour in (lc.BAND, lc.LINE):
            assert (panel == colour).all(axis=-1).any(), (column, colour)
