"""The `embedlab` command: train | sweep | compare | evaluate | formats | losses | mine.

User mistakes (EmbedlabError) print one line and exit with code 2, never a traceback.
"""

import argparse
import inspect
import os
import sys

from embedlab.errors import EmbedlabError


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cmd_train(args) -> None:
    from embedlab import run
    from embedlab.config import load_config
    from embedlab.trainer import TRAINING_METRICS

    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"distributed.workers={args.workers}")
    if args.gpu:
        overrides.append("distributed.use_gpu=true")
    config = load_config(args.config, overrides, smoke_test=args.smoke_test)
    if config.search is not None:
        raise EmbedlabError(f"'{args.config}' is a sweep config (it has a `search` block): run `embedlab sweep {args.config}`")
    prepared = run.prepare(config, device="cpu" if config.distributed.workers else None)  # workers hold the GPUs
    if config.distributed.workers:
        from embedlab.ray_train import train_on_ray

        results = train_on_ray(prepared)
    else:
        results = run.train(prepared)
    print(f"\nResults ({results['output_dir']}, model saved in {results['output_dir']}/model)")
    for name, value in results["final"].items():
        if name not in TRAINING_METRICS:
            print(f"  {name:40s} {value:.4f}")
    for name, value in results["after"].items():
        print(f"  {name:40s} {results['before'][name]:.4f} -> {value:.4f}")
    if not prepared.evaluators and not prepared.test_evaluators:
        print("  (no evaluator scored the model: add `evaluators` or `test_evaluators` to the config)")
    primary = [evaluator.primary_metric for evaluator in prepared.test_evaluators]
    if primary:
        print(f"{primary[0]}: {results['after'][primary[0]]:.4f} (before training: {results['before'][primary[0]]:.4f})")


def cmd_sweep(args) -> None:
    import dataclasses

    from embedlab import sweep as sweeps
    from embedlab.config import load_config

    config = load_config(args.config, args.overrides, smoke_test=args.smoke_test)
    if args.address:  # the flag wins over the config's distributed.address
        config = dataclasses.replace(config, distributed=dataclasses.replace(config.distributed, address=args.address))
    sweep = sweeps.prepare_sweep(config)
    space = ", ".join(sweeps.parameter_names(sweep))
    print(f"Sweep '{sweep.name}': {sweep.config.search.num_samples} trials over {', '.join(sweep.losses)} ({sweep.format_key} data); space: {space}")
    sweeps.print_summary(sweep, sweeps.run_sweep(sweep, resume=args.resume, address=config.distributed.address))


def cmd_compare(args) -> None:
    from embedlab.tracking import compare_runs

    rows, metric = compare_runs(args.experiment, args.tracking_uri)
    params = ["training.learning_rate", "training.batch_size", "training.max_steps"]
    print(f"{'run':40s} {'loss':40s} {'lr':>9s} {'batch':>5s} {'steps':>6s} {metric:>30s}  status")
    for row in rows:
        value = row["metric"]
        shown = f"{value:30.4f}" if value is not None else f"{'-':>30s}"
        lr, batch, steps = (_short_number(row["params"].get(name, "-")) for name in params)
        print(f"{row['name'][:40]:40s} {row['loss'][:40]:40s} {lr:>9s} {batch:>5s} {steps:>6s} {shown}  {row['status']}")


def _short_number(text: str) -> str:
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def cmd_formats(args) -> None:
    from embedlab.config import DataSource
    from embedlab.data import load_with_format
    from embedlab.formats import MetadataColumnsError, losses_for

    source = DataSource(path=args.path, columns=args.columns, label_column=args.label_column, format=args.format)
    try:
        dataset, detected = load_with_format(source)
    except MetadataColumnsError as error:  # name this command's flags, not the config keys
        raise EmbedlabError(error.with_flags()) from None
    print(f"format:        {detected.format.key} ({detected.format.title})")
    print(f"rows:          {detected.num_rows}")
    print(f"input columns: {', '.join(detected.input_columns)}")
    print(f"label column:  {detected.label_column or '-'} ({detected.label_kind})")
    print(f"losses:        {', '.join(losses_for(detected.format.key)) or 'none in the catalogue yet'}")


def cmd_evaluate(args) -> None:
    from embedlab.config import DataSource
    from embedlab.data import load_with_format
    from embedlab.evaluation import evaluator_for
    from embedlab.formats import MetadataColumnsError
    from embedlab.mining import mining_model_path
    from embedlab.model import EmbeddingModel

    model_path = mining_model_path(args.model)  # a run's folder is its model/; a wrong path fails before the data is read
    source = DataSource(path=args.data, columns=args.columns, label_column=args.label_column, format=args.format, limit=args.limit)
    try:
        dataset, detected = load_with_format(source)
    except MetadataColumnsError as error:  # name this command's flags, not the config keys
        raise EmbedlabError(error.with_flags()) from None
    evaluator = evaluator_for(dataset, detected, args.evaluator, args.name, args.batch_size, {}, where=args.data)
    model = EmbeddingModel(model_path)
    print(f"Data: {detected.describe()}, {detected.num_rows} rows; evaluator: {type(evaluator).__name__}")
    metrics = evaluator(model, output_path=args.output)
    for name, value in metrics.items():
        print(f"  {name:40s} {value:.4f}")
    print(f"{evaluator.primary_metric}: {metrics[evaluator.primary_metric]:.4f}")


