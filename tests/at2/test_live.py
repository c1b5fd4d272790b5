import json

import numpy as np
import pytest

from at2.cli import main
from at2.live import tune_live
from hyperrec.build import TaskSpec, build, plan_build
from hyperrec.database import Database


def test_live_tuning_trains_records_and_refines_the_recommendation(tmp_path, folder):
    plan = plan_build(tmp_path / "db.h5", TaskSpec(str(folder), "source", image_size=8),
                      configs=3, seeds=1, epochs=2)
    build(plan, work=tmp_path / "work")  # a real source task
    task = TaskSpec(str(folder), "target", image_size=8)
    result = tune_live(tmp_path / "db.h5", ["source"], task, budget=3, out=tmp_path / "live",
                       final_epochs=1, autohyper=True, seed=0,
                       autohyper_options={"epochs_per_trial": 1, "max_trials": 3},
                       progress=False)
    assert [q["index"] for q in result.queries] == [1, 2, 3]
    db = Database.open(tmp_path / "db.h5")
    target = db.curves("val_acc", ["target"], 0)[0]
    assert np.isfinite(target).sum() == 3  # every query was recorded, nothing else
    assert result.autohyper is not None and len(result.autohyper.trials) >= 3
    assert result.final_config["lr"] == result.autohyper.values["lr"]
    assert len(result.final["test_acc"]) == 1
    assert (tmp_path / "live" / "autohyper.csv").exists()
    assert json.loads(json.dumps(result.summary()))["warp"] == "copula"  # "auto", resolved


def test_autohyper_needs_live_mode(tmp_path, tiny_db):
    assert main(["-q", "tune", "--database", str(tiny_db.path), "--pair", "0", "--autohyper",
                 "--out", str(tmp_path / "o")]) == 1


def test_live_tuning_refuses_bad_settings_before_touching_the_database(tmp_path, folder,
                                                                      tiny_db):
    task = TaskSpec(str(folder), "target", image_size=8)
    before = tiny_db.path.read_bytes()
    for settings, message in (({"budget": 10**6}, "option budget=1000000: expected an integer"),
                              ({"final_epochs": 0}, "option final_epochs=0: expected an"),
                              ({"engine_options": {"lr": -1}}, "option lr=-1"),
                              ({"engine": "sparse"}, "unknown engine 'sparse'")):
        with pytest.raises(ValueError, match=message):
            tune_live(tiny_db.path, ["task1"], task, **{"budget": 2, **settings},
                      out=tmp_path / "live", progress=False)
    assert tiny_db.path.read_bytes() == before and not (tmp_path / "live").exists()
