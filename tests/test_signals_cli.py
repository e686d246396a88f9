"""``cranewatch signals --out FILE.parquet``: the Parquet file holds what the CSV holds, value for
value (read back with pyarrow's own reader); without pyarrow the message names the extra."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cranewatch.cli import main

REPO = Path(__file__).resolve().parents[1]
PROFILE = str(REPO / "profiles" / "sts-07.toml")
CAPTURE = str(REPO / "src" / "cranewatch" / "data" / "lab" / "false-load" / "crane-lan.pcap")


def _csv_columns(path: Path) -> dict[str, list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}


def _as_text(value: object) -> str:
    """A Parquet cell as Python's csv module writes it (None as an empty field)."""
    return "" if value is None else str(value)


@pytest.mark.parametrize("wide", [False, True], ids=["long", "wide"])
def test_parquet_holds_what_the_csv_holds(tmp_path: Path, wide: bool) -> None:
    flags = ["--wide"] if wide else []
    as_csv, as_parquet = tmp_path / "signals.csv", tmp_path / "signals.parquet"
    assert main(["signals", CAPTURE, "--profile", PROFILE, *flags, "--out", str(as_csv)]) == 0
    assert main(["signals", CAPTURE, "--profile", PROFILE, *flags, "--out", str(as_parquet)]) == 0
    expected = _csv_columns(as_csv)
    table = pq.read_table(as_parquet)
    assert table.column_names == list(expected)
    rows = len(expected["time"])
    assert table.num_rows == rows and rows > (100 if wide else 1000)
    for name, column in zip(table.column_names, table.columns, strict=True):
        assert [_as_text(v) for v in column.to_pylist()] == expected[name], name
    types = {name: str(table.schema.field(name).type) for name in table.column_names}
    assert types["time"] == "string" and types["epoch"] == "double"
    if wide:
        assert types["hoist_load [t]"] == "double"
    else:
        assert (types["value"], types["frame"], types["signal"]) == ("double", "int64", "string")


def test_without_pyarrow_the_message_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    out = tmp_path / "signals.parquet"
    assert main(["signals", CAPTURE, "--profile", PROFILE, "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert "pip install 'cranewatch[parquet]'" in err
    assert not out.exists()


def test_the_parquet_extra_is_declared_and_the_readme_names_it() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(req.startswith("pyarrow") for req in extras["parquet"])
    assert any(req.startswith("pyarrow") for req in extras["test"])
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "Parquet" in readme and "pip install 'cranewatch[parquet]'" in readme