def cmd_losses(args) -> None:
    from embedlab.formats import FORMATS
    from embedlab.losses import CATALOGUE, MODIFIERS, get_loss_class

    if args.name:
        loss_class = MODIFIERS.get(args.name) or get_loss_class(args.name)
        formats = "any (a loss modifier)" if args.name in MODIFIERS else ", ".join(getattr(loss_class, "formats", ("any",)))
        print(f"{loss_class.__name__}: formats {formats}")
        skipped = 3 if args.name in MODIFIERS else 2  # self, model (and the inner loss)
        for name, parameter in list(inspect.signature(loss_class.__init__).parameters.items())[skipped:]:
            default = parameter.default
            shown = getattr(default, "__name__", repr(default)) if default is not inspect.Parameter.empty else "required"
            choices = getattr(loss_class, "param_choices", {}).get(name)
            if choices:  # the names a config gives (distance_metric: euclidean), not the functions they stand for
                shown = f"{next((key for key, value in choices.items() if value is default), shown)} (one of {', '.join(choices)})"
            print(f"  {name} = {shown}")
        return
    for data_format in FORMATS:
        names = [name for name, loss_class in CATALOGUE.items() if data_format.key in loss_class.formats]
        print(f"{data_format.key:24s} {data_format.title:50s} {', '.join(names) or '-'}")
    print(f"{'modifiers (any format)':75s}{', '.join(MODIFIERS)}")


MINING_FLAGS = (
    "model", "corpus", "num_negatives", "range_min", "range_max", "max_score", "min_score", "absolute_margin", "relative_margin",
    "sampling_strategy", "batch_size", "query_prompt_name", "query_prompt", "corpus_prompt_name", "corpus_prompt", "seed", "workers", "cache_folder",
)  # the MiningConfig keys that `embedlab mine` takes as --kebab-case flags


