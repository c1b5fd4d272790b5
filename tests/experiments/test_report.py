import json

import numpy as np
import pytest

from experiments.report import load, main, mean_se


def write(root, database, method, pair, seed, ranks):
    out = root / f"{database}_0_pair_{pair}" / method / f"seed_{seed}"
    out.mkdir(parents=True)
    n = len(ranks)
    (out / "result.json").write_text(json.dumps({
        "database": database, "method": method, "recommended_rank": ranks,
        "regret": [r / 100 for r in ranks], "query_value": [0.5] * n, "seconds": [0.1] * n}))


def test_report_table_and_plots_from_synthetic_records(tmp_path):
    rec = tmp_path / "records"
    for pair in range(2):
        for seed in range(3):
            write(rec, "DB1", "at2", pair, seed, [10 - pair - seed] * 100)
            write(rec, "DB1", "random", pair, seed, [30] * 100)
            write(rec, "DB2", "at2", pair, seed, [5] * 50)
    (rec / "DB1_0_pair_0" / "at2" / "seed_9").mkdir()  # an unfinished trial: ignored
    assert main([str(rec), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert table[0].startswith("| database | method | runs | rank q10 | rank q25")
    ranks = np.array([10 - p - s for p in range(2) for s in range(3)], float)
    row = next(line for line in table if line.startswith("| DB1 | at2 |"))
    se = ranks.std(ddof=1) / np.sqrt(6)
    assert f"| 6 | {ranks.mean():.1f} ± {se:.1f} |" in row
    assert "| DB1 | random | 6 | 30.0 ± 0.0 |" in "\n".join(table)
    assert next(line for line in table if line.startswith("| DB2")).endswith("|  |")  # no q100
    for name in ("rank_regret.png", "rank_regret_time.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_without_records_fails_clearly(tmp_path, caplog):
    assert main([str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "no records" in caplog.text
    with pytest.raises(FileNotFoundError):
        load(tmp_path)


def test_report_selects_methods_and_pairs(tmp_path):
    write(tmp_path, "DB", "at2", 0, 0, [1] * 10)
    write(tmp_path, "DB", "at2", 1, 0, [3] * 10)
    write(tmp_path, "DB", "lkgp", 0, 0, [2] * 10)
    assert set(load(tmp_path, methods=["at2"])) == {("DB", "at2")}
    runs = load(tmp_path, pairs=[0])
    assert set(runs) == {("DB", "at2"), ("DB", "lkgp")}
    assert runs["DB", "at2"]["recommended_rank"].tolist() == [[1.0] * 10]
    with pytest.raises(FileNotFoundError, match="of pairs"):
        load(tmp_path, pairs=[4])


def test_mean_se_ignores_padding():
    mean, se = mean_se(np.array([[1.0, 2.0], [3.0, np.nan]]))
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(se, [np.sqrt(2) / np.sqrt(2), 0.0])
