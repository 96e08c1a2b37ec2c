"""`tunesmith validate`: data errors name the data file; every kind of file tunesmith reads is checked as what it is."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


def test_single_class_names_the_data_file(tiny_bert, make_config, tmp_path):
    one_class = tmp_path / "one-class.jsonl"
    one_class.write_text("".join(f'{{"text": "t{i}", "label": "positive"}}\n' for i in range(30)))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(make_config(tiny_bert, str(one_class), "classify")))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "single class ['positive']" in result.output and repr(str(one_class)) in result.output  # the culprit
    assert "give data with both classes" in result.output  # the fix