def cmd_mine(args) -> None:
    from embedlab.config import ConversionConfig, DataSource, MiningConfig, _build
    from embedlab.conversions import mine_pairs
    from embedlab.data import load_with_format
    from embedlab.formats import MetadataColumnsError
    from embedlab.mining import check_output_path, check_settings, write_dataset

    check_output_path(args.output)
    raw = {name: getattr(args, name) for name in MINING_FLAGS if getattr(args, name) is not None}
    settings = _build(MiningConfig, {**raw, "use_gpu": args.gpu}, "mine")  # the config's checks and one-line errors
    check_settings(settings, where="")  # before the data is read
    conversion = ConversionConfig(to={"triplet": "triplets", "n-tuple": "n_tuples"}[args.output_format], threshold=args.threshold, mine=settings)
    source = DataSource(path=args.data, columns=args.columns, label_column=args.label_column, limit=args.limit)
    try:
        dataset, detected = load_with_format(source)
    except MetadataColumnsError as error:  # name this command's flags, not the config keys
        raise EmbedlabError(error.with_flags()) from None
    mined = mine_pairs(dataset, detected, conversion, where="").dataset
    if len(mined) == 0:  # training would refuse the empty file: say so now, and write nothing
        raise EmbedlabError("mining kept no row (every anchor has too few negatives, see above): raise --range-max, or loosen --range-min, the margins or score bounds; nothing written")
    write_dataset(mined, args.output)
    print(f"Wrote {len(mined)} rows ({', '.join(mined.column_names)}) to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedlab", description="Train and compare sentence-embedding models.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", help="YAML config, e.g. experiments/configs/stsb_cosent.yaml")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. training.batch_size=32")
    train.add_argument("--smoke-test", action="store_true", help="a few steps on a few rows, to check the wiring")
    train.add_argument("--workers", type=int, help="train on N Ray Train workers (data-parallel); default: in this process")
    train.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker (needs --workers)")
    train.set_defaults(handler=cmd_train)

    sweep = commands.add_parser("sweep", help="search losses and hyperparameters with Ray Tune + Optuna")
    sweep.add_argument("config", help="a sweep config, e.g. experiments/sweeps/stsb_score_pairs.yaml")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. search.num_samples=4")
    sweep.add_argument("--smoke-test", action="store_true", help="2 trials of a few steps on a few rows")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")
    sweep.add_argument("--address", help="the Ray cluster to run the trials on (host:port or ray://host:port); default: distributed.address, RAY_ADDRESS, else a local one")
    sweep.set_defaults(handler=cmd_sweep)

    compare = commands.add_parser("compare", help="the runs of an MLflow experiment, sorted by their primary metric")
    compare.add_argument("experiment", help="an experiment name, or a run / sweep output folder (its config names the experiment and store)")
    compare.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, or the folder's local store")
    compare.set_defaults(handler=cmd_compare)

    formats = commands.add_parser("formats", help="detect a data file's format and the losses that suit it")
    formats.add_argument("path")
    formats.add_argument("--columns", type=lambda text: text.split(","), help="comma-separated columns to keep")
    formats.add_argument("--label-column", help="the label column, when its name is not one embedlab knows (label, score, ...)")
    formats.add_argument("--format", help="override the detected format")
    formats.set_defaults(handler=cmd_formats)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model (embedlab's or sentence-transformers') on data")
    evaluate.add_argument("model", help="model folder, run folder (its model/) or hub id")
    evaluate.add_argument("data", help="evaluation data file or folder")
    evaluate.add_argument("--evaluator", help="evaluator class; default: the one that suits the data's format")
    evaluate.add_argument("--columns", type=lambda text: text.split(","), help="comma-separated columns to keep")
    evaluate.add_argument("--label-column", help="the label column, when its name is not one embedlab knows (label, score, ...)")
    evaluate.add_argument("--format", help="override the detected format")
    evaluate.add_argument("--name", default="eval", help="prefix of the metric names")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--limit", type=int, help="evaluate the first N rows only")
    evaluate.add_argument("--output", help="folder for the results CSV")
    evaluate.set_defaults(handler=cmd_evaluate)

    mine = commands.add_parser("mine", help="mine hard negatives: (anchor, positive) pairs -> triplets or n-tuples")
    mine.add_argument("data", help="(anchor, positive) pairs; or score pairs with --threshold, or 1/0 pairs (the 1s are kept)")
    mine.add_argument("--output", required=True, help="the mined rows: .parquet, .jsonl or .csv")
    mine.add_argument("--columns", type=lambda text: text.split(","), help="comma-separated columns to keep (anchor,positive)")
    mine.add_argument("--label-column", help="the label column, when its name is not one embedlab knows (label, score, ...)")
    mine.add_argument("--limit", type=int, help="the first N rows only")
    mine.add_argument("--threshold", type=float, help="score pairs: the pairs scoring at least this are (anchor, positive) pairs")
    mine.add_argument("--model", help="the model that ranks candidates: a model folder, hub id or run folder (default all-MiniLM-L6-v2)")
    mine.add_argument("--corpus", help="a file of passages to mine from (.txt: one per line); default: the data's positives")
    mine.add_argument("--output-format", choices=["triplet", "n-tuple"], default="triplet")
    for name, kind in (("num_negatives", int), ("range_min", int), ("range_max", int), ("max_score", float), ("min_score", float),
                       ("absolute_margin", float), ("relative_margin", float), ("batch_size", int), ("seed", int)):
        mine.add_argument(f"--{name.replace('_', '-')}", type=kind, help="as in sentence-transformers' mine_hard_negatives")
    mine.add_argument("--sampling-strategy", help="top (the default) or random")
    for name in ("query_prompt_name", "query_prompt", "corpus_prompt_name", "corpus_prompt"):
        mine.add_argument(f"--{name.replace('_', '-')}", help="a prompt (name) for the anchors / the corpus, where the model has them")
    mine.add_argument("--workers", type=int, help="embed on N Ray Data actors; default: in this process")
    mine.add_argument("--gpu", action="store_true", help="one GPU per Ray Data actor (needs --workers)")
    mine.add_argument("--cache-folder", help="embeddings cache (default: EMBEDLAB_CACHE, else ~/.cache/embedlab/embeddings)")
    mine.set_defaults(handler=cmd_mine)

    losses = commands.add_parser("losses", help="the format -> losses table, or one loss's parameters",
                                 description="Without a name: every data format and the losses that suit it. With a loss's name: its parameters and defaults.")
    losses.add_argument("name", nargs="?", help="a loss or loss modifier, e.g. CoSENTLoss")
    losses.set_defaults(handler=cmd_losses)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after flags (`train c.yaml --smoke-test a=1`): collect the stragglers.
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command not in ("train", "sweep") or any("=" not in item or item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        _quiet_libraries()
        args.handler(args)
    except EmbedlabError as error:
        print(f"embedlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "rerun it with --resume to continue" if args.command == "sweep" else "rerun the same command to resume from the last checkpoint"
        print(f"embedlab: interrupted; {again}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe (a worker's): a real failure
        # The output went to `head` or a pager that closed early: end as a program killed by SIGPIPE does,
        # quietly. Python's own flush at exit would raise again into the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    return 0


def _stdout_closed() -> bool:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    return False


if __name__ == "__main__":
    sys.exit(main())
