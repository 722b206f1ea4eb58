from pathlib import Path

import pytest
import yaml

from embedlab import EmbedlabError
from embedlab.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_every_config_in_experiments_loads_and_opens_with_its_command():
    configs = sorted((REPO / "experiments").rglob("*.yaml"))
    assert configs
    for path in configs:
        assert isinstance(load_config(path), Config), path
        first_lines = path.read_text().splitlines()[:4]
        assert any(line.startswith("#") and "embedlab" in line for line in first_lines), f"{path} must open with the command that runs it"


def test_defaults_nesting_and_short_data_paths(tmp_path):
    config = load_config(_write(tmp_path, "data:\n  train: d.csv\nloss:\n  name: CoSENTLoss\n  params: {scale: 10}\n"))
    assert config.data.train.path == "d.csv" and config.loss.params == {"scale": 10}
    assert config.training.batch_size == 16 and config.output_dir == "runs/c"


def test_unknown_keys_list_the_valid_ones(tmp_path):
    with pytest.raises(EmbedlabError, match=r"unknown config key 'trainig' \(did you mean 'training'\?\): valid keys are data, model, loss, training"):
        load_config(_write(tmp_path, "data: {train: d.csv}\ntrainig: {}\n"))
    with pytest.raises(EmbedlabError, match=r"unknown config key 'training.batchsize'.*batch_size"):
        load_config(_write(tmp_path, "data: {train: d.csv}\ntraining: {batchsize: 8}\n"))
    with pytest.raises(EmbedlabError, match=r"'data.train.colums'"):
        load_config(_write(tmp_path, "data: {train: {path: d.csv, colums: [a]}}\n"))


def test_types_and_required_keys_are_checked(tmp_path):
    with pytest.raises(EmbedlabError, match="'training.batch_size' must be int"):
        load_config(_write(tmp_path, "data: {train: d.csv}\ntraining: {batch_size: eight}\n"))
    with pytest.raises(EmbedlabError, match="'data' is required"):
        load_config(_write(tmp_path, "model: {name: m}\n"))
    with pytest.raises(EmbedlabError, match="not valid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))


def test_tracking_off_as_written_in_yaml_and_on_the_command_line(tmp_path):
    path = _write(tmp_path, "data: {train: d.csv}\ntracking: off\n")  # YAML reads the bare word off as false
    assert load_config(path).tracking.mode == "off"
    assert load_config(path, ["tracking={mode: off, experiment: e}"]).tracking.mode == "off"
    assert load_config(path, ["tracking=optional"]).tracking.mode == "optional"
    with pytest.raises(EmbedlabError, match="'tracking' must be a mapping, got bool"):
        load_config(path, ["tracking=true"])


def test_overrides(tmp_path):
    path = _write(tmp_path, "data: {train: d.csv}\nevaluators:\n  - {name: dev, data: dev.csv}\n")
    config = load_config(path, ["training.batch_size=32", "loss.params.scale=5.5", "data.train.limit=10", "evaluators.0.name=sts", "output_dir=/tmp/x"])
    assert config.training.batch_size == 32 and config.loss.params == {"scale": 5.5}
    assert config.data.train.limit == 10 and config.evaluators[0].name == "sts" and config.output_dir == "/tmp/x"
    with pytest.raises(EmbedlabError, match="is not key=value"):
        load_config(path, ["training.batch_size"])
    with pytest.raises(EmbedlabError, match="unknown config key 'training.nope'"):
        load_config(path, ["training.nope=1"])


def test_smoke_test_shrinks_the_run(tmp_path):
    config = load_config(_write(tmp_path, "data: {train: d.csv}\ntest_evaluators:\n  - {name: t, data: t.csv}\n"), smoke_test=True)
    assert config.training.max_steps == 4 and config.data.train.limit == 64 and config.test_evaluators[0].data.limit == 64
    assert config.output_dir == "runs/c-smoke"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(_write(tmp_path, "data: {train: d.csv}\n"))
    dumped = _write(tmp_path, yaml.safe_dump(config.to_dict()))
    assert load_config(dumped) == config
