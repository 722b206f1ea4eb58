import math
import typing
from pathlib import Path

import pytest
import yaml

from embedlab import EmbedlabError
from embedlab.config import (
    Config,
    ConversionConfig,
    DataSource,
    EvaluatorConfig,
    LossModifierConfig,
    ModelConfig,
    TrainingConfig,
    dump_yaml,
    load_config,
    load_yaml,
)

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
    # Where: a mis-indented key's line and column, and the parser's problem without its context lines.
    with pytest.raises(EmbedlabError, match=r"is not valid YAML \(line 3, column 14\): mapping values are not allowed here$"):
        load_config(_write(tmp_path, "data:\n  train: d.csv\n  model: name: m\n"))


def test_tracking_off_as_written_in_yaml_and_on_the_command_line(tmp_path):
    path = _write(tmp_path, "data: {train: d.csv}\ntracking: off\n")  # YAML 1.2: the bare word off is text
    assert load_config(path).tracking.mode == "off"
    assert load_config(path, ["tracking={mode: off, experiment: e}"]).tracking.mode == "off"
    assert load_config(path, ["tracking=optional"]).tracking.mode == "optional"
    with pytest.raises(EmbedlabError, match="'tracking' must be a mapping, got bool"):
        load_config(path, ["tracking=true"])


def test_numbers_as_users_write_them_in_files_and_overrides(tmp_path):
    path = _write(tmp_path, "data: {train: d.csv}\ntraining: {learning_rate: 1e-4, warmup_ratio: .05, weight_decay: 5E-3}\nloss: {params: {scale: 2e1}}\n")
    config = load_config(path)
    assert (config.training.learning_rate, config.training.warmup_ratio, config.training.weight_decay) == (1e-4, 0.05, 5e-3)
    assert config.loss.params == {"scale": 20.0}
    config = load_config(path, ["training.learning_rate=2e-5", "training.weight_decay=5E-3", "training.max_grad_norm=2", "training.batch_size=010"])
    assert config.training.learning_rate == 2e-5 and config.training.weight_decay == 5e-3
    assert config.training.max_grad_norm == 2.0 and isinstance(config.training.max_grad_norm, float)
    assert config.training.batch_size == 10  # YAML 1.2: a leading zero is not octal
    sweep = load_config(path, ["search={space: {training.learning_rate: {loguniform: [1e-5, 1e-3]}}}"])
    assert sweep.search.space == {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}  # numbers, so a range


def test_yaml_1_2_core_scalars():
    values = load_yaml("[1e-4, +1.0e+3, .5, .inf, -.Inf, .nan, 0o17, 0x1F, 010, true, FALSE, on, off, yes, no, ~, 2024-01-01, 1:20]")
    assert values[:5] == [1e-4, 1000.0, 0.5, math.inf, -math.inf] and math.isnan(values[5])
    assert values[6:] == [15, 31, 10, True, False, "on", "off", "yes", "no", None, "2024-01-01", "1:20"]
    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object:os.system x")  # still safe loading


def test_booleans_are_true_or_false(tmp_path):
    path = _write(tmp_path, "data: {train: d.csv}\n")
    assert load_config(path, ["training.resume=false", "training.drop_last=True"]).training.resume is False
    with pytest.raises(EmbedlabError, match=r"^config key 'training.resume' must be true or false, got 'yes'"):
        load_config(path, ["training.resume=yes"])
    with pytest.raises(EmbedlabError, match="'distributed.use_gpu' must be true or false, got 'on'"):
        load_config(_write(tmp_path, "data: {train: d.csv}\ndistributed: {use_gpu: on}\n"))


