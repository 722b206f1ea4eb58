"""The sentence-transformers reference run the STSb benches share: its trainer, 1 epoch of CoSENTLoss with
all-MiniLM-L6-v2, batch 16, learning rate 2e-5, 10% warm-up, random batches, no checkpoints."""

import time

from embedlab.model import DEFAULT_MODEL, resolve_model_path


def train_st_cosent(train, seed: int, max_steps: int | None, output_dir: str):
    """Trains a fresh reference model on `train`; returns it and the wall seconds of its `train()` call."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers import losses as st_losses

    st_model = SentenceTransformer(str(resolve_model_path(DEFAULT_MODEL)), device="cpu")
    st_args = SentenceTransformerTrainingArguments(
        output_dir=output_dir, num_train_epochs=1, per_device_train_batch_size=16, learning_rate=2e-5, warmup_ratio=0.1,
        seed=seed, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, max_steps=max_steps or -1,
    )  # fmt: skip
    st_trainer = SentenceTransformerTrainer(model=st_model, args=st_args, train_dataset=train, loss=st_losses.CoSENTLoss(st_model))
    start = time.perf_counter()
    st_trainer.train()
    return st_model, time.perf_counter() - start
