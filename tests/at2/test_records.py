from at2 import records


def test_a_new_configuration_retires_an_earlier_runs_results(tmp_path):
    for name in (records.RESULT_FILE, records.LIVE_FILE, records.QUERIES_FILE):
        (tmp_path / name).write_text("{}")
    assert records.is_complete(tmp_path)
    records.write_config(tmp_path, {"seed": 1})
    assert not records.is_complete(tmp_path) and not (tmp_path / records.LIVE_FILE).exists()
    assert records.read_config(tmp_path) == {"seed": 1}
