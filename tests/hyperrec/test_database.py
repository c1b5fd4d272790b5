import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from hyperrec.database import Database, DatabaseError, Pair
from hyperrec.spaces import hyperrec_space, lcbench_space
from tests.conftest import REPO, make_tiny_db


def test_round_trip_of_tasks_configs_and_curves(tmp_path):
    space = lcbench_space()
    configs = space.sample(4, seed=1)
    curves = np.arange(2 * 2 * 4 * 3, dtype=float).reshape(2, 2, 4, 3)
    with Database.build(tmp_path / "db.h5", space, name="demo", epochs=3) as w:
        w.add_tasks(["a", "b"], [{"classes": 2}, {}])
        w.add_configs(configs, ids=[10, 11, 12, 13])
        w.write_curves("val_acc", curves, tasks=["a", "b"], profiles=[0, 1])
        w.set_pairs([Pair(("a",), "b")])
    db = Database.open(tmp_path / "db.h5")
    assert db.tasks == ["a", "b"] and db.task_meta == [{"classes": 2}, {}]
    assert db.configs == configs and db.config_ids.tolist() == [10, 11, 12, 13]
    np.testing.assert_array_equal(db.encodings, space.encode(configs))
    np.testing.assert_array_equal(db.curves("val_acc"), curves)
    np.testing.assert_array_equal(db.curves("val_acc", tasks=["b"], profile=1), curves[1, [1]])
    assert (db.profiles, db.epochs, db.space, db.pairs) == (2, 3, space, [Pair(("a",), "b")])


def test_missing_cells_are_nan_and_appends_grow_the_grid(tiny_db):
    before = tiny_db.curves()
    space = tiny_db.space
    with tiny_db.edit() as w:
        w.add_tasks(["new"])
        (new_config,) = w.add_configs(space.sample(1, seed=9))
        w.write_curves("val_acc", np.full((1, 1, 1, 2), 0.5), tasks=["new"], profiles=[2],
                       config_ids=[tiny_db.config_ids.max() + 1], epochs=[1, 2])
        w.write_curves("val_loss", np.ones((1, 1, 1, 1)), tasks=["task0"], profiles=[0],
                       config_ids=[0], epochs=[5])
    curves = tiny_db.curves()
    P, T, C, E = before.shape
    assert curves.shape == (3, T + 1, C + 1, E)
    np.testing.assert_array_equal(curves[:P, :T, :C], before)
    assert np.isnan(curves[2, :T]).all() and np.isnan(curves[:P, T]).all()
    assert (curves[2, T, C, :2] == 0.5).all() and np.isnan(curves[2, T, C, 2:]).all()
    loss = tiny_db.curves("val_loss")
    assert np.isfinite(loss).sum() == 1 and loss[0, 0, 0, 4] == 1.0
    assert tiny_db.coverage("val_loss") == pytest.approx(1 / loss.size)


def test_ranking_breaks_ties_by_config_id_and_best_reports_epoch(tmp_path):
    space = lcbench_space()
    curves = np.array([[[[0.1, 0.7], [0.8, 0.2], [0.7, 0.6], [np.nan, np.nan], [0.5, 0.8]]]])
    with Database.build(tmp_path / "db.h5", space, name="r", epochs=2) as w:
        w.add_tasks(["t"])
        w.add_configs(space.sample(5, seed=0), ids=[4, 3, 2, 1, 0])
        w.write_curves("val_acc", curves, tasks=["t"])
    db = Database.open(tmp_path / "db.h5")
    # best values 0.7, 0.8, 0.7, nan, 0.8: ties (id 3 vs 0, id 4 vs 2) go to the lower id
    assert db.ranking("t").tolist() == [3, 1, 2, 4, 0]
    best = db.best("t")
    assert (best.index, best.config_id, best.value, best.epoch) == (4, 0, 0.8, 2)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such database file"),
    (lambda p: p.write_bytes(b"definitely not hdf5" * 100), "not a readable HDF5 file"),
    (lambda p: h5py.File(p, "w").close(), "not a hyperrec database"),
])
def test_opening_something_else_fails_clearly(tmp_path, make, message):
    path = tmp_path / "x.h5"
    make(path)
    with pytest.raises(DatabaseError, match=message):
        Database.open(path)


def test_truncated_file_and_unknown_schema_fail_clearly(tiny_db, tmp_path):
    data = tiny_db.path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatabaseError, match="corrupt or truncated"):
        Database.open(truncated)
    with h5py.File(tiny_db.path, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(DatabaseError, match="schema version 99 is not supported"):
        Database.open(tiny_db.path)


def test_bad_writes_are_refused_and_leave_the_file_unchanged(tiny_db):
    before = tiny_db.path.read_bytes()
    with pytest.raises(DatabaseError, match=r"expected \(profiles, tasks, configs, epochs\)"):
        with tiny_db.edit() as w:
            w.write_curves("val_acc", np.zeros((1, 1, 2)), tasks=["task0"])
    for names in (["task0"], ["x", "task0"], ["x", "x"]):
        message = rf"unique; already present or repeated: \['{names[-1]}'\]"
        with pytest.raises(DatabaseError, match=message):
            with tiny_db.edit() as w:
                w.add_tasks(names)
    with pytest.raises(ValueError, match="lr="):
        with tiny_db.edit() as w:
            w.add_configs([{**tiny_db.configs[0], "lr": 5.0}])
    assert tiny_db.path.read_bytes() == before
    assert sorted(p.name for p in tiny_db.path.parent.iterdir()) == ["tiny.h5", "tiny.h5.lock"]


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from hyperrec.database import Database
    db = Database.open(sys.argv[1])
    with db.edit() as w:
        w.add_tasks(["half-written"])
        w.write_curves("val_acc", np.zeros((1, 1, len(db.configs), db.epochs)),
                       tasks=["half-written"])
        print("inside", flush=True)
        time.sleep(60)
""")


def test_killed_writer_leaves_previous_file_intact(tiny_db):
    before = tiny_db.curves()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tiny_db.path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "inside"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = Database.open(tiny_db.path)
    assert db.tasks == tiny_db.tasks
    np.testing.assert_array_equal(db.curves(), before)
    with db.edit() as w:  # the lock died with the writer: the next edit goes ahead
        w.add_tasks(["after"])
    assert Database.open(tiny_db.path).tasks[-1] == "after"


def test_edits_are_serialised_by_the_lock(tiny_db):
    """Two writers at once: the second waits for the first, and both tasks land."""
    slow = WRITER.replace('"half-written"', '"slow"').replace("time.sleep(60)", "time.sleep(1)")
    proc = subprocess.Popen([sys.executable, "-c", slow, str(tiny_db.path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "inside"
    start = time.monotonic()
    with tiny_db.edit() as w:
        w.add_tasks(["fast"])
    assert time.monotonic() - start > 0.3
    assert proc.wait() == 0
    assert Database.open(tiny_db.path).tasks[-2:] == ["slow", "fast"]


def test_create_refuses_to_overwrite(tmp_path):
    make_tiny_db(tmp_path / "db.h5")
    with pytest.raises(DatabaseError, match="exists"):
        Database.create(tmp_path / "db.h5", hyperrec_space(), name="x", epochs=3)
    db = Database.create(tmp_path / "db.h5", hyperrec_space(), name="x", epochs=3, overwrite=True)
    assert (db.tasks, db.configs, db.profiles, db.metrics) == ([], [], 0, ())
