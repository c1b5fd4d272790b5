import csv
import json

import pytest
import yaml

from at2.records import QUERY_COLUMNS
from experiments import reproduce
from experiments.reproduce import Trial, main, run_trial


def trial(db, method="random", seed=0, **kw):
    return Trial(str(db.path), 0, method, seed, budget=kw.pop("budget", 8), device="cpu", **kw)


def test_record_schema(tiny_db, tmp_path):
    out = run_trial(trial(tiny_db, "hyperband", seed=2, options={"eta": 2}), tmp_path)
    assert out == tmp_path / "tiny_0_pair_0" / "hyperband" / "seed_2"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.txt", "queries.csv",
                                                     "result.json"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == "hyperband" and config["options"] == {"eta": 2}
    assert config["target"] == "task0" and config["sources"] == ["task1", "task2"]
    rows = list(csv.DictReader((out / "queries.csv").open()))
    assert list(rows[0]) == QUERY_COLUMNS and len(rows) == 8
    result = json.loads((out / "result.json").read_text())
    for key in ("recommended_rank", "regret", "query_value", "seconds"):
        assert len(result[key]) == 8
    assert result["method"] == "hyperband" and result["eta"] == 2 and result["seed"] == 2
    assert "recommended rank" in (out / "log.txt").read_text()


def test_interrupted_trial_restarts_cleanly_and_finished_ones_are_kept(tiny_db, tmp_path,
                                                                       monkeypatch):
    done = run_trial(trial(tiny_db, seed=0), tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}

    class Killed(BaseException):
        pass

    original = reproduce.METHODS["random"].tell
    calls = {"n": 0}

    def dying_tell(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed
        return original(self, *args)

    monkeypatch.setattr(reproduce.METHODS["random"], "tell", dying_tell)
    with pytest.raises(Killed):
        run_trial(trial(tiny_db, seed=1), tmp_path)
    seeds = tmp_path / "tiny_0_pair_0" / "random"
    assert not (seeds / "seed_1").exists()  # no half-written record
    assert len(list(seeds.glob("seed_1.tmp-*"))) == 1
    monkeypatch.setattr(reproduce.METHODS["random"], "tell", original)
    again = run_trial(trial(tiny_db, seed=1), tmp_path)
    assert json.loads((again / "result.json").read_text())["seed"] == 1
    assert not list(seeds.glob("seed_1.tmp-*"))
    assert run_trial(trial(tiny_db, seed=0), tmp_path) == done  # skipped, untouched
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == stamps


def test_same_seed_same_records(tiny_db, tmp_path):
    a = run_trial(trial(tiny_db, "at2", options={"engine_options": {"fit_steps": 10}}),
                  tmp_path / "a")
    b = run_trial(trial(tiny_db, "at2", options={"engine_options": {"fit_steps": 10}}),
                  tmp_path / "b")
    rows = [[{k: v for k, v in r.items() if k != "seconds"}
             for r in csv.DictReader((d / "queries.csv").open())] for d in (a, b)]
    assert rows[0] == rows[1]


def test_bad_input_is_refused_before_running(tiny_db, tmp_path, caplog):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        trial(tiny_db, options={"bogus": 1})
    with pytest.raises(ValueError, match="unknown method"):
        trial(tiny_db, method="nope")
    assert main(["--database", str(tiny_db.path), "--pair", "7", "--method", "random",
                 "--records", str(tmp_path), "-q"]) == 1
    assert "pair" in caplog.text
    assert not list(tmp_path.glob("*/*/seed_0"))


def test_record_made_under_other_defaults_is_refused(tiny_db, tmp_path):
    done = run_trial(trial(tiny_db, "hyperband"), tmp_path)
    path = done / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "device": "cuda", "database_path": "/elsewhere.h5"}))
    assert run_trial(trial(tiny_db, "hyperband"), tmp_path) == done  # where it ran: the same trial
    path.write_text(json.dumps({**result, "eta": 2}))  # as if the default was 2 when it ran
    with pytest.raises(ValueError, match="other settings \\(eta 2 there, 3 now\\)"):
        run_trial(trial(tiny_db, "hyperband"), tmp_path)
    assert json.loads(path.read_text())["eta"] == 2  # refused, not overwritten
