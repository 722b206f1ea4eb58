"""The loss-driven training loop, in one process or on each Ray Train worker.

One explicit loop: batch sampler -> collate -> loss -> backward -> clip -> AdamW -> linear schedule,
evaluation every `eval_steps` and at the end, and checkpoints that hold everything needed to resume
exactly (weights, optimizer, scheduler, RNG states, sampler position): a resumed run ends with the same
weights as one that was never interrupted.

Data-parallel (`world_size` > 1, a torch.distributed process group set up by Ray Train, or by a sweep's
trial group, embedlab.trial_group): the rules a worker follows (its shard of each global batch, the
shard's loss weight, averaged gradients, the logged loss, the final weights check) are in
embedlab.distributed; this loop applies them. Rank 0 evaluates and saves the model; every rank saves its
own RNG state in checkpoints.
"""

import json
import math
import random
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from embedlab.config import SINGLE_DATA_SET, TrainingConfig
from embedlab.data import SAMPLERS, Collator, MixtureSampler, row_token_lengths
from embedlab.distributed import average_gradients, check_ranks_agree, mean_over_ranks, shard_of, shard_weight
from embedlab.errors import EmbedlabError
from embedlab.identity import MAX_KEYS_SHOWN, changed_keys, fingerprint

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
TRAINING_METRICS = ("loss", "learning_rate", "train_seconds", "train_samples_per_second")  # the rest: evaluators'


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `training.mixed_precision`: auto means bf16 on a GPU that has it and full
    precision elsewhere (CPU autocast is slower than float32 on most CPUs); bf16 / fp16 are honoured on
    any device torch supports them on."""
    if mixed_precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_sampler(args: TrainingConfig, loss, dataset, detected, world_size: int = 1, seed: int | None = None, lengths=None):
    """The sampler of global batches: `batch_size` rows for each of the `world_size` workers. For a
    mixture (`loss`, `dataset`, `detected` and `lengths` mappings by data set name), a MixtureSampler over
    each data set's own sampler, seeded apart (the seed plus a number of its name) so their shuffles differ.
    `lengths`, each row's token count (embedlab.data.row_token_lengths), makes length-grouped batches."""
    if isinstance(dataset, dict):
        samplers = {
            name: make_sampler(
                args, loss[name], dataset[name], detected[name], world_size, seed=args.seed + zlib.crc32(name.encode()), lengths=(lengths or {}).get(name)
            )
            for name in dataset
        }
        return MixtureSampler(samplers, args.mixture, {name: len(rows) for name, rows in dataset.items()}, args.seed)
    name = getattr(loss, "batch_sampler", "random") if args.sampler == "auto" else args.sampler
    if name not in SAMPLERS:  # the config's value is checked by its schema; a user's loss class names its own
        raise EmbedlabError(f"{type(loss).__name__}.batch_sampler is '{name}': a loss may ask for {', '.join(SAMPLERS)}")
    return SAMPLERS[name](dataset, detected, args.batch_size * world_size, args.seed if seed is None else seed, args.drop_last, lengths)


def packs_sequences(args: TrainingConfig, loss) -> bool:
    """Whether `embed` packs texts into shared rows: `training.pack_sequences`, where auto asks the model.
    The loss modifiers (MatryoshkaLoss, AdaptiveLayerLoss, Matryoshka2dLoss) run the model through their own
    forward and train padded batches either way (EmbeddingModel.forward_replaced); true asks for packing
    everywhere, so it refuses them."""
    unsupported = loss.model.transformer.packing_unsupported()
    if args.pack_sequences is not True:
        return args.pack_sequences == "auto" and unsupported is None
    modifier = next((module for module in loss.modules() if getattr(module, "is_modifier", False)), None)
    if unsupported is None and modifier is not None:
        unsupported = f"{type(modifier).__name__} runs the model through its own forward, which packing would bypass"
    if unsupported:
        raise EmbedlabError(f"training.pack_sequences is true, but {unsupported}: set it to auto or false to train padded batches")
    return True


