import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, write_config
from embedlab.cli import main


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _bad_data(tmp_path, text: str, name: str = "bad.csv"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


BAD_INPUTS = {
    "missing data file": (lambda tmp, model: {"data": {"train": str(tmp / "missing.csv")}}, "data file '.*missing.csv' does not exist"),
    "empty data set": (lambda tmp, model: {"data": {"train": str(_bad_data(tmp, "sentence1,sentence2,score\n"))}}, "is empty: it has no rows"),
    "loss does not suit the format": (
        lambda tmp, model: {"loss": {"name": "MultipleNegativesRankingLoss"}},
        r"MultipleNegativesRankingLoss does not suit this data: the data is \(sentence_A, sentence_B\) pairs \+ float score .*losses for it: CoSENTLoss",
    ),
    "unknown loss name": (lambda tmp, model: {"loss": {"name": "CosentLoss"}}, "unknown loss 'CosentLoss': did you mean CoSENTLoss"),
    "NaN label": (
        lambda tmp, model: {"data": {"train": str(_bad_data(tmp, "sentence1,sentence2,score\na,b,0.5\nc,d,NaN\n"))}},
        "label column 'score' has a missing or NaN value at row 2",
    ),
    "strings where numbers are needed": (
        lambda tmp, model: {"data": {"train": str(_bad_data(tmp, "sentence1,sentence2,score\na,b,0.5\nc,d,high\n"))}},
        "label column 'score' mixes numbers and text",
    ),
    "unknown config key": (lambda tmp, model: {"trainer": {"epochs": 1}}, r"unknown config key 'trainer' \(did you mean 'training'\?\): valid keys are"),
    "model path does not exist": (lambda tmp, model: {"model": {"name": str(tmp / "no-model")}}, "model path '.*no-model' does not exist"),
    "unreadable data file": (
        lambda tmp, model: {"data": {"train": str(_bad_data(tmp, "\x00\x01 not parquet", "x.parquet"))}},
        "data file '.*x.parquet' could not be read",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys, tiny_model_path, score_pairs_file):
    make_sections, message = BAD_INPUTS[case]
    output_dir = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, output_dir, **make_sections(tmp_path, tiny_model_path))
    code, _, err = _run(capsys, "train", str(config))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("embedlab: error: ")
    assert __import__("re").search(message, err), err
    assert not output_dir.exists()


def test_cli_process_gives_no_traceback(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {train: missing.csv}\n")
    result = subprocess.run([sys.executable, "-m", "embedlab.cli", "train", str(config)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("embedlab: error: data file 'missing.csv' does not exist")


def test_train_end_to_end_with_overrides(tmp_path, capsys, tiny_model_path, score_pairs_file):
    evaluator = {"name": "dev", "data": str(score_pairs_file)}
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", test_evaluators=[evaluator])
    code, out, err = _run(capsys, "train", str(config), "training.max_steps=2", "training.show_progress_bar=false")
    assert code == 0, err
    assert "Data: (sentence_A, sentence_B) pairs + float score" in out
    assert out.strip().splitlines()[-1].startswith("dev_spearman_cosine: ")
    assert "(before training: " in out
    assert (tmp_path / "out" / "model" / "modules.json").exists() and (tmp_path / "out" / "config.yaml").exists()
    # Without evaluators the results say why they are empty.
    bare = write_config(tmp_path / "bare.yaml", tiny_model_path, score_pairs_file, tmp_path / "bare")
    code, out, err = _run(capsys, "train", str(bare), "training.max_steps=1", "training.show_progress_bar=false", "tracking=off")
    assert code == 0 and out.strip().splitlines()[-1] == "  (no evaluator scored the model: add `evaluators` or `test_evaluators` to the config)", err


def test_formats_command(capsys):
    code, out, _ = _run(capsys, "formats", str(REPO / "experiments/data/stsb/dev.tsv"), "--columns", "sentence1,sentence2,score")
    assert code == 0
    assert "format:        pair_score" in out and "rows:          1500" in out
    assert "label column:  score (float score)" in out and "CoSENTLoss" in out
    code, _, err = _run(capsys, "formats", str(REPO / "experiments/data/stsb/dev.tsv"))
    assert code == 2 and "select the columns you train on" in err  # genre and source are not inputs


def test_losses_command(capsys):
    code, out, _ = _run(capsys, "losses")
    assert code == 0 and "pair_score" in out and "CoSENTLoss" in out
    code, out, _ = _run(capsys, "losses", "MultipleNegativesRankingLoss")
    assert "scale = 20.0" in out and "similarity_fct = cos_sim" in out
    code, out, _ = _run(capsys, "losses", "TripletLoss")  # a default shown as the name a config gives
    assert "distance_metric = euclidean (one of cosine, euclidean, manhattan)" in out
    code, _, err = _run(capsys, "losses", "MNRL")
    assert code == 2 and "unknown loss 'MNRL'" in err


def test_evaluate_command(capsys, tiny_model_path, score_pairs_file, tmp_path):
    code, out, err = _run(capsys, "evaluate", str(tiny_model_path), str(score_pairs_file), "--name", "dev", "--output", str(tmp_path / "eval"))
    assert code == 0, err
    assert "evaluator: EmbeddingSimilarityEvaluator" in out and out.strip().splitlines()[-1].startswith("dev_spearman_cosine: ")
    assert (tmp_path / "eval" / "similarity_evaluation_dev_results.csv").exists()
    code, _, err = _run(capsys, "evaluate", str(tiny_model_path), str(score_pairs_file), "--evaluator", "TripletEvaluator")
    assert code == 2 and "TripletEvaluator does not suit evaluation data" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "nothing"), str(score_pairs_file))
    assert code == 2 and "does not exist" in err
    # A run's output folder stands for its model/, as for `embedlab mine --model`.
    shutil.copytree(tiny_model_path, tmp_path / "run" / "model")
    code, out, err = _run(capsys, "evaluate", str(tmp_path / "run"), str(score_pairs_file), "--name", "dev")
    assert code == 0 and out.strip().splitlines()[-1].startswith("dev_spearman_cosine: "), err


def _one_error_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and err.startswith("embedlab: error: "), err
    return err.strip()


def test_formats_on_a_file_with_metadata_columns_names_the_flag_to_select_them(capsys):
    code, _, err = _run(capsys, "formats", str(REPO / "experiments/data/stsb/train.tsv"))
    assert code == 2
    line = _one_error_line(err)
    assert "genre, source" in line and "text columns are sentence1, sentence2" in line and line.endswith("--columns sentence1,sentence2,score")


def test_train_on_a_file_with_metadata_columns_names_the_config_key(tmp_path, capsys, tiny_model_path):
    config = write_config(tmp_path / "c.yaml", tiny_model_path, REPO / "experiments/data/stsb/train.tsv", tmp_path / "out")
    code, _, err = _run(capsys, "train", str(config))
    assert code == 2 and "`data.train.columns: [sentence1, sentence2, score]`" in _one_error_line(err)


def test_formats_on_a_latin1_or_wrongly_named_file_is_one_line(tmp_path, capsys):
    (tmp_path / "latin.jsonl").write_bytes('{"sentence1": "un caf\xe9", "sentence2": "a coffee", "score": 0.5}\n'.encode("latin-1"))
    code, _, err = _run(capsys, "formats", str(tmp_path / "latin.jsonl"))
    assert code == 2 and "not UTF-8 text" in _one_error_line(err) and "iconv -f latin1 -t utf-8" in err
    (tmp_path / "commas.tsv").write_text("sentence1,sentence2,score\na man eats,a man is eating,0.5\n")
    code, _, err = _run(capsys, "formats", str(tmp_path / "commas.tsv"))
    assert code == 2 and "comma-separated (columns sentence1, sentence2, score)" in _one_error_line(err) and "rename it to .csv" in err


def test_output_into_a_pipe_that_closed_ends_quietly(monkeypatch):
    """`embedlab formats data.csv | head -2`: the reader leaves early; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    with open(write, "w", buffering=1) as closed_pipe:  # line-buffered: the first line already fails
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert main(["losses"]) == 141  # as a program ended by SIGPIPE; no traceback


def test_a_broken_pipe_that_is_not_the_output_is_a_failure(monkeypatch):
    from embedlab import cli

    def worker_pipe_breaks(args):
        raise BrokenPipeError("a worker's pipe")

    monkeypatch.setattr(cli, "cmd_losses", worker_pipe_breaks)
    with pytest.raises(BrokenPipeError):
        main(["losses"])


def test_a_custom_loss_without_a_config_dict_is_shown_with_its_configured_parameters(tmp_path, capsys, tiny_model_path, score_pairs_file):
    loss = {"name": "custom_losses.MeanSquaredCosineLoss", "params": {"weight": 2.0}}
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", loss=loss)
    code, out, err = _run(capsys, "train", str(config), "training.max_steps=1", "training.show_progress_bar=false", "tracking=off")
    assert code == 0, err
    assert "Loss: custom_losses.MeanSquaredCosineLoss {'weight': 2.0}" in out
    assert '`MeanSquaredCosineLoss` with `{"weight": 2.0}`' in (tmp_path / "out" / "model" / "README.md").read_text()
