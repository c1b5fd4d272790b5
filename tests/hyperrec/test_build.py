import pickle

import numpy as np
import pytest
import torch

from hyperrec.build import (
    EPOCH_METRICS,
    Run,
    TaskSpec,
    build,
    make_model,
    make_optimizer,
    make_scheduler,
    plan_build,
    train_run,
)
from hyperrec.cli import main
from hyperrec.database import DatabaseError
from hyperrec.spaces import hyperrec_space
from hyperrec.tasks import TaskError, load_task, split_indices


def test_split_is_a_reproducible_60_20_20_partition():
    a, b = split_indices(100, 3), split_indices(100, 3)
    assert [len(p) for p in a] == [60, 20, 20]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert not np.array_equal(a[0], split_indices(100, 4)[0])
    task = load_task("digits", split_seed=1)
    assert (len(task.train), len(task.validation), len(task.test)) == (1078, 360, 359)
    assert task.meta["split_seed"] == 1 and task.classes == 10 and task.channels == 1


def configs_with(**fixed):
    space = hyperrec_space()
    return [c for c in space.sample(200, seed=1)
            if all(c[k] == v for k, v in fixed.items())]


@pytest.mark.parametrize("optimizer", ["Adam", "Momentum"])
@pytest.mark.parametrize("scheduler", ["StepLR", "ExponentialLR", "CyclicLR",
                                       "CosineAnnealingWarmRestarts"])
def test_optimizer_and_scheduler_branches_step(optimizer, scheduler):
    config = configs_with(optimizer=optimizer, scheduler=scheduler)[0]
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(config, model.parameters())
    group = opt.param_groups[0]
    assert type(opt).__name__ == ("Adam" if optimizer == "Adam" else "SGD")
    assert group["lr"] == pytest.approx(config["lr"])
    assert group["weight_decay"] == pytest.approx(config["weight_decay"])
    if optimizer == "Adam":
        assert group["betas"] == pytest.approx((config["beta0"], config["beta1"]))
    else:
        assert group["momentum"] == pytest.approx(config["momentum"])
    sched = make_scheduler(config, opt)
    lrs = []
    for _ in range(25):
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    lr = config["lr"]
    if scheduler == "StepLR":
        assert lrs[config["step_size"] - 1] == pytest.approx(lr * config["gamma"])
    elif scheduler == "ExponentialLR":
        assert lrs[4] == pytest.approx(lr * config["gamma"] ** 5)
    elif scheduler == "CyclicLR":
        assert lr <= max(lrs) <= config["max_lr"] + 1e-12 and min(lrs) >= lr - 1e-12
    else:
        assert config["eta_min"] - 1e-12 <= min(lrs) < lr and max(lrs) <= lr + 1e-12


@pytest.mark.parametrize("name", ["ResNet34", "ResNet50"])
def test_models_adapt_to_channels_and_classes(name):
    model = make_model({"model": name}, channels=1, classes=7).eval()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 7)


def built(tmp_path, folder, epochs=2, **kw):
    plan = plan_build(tmp_path / "db.h5", TaskSpec(str(folder), "tiny", image_size=8),
                      configs=2, seeds=2, epochs=epochs, **kw)
    return plan, build(plan, work=tmp_path / "work")


def test_records_have_the_documented_shapes(tmp_path, folder):
    plan, db = built(tmp_path, folder)
    assert db.tasks == ["tiny"] and set(EPOCH_METRICS) <= set(db.metrics)
    for metric in EPOCH_METRICS:
        curves = db.curves(metric, ["tiny"])
        assert curves.shape == (2, 1, 2, 2) and np.isfinite(curves).all()
    acc = db.curves("val_acc", ["tiny"])
    assert ((acc >= 0) & (acc <= 1)).all()
    assert (db.curves("val_top5", ["tiny"]) == 1).all()  # two classes: always in the top 5
    assert (db.curves("train_time", ["tiny"]) > 0).all()
    for run in plan.runs:
        batches = db.batches("tiny", run.config_id, run.profile)
        assert batches.shape[0] == 2 and batches.shape[2] == 4 and np.isfinite(batches).all()
        assert not run.checkpoint(tmp_path / "work").exists()  # recorded, then dropped
    assert db.task_meta[0]["split_seed"] == 0 and db.task_meta[0]["images"] == 30