def groups_by_length(args: TrainingConfig, loss) -> bool:
    """Whether a data set's batches are length-grouped: `training.group_by_length`, where auto asks the loss."""
    if args.group_by_length == "auto":
        return getattr(loss, "group_by_length", False)
    return args.group_by_length


class LossMixture(torch.nn.ModuleDict):
    """The losses of a mixture's data sets, by name, around one shared model: what the optimizer steps,
    checkpoints hold and workers average (the shared model's parameters once)."""

    @property
    def model(self):
        return next(iter(self.values())).model

    def get_config_dict(self) -> dict:
        return {name: getattr(loss, "get_config_dict", dict)() for name, loss in self.items()}


def make_optimizer(loss, args: TrainingConfig) -> torch.optim.Optimizer:
    # As the Hugging Face trainer: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, parameter in loss.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) steps all parameters at once: the per-tensor default spends
    # ~0.13 s a step on MiniLM on 2 CPU cores. The Hugging Face trainer uses it too.
    return torch.optim.AdamW(groups, lr=args.learning_rate, fused=True)


def linear_schedule(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_to_lists(state):
    """random.getstate() nests tuples; torch's safe loader wants plain lists and ints."""
    return [state[0], list(state[1]), state[2]]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step (a checkpoint is complete once renamed into place)."""
    checkpoints = [path for path in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*") if (path / STATE_FILE).exists()]
    return max(checkpoints, key=lambda path: int(path.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


class Interval:
    """Training loss and throughput between two evaluations; for a mixture also each data set's loss."""

    def __init__(self, names: list[str]):
        self.loss_sum, self.steps, self.samples, self.seconds = 0.0, 0, 0, 0.0
        self.by_name = {name: [0.0, 0] for name in names} if len(names) > 1 else {}

    def add(self, name: str, loss: float, samples: int, seconds: float) -> None:
        self.loss_sum, self.steps, self.samples, self.seconds = self.loss_sum + loss, self.steps + 1, self.samples + samples, self.seconds + seconds
        if name in self.by_name:
            self.by_name[name][0] += loss
            self.by_name[name][1] += 1

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.steps)

    def metrics(self) -> dict[str, float]:
        if not self.steps:  # e.g. a resumed run that had already finished
            return {}
        # A data set not drawn since the last evaluation has no loss to report (NaN would read as diverged).
        by_name = {f"train_loss/{name}": total / steps for name, (total, steps) in self.by_name.items() if steps}
        return {"loss": self.mean_loss, **by_name, "train_samples_per_second": self.samples / self.seconds}


