"""The umbrella command: doctor, demo summary merging, make-data/bench argument checks."""

import json

import pytest
import typer
from typer.testing import CliRunner

from projects.cli import app, format_table, resolve_tool, update_summary


def test_doctor_reports_the_system():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "CPU cores" in result.output and "Packages: torch" in result.output


def test_summary_rows_are_merged_not_replaced(tmp_path):
    path = tmp_path / "summary.json"
    row = {"dataset": "d", "metric": "m", "value": 0.9, "baseline": 0.5, "output_dir": "o"}
    update_summary(path, {"a": row})
    update_summary(path, {"b": {**row, "value": 0.7}})
    update_summary(path, {"a": {**row, "value": 0.8}})
    summary = json.loads(path.read_text())
    assert summary["a"]["value"] == 0.8 and summary["b"]["value"] == 0.7
    table = format_table(summary)
    assert "0.800" in table and "0.700" in table and table.splitlines()[0].startswith("tool")


def test_shared_demo_writes_its_row(tmp_path):
    result = CliRunner().invoke(app, ["demo", "shared", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "summary.json").read_text())["shared"]
    assert row["value"] > 0.7 and row["baseline"] == 0.5
    assert set(row) >= {"metric", "value", "baseline", "output_dir"}


def test_unknown_tool_is_rejected_with_the_choices():
    assert resolve_tool("finetune") == "sam_finetune"
    with pytest.raises(typer.BadParameter, match="unknown tool 'nope'.*sam_med3d_ich"):
        resolve_tool("nope")


def test_argtypes_name_the_range():
    import argparse

    from shared.argtypes import open_fraction, positive_int, probability

    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--batch_size", type=positive_int)
    parser.add_argument("--p", type=probability)
    parser.add_argument("--val_fraction", type=open_fraction)
    assert vars(parser.parse_args(["--batch_size", "2", "--p", "1", "--val_fraction", "0.2"])) == {
        "batch_size": 2, "p": 1.0, "val_fraction": 0.2}
    for argv, message in ((["--batch_size", "0"], "must be >= 1"), (["--p", "1.5"], r"must be in \[0, 1\]"),
                          (["--val_fraction", "1"], "must be between 0 and 1")):
        with pytest.raises(argparse.ArgumentError, match=message):
            parser.parse_args(argv)


def test_run_reporting_errors_prints_one_line_and_exits_2(capsys):
    from shared.checkpoint import CheckpointError
    from shared.cli_errors import run_reporting_errors

    def bad():
        raise CheckpointError("model.pth: not a readable checkpoint")

    assert run_reporting_errors(bad, (CheckpointError,)) == 2
    assert capsys.readouterr().err == "error: model.pth: not a readable checkpoint\n"
    assert run_reporting_errors(lambda: {"summary": 1}, (CheckpointError,)) == 0
    assert run_reporting_errors(lambda: 1, (CheckpointError,)) == 1
    with pytest.raises(KeyError):  # unexpected errors keep their traceback
        run_reporting_errors(lambda: {}["x"], (CheckpointError,))


@pytest.mark.parametrize("alias,marker", [("dementia", "English/metadata.csv"), ("med3d", "train.csv"),
                                          ("finetune", "coco"), ("dformer", "train.txt")])
def test_make_data_writes_each_tools_layout(tmp_path, alias, marker):
    result = CliRunner().invoke(app, ["make-data", alias, str(tmp_path / alias)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / alias / marker).exists()