def test_resume_continues_from_the_checkpoint_and_matches_a_straight_build(tmp_path, folder):
    straight = built(tmp_path / "a", folder)[1]
    plan = plan_build(tmp_path / "b" / "db.h5", TaskSpec(str(folder), "tiny", image_size=8),
                      configs=2, seeds=2, epochs=2)
    first = plan.runs[0]
    # A build killed after the first epoch of its first run: only that run's checkpoint exists.
    train_run(Run(first.task, first.config_id, first.config, first.profile, 1), tmp_path / "wb")
    resumed = build(plan, work=tmp_path / "wb")
    for metric in ("val_acc", "test_loss"):
        np.testing.assert_allclose(resumed.curves(metric), straight.curves(metric))
    again = plan_build(tmp_path / "b" / "db.h5", TaskSpec(str(folder), "tiny", image_size=8),
                       epochs=2, seeds=2)
    assert all(v == 2 for v in again.done.values())  # nothing left to train


def test_parallel_workers_report_to_the_single_writer(tmp_path, folder):
    plan = plan_build(tmp_path / "db.h5", TaskSpec(str(folder), "tiny", image_size=8),
                      configs=2, seeds=1, epochs=1)
    assert str(tmp_path / "db.h5").encode() not in pickle.dumps(plan.runs)  # workers can't write
    db = build(plan, work=tmp_path / "work", workers=2, poll=0.5)
    assert np.isfinite(db.curves("val_acc", ["tiny"])).all()


def test_bad_input_is_refused_before_training(tmp_path, folder, capsys):
    spec = TaskSpec(str(folder), "tiny", image_size=8)
    with pytest.raises(TaskError, match="does not exist"):
        plan_build(tmp_path / "x.h5", TaskSpec(str(tmp_path / "nope"), "n"), configs=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="class"):
        plan_build(tmp_path / "x.h5", TaskSpec(str(tmp_path / "empty"), "e"), configs=1)
    with pytest.raises(ValueError, match="--configs"):
        plan_build(tmp_path / "x.h5", spec)
    with pytest.raises(ValueError, match="option configs=0: expected an integer"):
        plan_build(tmp_path / "x.h5", spec, configs=0)
    with pytest.raises(ValueError, match="option config_seed=-1: expected an integer"):
        plan_build(tmp_path / "x.h5", spec, configs=1, config_seed=-1)
    with pytest.raises(ValueError, match="option image_size=0: expected an integer"):
        plan_build(tmp_path / "x.h5", TaskSpec(str(folder), "tiny", image_size=0), configs=1)
    plan_build(tmp_path / "x.h5", spec, configs=1, epochs=3, seeds=1)
    assert main(["info", str(tmp_path / "x.h5")]) == 0  # the planned task, not trained yet
    assert "tiny" in capsys.readouterr().out.split("no observations yet")[0].splitlines()[-1]
    with pytest.raises(ValueError, match="exceeds"):
        plan_build(tmp_path / "x.h5", spec, epochs=5)
    with pytest.raises(ValueError, match="--configs 2 exceeds the 1 configurations"):
        plan_build(tmp_path / "x.h5", spec, configs=2, epochs=3)
    with pytest.raises(KeyError, match="unknown configuration"):
        plan_build(tmp_path / "x.h5", spec, config_ids=[999], epochs=3)
    with pytest.raises(DatabaseError, match="different data set or split"):
        plan_build(tmp_path / "x.h5", TaskSpec(str(folder), "tiny", split_seed=5, image_size=8),
                   epochs=3)
    assert main(["-q", "build", "--task", str(tmp_path / "nope"), "--configs", "1",
                 "--out", str(tmp_path / "y.h5")]) == 1
    assert not (tmp_path / "y.h5").exists()


def test_a_built_task_is_a_target_for_at2(tmp_path, folder):
    from at2.tuner import AT2Tuner

    db = built(tmp_path, folder, epochs=2)[1]
    with db.edit() as w:  # a second, synthetic task to transfer from
        w.add_tasks(["other"])
        w.write_curves("val_acc", np.linspace(0.2, 0.8, 8).reshape(2, 1, 2, 2), tasks=["other"],
                       profiles=[0, 1])
    result = AT2Tuner(db, ["other"], "tiny", seed=0).tune(4, progress=False)
    assert len(result.records) == 4 and {r.epoch for r in result.records} <= {1, 2}
