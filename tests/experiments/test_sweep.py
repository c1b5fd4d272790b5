import pytest

from experiments.sweep import main, method_options, run_sweep, trials
from tests.conftest import make_tiny_db


@pytest.fixture
def data(tmp_path):
    make_tiny_db(tmp_path / "data" / "tiny.h5")
    return tmp_path / "data"


def test_sweep_runs_in_parallel_resumes_and_lists_failures(data, tmp_path, caplog):
    argv = ["--data", str(data), "--databases", "tiny", "--methods", "random,hyperband",
            "--seeds", "0,1", "--pairs", "0", "--budget", "6", "--workers", "2", "--records",
            str(tmp_path / "rec"), "--option", "hyperband.eta=2", "-q"]
    assert main(argv) == 0
    done = sorted((tmp_path / "rec").glob("tiny_0_pair_0/*/seed_*/result.json"))
    assert len(done) == 4
    stamps = [p.stat().st_mtime_ns for p in done]
    failing = ["--methods", "random,hyperband,at2", "--option", "at2.engine_options={lr: -1}"]
    assert main([*argv, *failing]) == 1  # at2 refuses lr < 0 in its trials: listed as failed
    assert [p.stat().st_mtime_ns for p in done] == stamps  # finished trials untouched
    assert "failed: tiny pair 0 at2 seed 0" in caplog.text
    caplog.clear()
    assert main([*argv, "--budget", "7"]) == 2  # finished with budget 6: neither skipped nor rerun
    assert "holds a finished trial with other settings (budget 6 there, 7 now)" in caplog.text
    assert [p.stat().st_mtime_ns for p in done] == stamps


def test_sweep_refuses_bad_input(data, tmp_path, caplog):
    assert main(["--data", str(data), "--databases", "tiny,nope", "-q"]) == 2
    assert "nope.h5" in caplog.text
    assert main(["--data", str(data), "--databases", "tiny", "--methods", "at3", "-q"]) == 2
    assert main(["--data", str(data), "--databases", "tiny", "--pairs", "0,3", "--records",
                 str(tmp_path / "rec"), "-q"]) == 2  # refused before any trial starts
    assert "tiny has 1 published pairs; got pair 3" in caplog.text
    assert not (tmp_path / "rec").exists()
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        method_options(["beta=1"], ["at2"])
    assert method_options(["at2.beta=0.5"], ["at2"]) == {"at2": {"beta": 0.5}}


def test_ray_backend_runs_trials_on_a_local_cluster(data, tmp_path):
    pytest.importorskip("ray", reason="the optional 'ray' extra is not installed")
    todo = trials(data, ["tiny"], [0], ["random", "transfer_topk"], [0], budget=4,
                  device="cpu")
    failed = run_sweep(todo, tmp_path / "rec", workers=2, backend="ray")
    assert failed == []
    assert len(list((tmp_path / "rec").glob("tiny_0_pair_0/*/seed_0/result.json"))) == 2