def test_a_number_for_a_string_key_asks_for_quotes(tmp_path):
    with pytest.raises(EmbedlabError, match="'tracking.experiment' must be a string, got the number 0.0001: put the value in quotes"):
        load_config(_write(tmp_path, "data: {train: d.csv}\ntracking: {experiment: 1e-4}\n"))
    assert load_config(_write(tmp_path, "data: {train: d.csv}\ntracking: {experiment: '1e-4'}\n")).tracking.experiment == "1e-4"


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.mixed_precision=bf61", "config key 'training.mixed_precision' must be one of auto, no, bf16, fp16, got 'bf61' (did you mean 'bf16'?)"),
        ("training.mixed_precision=true", "config key 'training.mixed_precision' must be one of auto, no, bf16, fp16, got true"),
        ("training.group_by_length=yes", "config key 'training.group_by_length' must be true, false or auto, got 'yes' (YAML 1.2: yes, no, on and off are text)"),
        ("training.pack_sequences=1", "config key 'training.pack_sequences' must be true, false or auto, got 1"),
        ("training.sampler=no_duplicate", "must be one of auto, random, no_duplicates, group_by_label, got 'no_duplicate' (did you mean 'no_duplicates'?)"),
        ("tracking.mode=Optional", "config key 'tracking.mode' must be one of required, optional, off, got 'Optional' (did you mean 'optional'?)"),
        ("tracking=of", "config key 'tracking.mode' must be one of required, optional, off, got 'of' (did you mean 'off'?)"),
        ("model.pooling=mena", "config key 'model.pooling' must be one of mean, cls, max,"),
        ("data.train.format=pair_scores", "(did you mean 'pair_score'?)"),
        ("data.train.convert={to: triplet}", "config key 'data.train.convert.to' must be one of triplets, n_tuples, anchor_positive_pairs, got 'triplet'"),
        ("search={scheduler: hyperband}", "config key 'search.scheduler' must be one of fifo, asha, got 'hyperband'"),
        ("search={mode: maximize}", "config key 'search.mode' must be one of max, min, got 'maximize' (did you mean 'max'?)"),
        ("search={modifiers: [Matryoshka]}", "config key 'search.modifiers.0.name' must be one of MatryoshkaLoss,"),
        ("search={losses: [{name: CoSENTLoss, spce: {}}]}", "unknown config key 'search.losses.0.spce' (did you mean 'space'?)"),
        ("evaluators=[{data: d.csv, type: TripletEval}]", "(did you mean 'TripletEvaluator'?)"),
    ],
)
def test_closed_sets_of_values_are_checked_with_a_suggestion(tmp_path, override, message):
    path = _write(tmp_path, "data: {train: d.csv}\n")
    with pytest.raises(EmbedlabError) as error:
        load_config(path, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_closed_sets_match_the_names_the_code_knows():
    from embedlab.data import SAMPLERS
    from embedlab.evaluation import EVALUATORS
    from embedlab.formats import FORMATS_BY_KEY
    from embedlab.losses import MODIFIERS
    from embedlab.model import POOLING_MODES

    def allowed(cls, name):
        hint = typing.get_type_hints(cls)[name]
        literal = next((arg for arg in typing.get_args(hint) if typing.get_origin(arg) is typing.Literal), hint)
        return set(typing.get_args(literal))

    assert allowed(TrainingConfig, "sampler") == {"auto", *SAMPLERS}
    assert allowed(ModelConfig, "pooling") == set(POOLING_MODES)
    assert allowed(LossModifierConfig, "name") == set(MODIFIERS)
    assert allowed(DataSource, "format") == set(FORMATS_BY_KEY)
    assert allowed(DataSource, "format") >= allowed(ConversionConfig, "to")
    assert allowed(EvaluatorConfig, "type") == set(EVALUATORS)


def test_overrides(tmp_path):
    path = _write(tmp_path, "data: {train: d.csv}\nevaluators:\n  - {name: dev, data: dev.csv}\n")
    config = load_config(path, ["training.batch_size=32", "loss.params.scale=5.5", "data.train.limit=10", "evaluators.0.name=sts", "output_dir=/tmp/x"])
    assert config.training.batch_size == 32 and config.loss.params == {"scale": 5.5}
    assert config.data.train.limit == 10 and config.evaluators[0].name == "sts" and config.output_dir == "/tmp/x"
    with pytest.raises(EmbedlabError, match="is not key=value"):
        load_config(path, ["training.batch_size"])
    with pytest.raises(EmbedlabError, match="unknown config key 'training.nope'"):
        load_config(path, ["training.nope=1"])
    # {a:1} is one key `a:1` in YAML: said so, rather than "key 'loss.modifiers.0.name:MatryoshkaLoss' ...".
    with pytest.raises(EmbedlabError, match=r"'name:MatryoshkaLoss' reads as one key: YAML needs a space after ':'"):
        load_config(path, ["loss.modifiers=[{name:MatryoshkaLoss}]"])
    assert load_config(path, ["loss.modifiers=[{name: MatryoshkaLoss, params: {matryoshka_dims: [8]}}]"]).loss.modifiers[0].name == "MatryoshkaLoss"


def test_smoke_test_shrinks_the_run(tmp_path):
    config = load_config(_write(tmp_path, "data: {train: d.csv}\ntest_evaluators:\n  - {name: t, data: t.csv}\n"), smoke_test=True)
    assert config.training.max_steps == 4 and config.data.train.limit == 64 and config.test_evaluators[0].data.limit == 64
    assert config.output_dir == "runs/c-smoke"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(_write(tmp_path, "data: {train: d.csv}\n"))
    dumped = _write(tmp_path, yaml.safe_dump(config.to_dict()))
    assert load_config(dumped) == config
    assert Config.from_dict(config.to_dict()) == config


def test_dump_yaml_quotes_strings_that_read_back_as_something_else(tmp_path):
    text = "data: {train: d.csv}\ntracking: {mode: 'off', experiment: '1e-4'}\nevaluators: [{name: 'yes', data: '010'}]\ntraining: {learning_rate: 1e-4}\n"
    config = load_config(_write(tmp_path, text))
    dumped = dump_yaml(config.to_dict())
    assert load_config(_write(tmp_path, dumped)) == config
    assert yaml.safe_load(dumped) == config.to_dict()  # YAML 1.1 readers too


def test_tracking_false_means_off_and_whole_floats_fill_int_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: d.csv}\ntracking: false\ntraining: {max_steps: 1e4}\n")
    config = load_config(path)
    assert config.tracking.mode == "off" and config.training.max_steps == 10000 and isinstance(config.training.max_steps, int)
    with pytest.raises(EmbedlabError, match="training.max_steps' must be int, got 2.5"):
        load_config(path, ["training.max_steps=2.5"])