class Trainer:
    """Trains `loss.model` with `loss` on `dataset`; see the module docstring.

    `loss`, `dataset` and `detected` are one each, or mappings by data set name for a mixture of data
    sets (each batch from one data set, with that data set's loss; see embedlab.data.MixtureSampler).

    Callbacks are objects with any of `on_step_end(trainer, step, loss_value)`,
    `on_evaluate(trainer, step, metrics)`, `on_checkpoint(trainer, step, path)`,
    `keep_model(trainer, metrics)` (false: the trained model is not saved; a sweep keeps its best trials')
    and `on_train_end(trainer, metrics)`.
    """

    def __init__(
        self,
        loss,
        dataset,
        detected,
        args: TrainingConfig,
        output_dir: str | Path,
        evaluators=(),
        callbacks=(),
        rank: int = 0,
        world_size: int = 1,
        identity: dict | None = None,
        prompts: dict[str, dict[str, str]] | None = None,
        shared_output_dir: bool = False,
    ):
        mixture = isinstance(dataset, dict)
        self.losses = loss if mixture else {SINGLE_DATA_SET: loss}
        self.datasets = dataset if mixture else {SINGLE_DATA_SET: dataset}
        formats = detected if mixture else {SINGLE_DATA_SET: detected}
        self.loss = LossMixture(loss) if mixture and not isinstance(loss, LossMixture) else loss
        self.model = self.loss.model
        self.args = args
        self.output_dir = Path(output_dir)
        self.rank, self.world_size = rank, world_size
        # Every rank writes its checkpoints into the one `output_dir` (a trial group's ranks, on storage every
        # node mounts), so rank 0 alone prepares and completes each checkpoint folder. Ray Train's workers
        # write folders of their own, which Ray Train merges.
        self.shared_checkpoints = shared_output_dir and world_size > 1
        # The run identity (embedlab.identity): checkpoints and results.json carry it, and a checkpoint
        # of another run is never loaded.
        self.identity = identity or {}
        self.fingerprint = fingerprint(self.identity) if identity else None
        self.is_main = rank == 0
        self.evaluators = list(evaluators) if self.is_main else []
        self.callbacks = list(callbacks)
        prompts = prompts or {}  # data set -> column -> prompt
        self.collates = {name: Collator(self.model.tokenize, formats[name], rows, prompts.get(name)) for name, rows in self.datasets.items()}
        lengths = {
            name: row_token_lengths(self.model, rows, formats[name], self.collates[name].prompts)
            for name, rows in self.datasets.items()
            if groups_by_length(args, self.losses[name])
        }
        self.sampler = make_sampler(args, loss, dataset, detected, world_size, lengths=lengths if mixture else lengths.get(SINGLE_DATA_SET))
        # No-duplicates batching can give a different number of batches per epoch: count them all.
        self.total_steps = args.max_steps or sum(len(self.worker_batches(epoch)) for epoch in range(args.epochs))
        if self.total_steps == 0:
            rows = sum(len(rows) for rows in self.datasets.values())
            raise EmbedlabError(f"no training steps: {rows} rows give fewer batches than the {world_size} workers")
        self.model.pack_sequences = packs_sequences(args, self.loss)
        self.optimizer = make_optimizer(self.loss, args)
        self.autocast_dtype = autocast_dtype(args.mixed_precision, self.model.device)
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.model.device.type, enabled=self.autocast_dtype == torch.float16)
        self.scheduler = linear_schedule(self.optimizer, math.ceil(args.warmup_ratio * self.total_steps), self.total_steps)
        self.global_step = 0
        self.epoch, self.batch_in_epoch = 0, 0  # the sampler position
        self.history: list[dict] = []
        self.train_seconds = 0.0  # in training steps only: no evaluation, checkpoints or start-up

    def worker_batches(self, epoch: int) -> list[tuple[str, list[int], int]]:
        """This worker's shard of each global batch of an epoch, with its data set's name and the global
        batch's size. A global batch is split into `world_size` contiguous shards whose sizes differ by
        at most one, so every worker count sees the same stream (and every worker the same data set at
        each step); a last batch with fewer rows than workers is left out (no worker may have nothing
        to embed while the others gather)."""
        batches = self.sampler.batches(epoch)
        if not isinstance(self.sampler, MixtureSampler):
            batches = [(SINGLE_DATA_SET, batch) for batch in batches]
        shards = []
        for name, batch in batches:
            if len(batch) >= self.world_size:
                shards.append((name, shard_of(batch, self.rank, self.world_size), len(batch)))
        return shards

    # --- the loop -------------------------------------------------------------------------------
    def train(self, resume_from: Path | None = None) -> dict[str, float]:
        """Trains to the end; resumes from `resume_from`, else (with `resume`) from the output folder's last checkpoint."""
        set_seed(self.args.seed)
        if not self.args.resume and (self.is_main or not self.shared_checkpoints):
            shutil.rmtree(self.output_dir / "checkpoints", ignore_errors=True)
        if self.shared_checkpoints:  # rank 0's choice, made after its clean-up, is every rank's
            chosen = [resume_from or latest_checkpoint(self.output_dir) if self.is_main else None]
            torch.distributed.broadcast_object_list(chosen, src=0)
            checkpoint = chosen[0]
        else:
            checkpoint = resume_from or latest_checkpoint(self.output_dir)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        device = self.model.device
        self.loss.train()
        show_progress = self.args.show_progress_bar and self.is_main
        progress = tqdm(total=self.total_steps, initial=self.global_step, desc="Training", disable=not show_progress)
        interval = Interval(list(self.losses))
        while self.global_step < self.total_steps:
            batches = self.worker_batches(self.epoch)
            if not batches:  # max_steps with an epoch too small for every worker: never loop forever
                raise EmbedlabError(f"epoch {self.epoch} gives no batch to each of the {self.world_size} workers: use a smaller batch size or fewer workers")
            for name, indices, global_rows in batches[self.batch_in_epoch :]:
                step_start = time.perf_counter()
                features, labels = self.collates[name](self.datasets[name][indices])
                features = [{key: value.to(device) for key, value in batch.items()} for batch in features]
                labels = labels.to(device) if labels is not None else None
                with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    loss_value = self.losses[name](features, labels)
                # Each worker's loss is a mean over its shard: weighted by the shard's share of the global
                # batch, the averaged gradients are those of the mean over the whole global batch.
                loss_value = loss_value * shard_weight(len(indices), global_rows)
                self.scaler.scale(loss_value).backward()
                if self.world_size > 1:
                    average_gradients(self.loss)  # scaled gradients: an overflow on any rank skips the step on all
                self.scaler.unscale_(self.optimizer)  # clip the true gradients
                if self.args.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.loss.parameters(), self.args.max_grad_norm)
                self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
                self.scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.global_step += 1
                self.batch_in_epoch += 1
                interval.add(name, loss_value.item(), global_rows, time.perf_counter() - step_start)
                self.train_seconds += time.perf_counter() - step_start
                progress.update(1)
                progress.set_postfix(loss=f"{interval.mean_loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                for callback in self.callbacks:
                    if hasattr(callback, "on_step_end"):
                        callback.on_step_end(self, self.global_step, loss_value.item())
                finished = self.global_step >= self.total_steps
                if self.args.eval_steps and self.global_step % self.args.eval_steps == 0 and not finished:
                    self.evaluate(extra=self._over_ranks(interval.metrics()))
                    interval = Interval(list(self.losses))
                # And at the end, so that rerunning a finished run resumes at its end instead of training again.
                if self.args.save_steps and (self.global_step % self.args.save_steps == 0 or finished):
                    self.save_checkpoint()
                if finished:
                    break
            else:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        progress.close()
        metrics = self.evaluate(extra=self._over_ranks(interval.metrics()))
        check_ranks_agree(self.loss)
        if self.is_main:
            if all(callback.keep_model(self, metrics) for callback in self.callbacks if hasattr(callback, "keep_model")):
                self.model.save(self.output_dir / "model")
            results = {"step": self.global_step, "fingerprint": self.fingerprint, "identity": self.identity, "metrics": metrics, "history": self.history}
            (self.output_dir / "results.json").write_text(json.dumps(results, indent=2))
        for callback in self.callbacks:
            if hasattr(callback, "on_train_end"):
                callback.on_train_end(self, metrics)
        return metrics

    @staticmethod
    def _over_ranks(metrics: dict[str, float]) -> dict[str, float]:
        """Training losses as the mean over ranks (each rank's is weighted by its shard): the global batch's."""
        return {key: mean_over_ranks(value) if key == "loss" or key.startswith("train_loss/") else value for key, value in metrics.items()}

    def evaluate(self, extra: dict | None = None) -> dict[str, float]:
        metrics = dict(extra or {})
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        metrics["train_seconds"] = self.train_seconds
        for evaluator in self.evaluators:
            metrics.update(evaluator(self.model, output_path=self.output_dir / "eval", epoch=self.epoch, steps=self.global_step))
        if self.history and self.history[-1]["step"] == self.global_step:
            self.history.pop()  # a finished run rerun: its final evaluation is replaced, not repeated
        self.history.append({"step": self.global_step, **metrics})
        for callback in self.callbacks:
            if hasattr(callback, "on_evaluate"):
                callback.on_evaluate(self, self.global_step, metrics)
        return metrics

    # --- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        folder = self.output_dir / "checkpoints"
        final = folder / f"{CHECKPOINT_PREFIX}{self.global_step}"
        partial = folder / f".partial-{CHECKPOINT_PREFIX}{self.global_step}"
        owns_folder = self.is_main or not self.shared_checkpoints
        if owns_folder:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        if self.shared_checkpoints:
            torch.distributed.barrier()  # the folder exists before the other ranks write into it
        rng = _rng_state()
        rng["python"] = _python_rng_to_lists(rng["python"])
        torch.save(rng, partial / f"rng_state_rank{self.rank}.pt")  # dropout differs per worker: one file each
        if self.is_main:  # weights and optimizer states are the same on every worker
            self._save_training_state(partial)
        if self.shared_checkpoints:
            torch.distributed.barrier()  # every rank's file is in before the folder is complete
        if owns_folder:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)  # atomic: a checkpoint folder without the prefix-free name is never read
            self._prune_checkpoints(folder)
        for callback in self.callbacks:
            if hasattr(callback, "on_checkpoint"):
                callback.on_checkpoint(self, self.global_step, final)
        return final

    def _save_training_state(self, folder: Path) -> None:
        save_model(self.loss, str(folder / "weights.safetensors"), force_contiguous=True)  # a mixture's shared model: its tensors once
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "grad_scaler": self.scaler.state_dict()}, folder / "training_state.pt")
        state = {
            "fingerprint": self.fingerprint,
            "identity": self.identity,
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "history": self.history,
            "train_seconds": self.train_seconds,
        }
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2))

    def _prune_checkpoints(self, folder: Path) -> None:
        checkpoints = sorted(folder.glob(f"{CHECKPOINT_PREFIX}*"), key=lambda path: int(path.name.removeprefix(CHECKPOINT_PREFIX)))
        for old in checkpoints[: -self.args.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)

    def check_checkpoint(self, path: Path) -> dict:
        """The checkpoint's state, if it belongs to this run; else an EmbedlabError."""
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("fingerprint") != self.fingerprint:
            changes = "; ".join(changed_keys(state.get("identity") or {}, self.identity)[:MAX_KEYS_SHOWN])
            raise EmbedlabError(
                f"checkpoint '{path}' belongs to another run (changed: {changes or 'unknown'}): "
                "use another output_dir, or training.resume=false to start over"
            )
        if state["total_steps"] != self.total_steps:
            raise EmbedlabError(
                f"checkpoint '{path}' belongs to a run of {state['total_steps']} steps, this one has {self.total_steps}: "
                "use another output_dir, or training.resume=false to start over"
            )
        return state

    def load_checkpoint(self, path: Path) -> None:
        state = self.check_checkpoint(path)
        load_model(self.loss, str(path / "weights.safetensors"), device=str(self.model.device))
        training_state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(training_state["optimizer"])
        self.scheduler.load_state_dict(training_state["scheduler"])
        if "grad_scaler" in training_state:  # checkpoints before fp16 loss scaling have none
            self.scaler.load_state_dict(training_state["grad_scaler"])
        rng = torch.load(path / f"rng_state_rank{self.rank}.pt", weights_only=True)
        rng["python"] = (rng["python"][0], tuple(rng["python"][1]), rng["python"][2])
        _restore_rng(rng)
        self.global_step = state["global_step"]
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.history = state["history"]
        self.train_seconds = state.get("train_seconds", 0.0)
        print(f"Resuming from {path} (step {self.global_step} of {self.total_steps})")
