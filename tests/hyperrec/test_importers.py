import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from hyperrec.cli import main
from hyperrec.database import Pair
from hyperrec.importers import PublishedDataError, import_at2, read_published
from hyperrec.safe_pickle import UnsafePickleError
from hyperrec.spaces import hyperrec_space, lcbench_space, to_published


def fake_published(root: Path, tasks=("A", "B", "C"), configs=5, epochs=4) -> Path:
    """A miniature folder in the published layout (plain pickles, no lambdas)."""
    rng = np.random.default_rng(0)
    for name, space in (("HyperRec", hyperrec_space()), ("LCBench", lcbench_space())):
        (root / name).mkdir(parents=True)
        sampled = space.sample(configs, seed=1)
        raw = {i: (to_published(space, c) if name == "HyperRec" else c)
               for i, c in enumerate(sampled)}
        profiles = {p: {t: {i: rng.uniform(size=epochs) for i in range(configs)} for t in tasks}
                    for p in range(2)}
        (root / name / "configs.pkl").write_bytes(pickle.dumps(raw))
        (root / name / "profiles.pkl").write_bytes(pickle.dumps(profiles))
    pairs = {n: [["A,B", "C"], ["B,C", "A"]] for n in ("HyperRec", "LCBench")}
    (root / "train_test_pairs.json").write_text(json.dumps(pairs))
    return root


def test_import_of_a_published_layout(tmp_path, caplog):
    src = fake_published(tmp_path / "src")
    with caplog.at_level(logging.WARNING):
        dbs = import_at2(src, tmp_path / "out")
    assert "differs from the published file" in caplog.text
    raw = pickle.loads((src / "HyperRec" / "profiles.pkl").read_bytes())
    for db in dbs:
        assert (len(db.tasks), len(db.configs), db.profiles, db.epochs) == (3, 5, 2, 4)
        assert db.pairs == [Pair(("A", "B"), "C"), Pair(("B", "C"), "A")]
    np.testing.assert_array_equal(dbs[0].curves(tasks=["B"], profile=1)[0, 3], raw[1]["B"][3])


def test_malicious_profiles_are_refused_and_nothing_is_written(tmp_path):
    src = fake_published(tmp_path / "src")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (src / "LCBench" / "profiles.pkl").write_bytes(pickle.dumps({0: {"A": {0: Payload()}}}))
    with pytest.raises(UnsafePickleError, match="posix.system"):
        import_at2(src, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()  # HyperRec was fine, but nothing was written


def test_inconsistent_folders_are_refused(tmp_path):
    src = fake_published(tmp_path / "src")
    (src / "HyperRec" / "configs.pkl").unlink()
    with pytest.raises(PublishedDataError, match="configs.pkl: missing"):
        read_published(src, "HyperRec")
    pairs = json.loads((src / "train_test_pairs.json").read_text())
    pairs["LCBench"] = [["A,Z", "C"]]
    (src / "train_test_pairs.json").write_text(json.dumps(pairs))
    with pytest.raises(PublishedDataError, match=r"not in LCBench: \['Z'\]"):
        read_published(src, "LCBench")


@pytest.mark.slow
def test_published_databases_import_exactly(published, at2_data):
    hr, lc = published["HyperRec"], published["LCBench"]
    assert (len(hr.tasks), len(hr.configs), hr.profiles, hr.epochs) == (27, 100, 2, 75)
    assert (len(lc.tasks), len(lc.configs), lc.profiles, lc.epochs) == (35, 100, 1, 52)
    assert hr.coverage() == 1.0 and lc.coverage() == 1.0
    assert len(hr.pairs) == len(lc.pairs) == 5
    assert hr.pairs[0] == Pair(("IMAGENET64SUB1", "SUN397SUB3", "SUN397SUB2", "OIPETS"), "CIFAR100")
    assert hr.task_meta[hr.tasks.index("CIFAR100")] == {"images": 60000, "classes": 100}
    # independent check: each stored curve's float64 bytes occur verbatim in the pickle
    rng = np.random.default_rng(0)
    for db in (hr, lc):
        blob = (at2_data / db.name / "profiles.pkl").read_bytes()
        curves = db.curves()
        for _ in range(20):
            p, t, c = (rng.integers(n) for n in curves.shape[:3])
            assert curves[p, t, c].tobytes() in blob
    assert {d for d in hr.provenance["sha256"].values()} and "AT2" in hr.provenance["source"]


@pytest.mark.slow
def test_cli_import_and_info(at2_data, tmp_path, capsys):
    assert main(["import-at2", str(at2_data), str(tmp_path), "--only", "LCBench"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["LCBench.h5"]
    assert main(["info", str(tmp_path / "LCBench.h5"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    counts = (info["tasks"], info["configurations"], info["profiles"], info["epochs"])
    assert counts == (35, 100, 1, 52)
    assert info["coverage"] == {"val_acc": 1.0} and len(info["best"]) == 35
    assert main(["info", str(tmp_path / "LCBench.h5")]) == 0
    assert "adult" in capsys.readouterr().out


def test_cli_reports_errors_without_traceback(tmp_path, caplog):
    (tmp_path / "bad.h5").write_text("nope")
    assert main(["info", str(tmp_path / "bad.h5")]) == 1
    assert "not a readable HDF5 file" in caplog.text
    assert main(["import-at2", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "missing" in caplog.text
    shutil.rmtree(tmp_path)
