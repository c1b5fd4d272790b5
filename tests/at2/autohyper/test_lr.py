import csv
import json

import numpy as np
import pytest
from torch.utils.data import Subset

from at2.autohyper.lr import (
    TrialCurves,
    find_initial_lr,
    make_epoch_trainer,
    make_optimizer,
    trial_response,
)
from at2.autohyper.metrics import LowRankMetrics
from at2.autohyper.study import Training, accuracy_after_training, loader, small_cnn
from at2.cli import main
from hyperrec.tasks import load_task
from tests.conftest import make_tiny_db


def curves(ranks, loss, accuracy, classes=10):
    metrics = tuple(LowRankMetrics(("a", "b"), np.asarray(r), np.zeros(2), np.ones(2))
                    for r in ranks)
    return TrialCurves(np.asarray(loss, float), np.asarray(accuracy, float), metrics, classes)


def test_trial_response_rejects_diverging_and_non_learning_curves():
    ok = curves([[0, 1], [1, 1]], [1.0, 0.5], [0.5, 0.8])
    assert trial_response(ok, 2) == (0.25, True)
    exploded = curves([[1, 1]], [1.0, np.nan], [0.5, 0.1])  # stopped after a NaN epoch
    assert trial_response(exploded, 2) == (1.0, False)
    at_chance = curves([[3, 4], [5, 6]], [2.3, 2.3], [0.1, 0.11])  # "structured" but not learning
    assert trial_response(at_chance, 2) == (1.0, False)


def fake_trainer(calls):
    """Response falls from 1 to 0 between lr 1e-3 and 1e-2; lr > 0.1 diverges."""
    def trainer(h, epochs):
        calls.append(h["lr"])
        if h["lr"] > 0.1:
            return curves([], [np.nan], [0.1])
        zero = int(np.clip(np.interp(np.log10(h["lr"]), [-3, -2], [4, 0]), 0, 4))
        return curves([[0] * zero + [1] * (4 - zero)] * epochs, [1.0] * epochs,
                      [0.9] * epochs)
    return trainer


def test_find_initial_lr_records_every_trial(tmp_path):
    calls = []
    result = find_initial_lr(fake_trainer(calls), epochs_per_trial=3,
                             csv_path=tmp_path / "t.csv", progress=False)
    assert result.converged and 3e-3 < result.values["lr"] < 0.1
    assert len(result.trials) == len(calls) and result.epochs == 3 * len(calls)
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx(calls)
    assert {"trial", "lr", "response", "accepted", "train_loss", "train_accuracy", "epochs",
            "seconds"} == set(rows[0])


def test_a_diverging_region_is_never_chosen():
    calls = []
    result = find_initial_lr(fake_trainer(calls), lr_start=0.05, progress=False)
    assert result.values["lr"] <= 0.1


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


def test_real_training_run_gives_curves_and_metrics(digits):
    small = Subset(digits.train, range(256))
    trainer = make_epoch_trainer(lambda: small_cnn(1, 10, width=8), loader(small, 64),
                                 classes=10, optimizer="sgd", seed=0)
    a, b = trainer({"lr": 0.05}, 2), trainer({"lr": 0.05}, 2)
    assert a.train_loss.shape == a.train_accuracy.shape == (2,) and len(a.metrics) == 2
    np.testing.assert_allclose(a.train_loss, b.train_loss)  # re-seeded per trial
    assert a.train_loss[1] < a.train_loss[0]
    assert a.metrics[0].names == ("0:out", "3:in", "3:out", "7:in", "7:out")
    acc = accuracy_after_training(digits, 0.01, 0, Training(epochs=2))
    assert 0.3 < acc <= 1.0
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", small_cnn(1, 10).parameters(), 0.1)


def test_cli_writes_history_and_choice(tmp_path, caplog):
    out = tmp_path / "run"
    assert main(["-q", "autohyper", "--task", "digits", "--optimizer", "adam",
                 "--epochs-per-trial", "1", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == result["trials"] and result["epochs"] == len(rows)
    assert 1e-5 < result["values"]["lr"] < 1.0 and (out / "config.yaml").exists()
    assert main(["-q", "autohyper", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 1
    study = make_tiny_db(tmp_path / "study.h5")  # has no task "digits": refused before training
    for path, message in ((tmp_path / "none.h5", "no such database file"),
                          (study.path, "unknown task(s) ['digits']")):
        assert main(["-q", "autohyper", "--task", "digits", "--study", str(path), "--out",
                     str(tmp_path / "refused")]) == 1
        assert message in caplog.text and not (tmp_path / "refused").exists()
