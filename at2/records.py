"""Run records: the resolved configuration (YAML), ``queries.csv`` and ``result.json``.

Every file is written to a temporary name and renamed into place, and ``result.json`` comes last:
a record directory with a ``result.json`` is complete, one without it is not (an interrupted run).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hyperrec.database import atomic_file

from .tuner import QueryRecord, TuningResult

CONFIG_FILE, QUERIES_FILE, RESULT_FILE = "config.yaml", "queries.csv", "result.json"
LIVE_FILE = "live.json"
"""``at2 tune --live``'s record of the live run, its last file (as ``result.json`` in replay)."""
QUERY_COLUMNS = [f.name for f in dataclasses.fields(QueryRecord)]


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_config(out: str | Path, config: Mapping[str, Any]) -> None:
    """The resolved configuration of a run, as YAML, written first. The last files of an earlier
    run in ``out`` (``result.json``, ``live.json``) are removed before it, so that the directory
    never pairs this configuration with another run's results: until the run ends, it is
    incomplete."""
    for name in (RESULT_FILE, LIVE_FILE):
        (Path(out) / name).unlink(missing_ok=True)
    write_atomic(Path(out) / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))


def write_result(out: str | Path, result: TuningResult) -> None:
    """``queries.csv`` then ``result.json``; the latter marks the record as complete."""
    out = Path(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=QUERY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows())
    write_atomic(out / QUERIES_FILE, buffer.getvalue())
    write_atomic(out / RESULT_FILE, json.dumps(result.summary(), indent=1) + "\n")


def read_config(out: str | Path) -> dict[str, Any]:
    """The configuration :func:`write_config` wrote (empty if there is none)."""
    path = Path(out) / CONFIG_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def is_complete(out: str | Path) -> bool:
    return (Path(out) / RESULT_FILE).is_file()


def read_result(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / RESULT_FILE).read_text())
