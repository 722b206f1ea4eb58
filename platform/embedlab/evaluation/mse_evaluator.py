import numpy as np

from embedlab.evaluation.common import append_csv, check_lengths, prefixed


class MSEEvaluator:
    """Distillation: the mean squared error (x 100) between a teacher's embeddings of the source
    sentences and the student's embeddings of the target sentences (e.g. their translations), reported
    negated (`negative_mse`) so that greater is better.

    Args:
        source_sentences: what the teacher embeds (once, at construction).
        target_sentences: what the student embeds, row for row.
        teacher_model: the teacher model.
        show_progress_bar: show encoding progress.
        batch_size: encoding batch size.
        name: prefix of every metric name.
        write_csv: append results to ``mse_evaluation_{name}_results.csv``.
        truncate_dim: evaluate embeddings cut to this many dimensions.

    References:
        - Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation, Reimers and
          Gurevych, 2020: https://arxiv.org/abs/2004.09813

    Inputs:
        +-------------------------------+---------------------------+-------------------+
        | Inputs                        | Labels                    | Format            |
        +===============================+===========================+===================+
        | (source, target) sentences    | none (teacher model)      | any two columns   |
        +-------------------------------+---------------------------+-------------------+

    Example:
        evaluator = MSEEvaluator(english, french, teacher_model=teacher, name="en-fr")
        evaluator(student)["en-fr_negative_mse"]
    """

    greater_is_better = True
    formats = ()

    def __init__(self, source_sentences, target_sentences, teacher_model=None, show_progress_bar=False, batch_size=32, name="", write_csv=True, truncate_dim=None):
        check_lengths(source_sentences=source_sentences, target_sentences=target_sentences)
        self.target_sentences = list(target_sentences)
        self.show_progress_bar = show_progress_bar
        self.batch_size = batch_size
        self.name = name
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.csv_file = f"mse_evaluation{'_' + name if name else ''}_results.csv"
        self.source_embeddings = self._encode(teacher_model, list(source_sentences))

    @property
    def primary_metric(self) -> str:
        return f"{self.name}_negative_mse" if self.name else "negative_mse"

    def _encode(self, model, sentences) -> np.ndarray:
        return model.encode(sentences, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, truncate_dim=self.truncate_dim)

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        mse = float(((self.source_embeddings - self._encode(model, self.target_sentences)) ** 2).mean() * 100)
        if self.write_csv:
            append_csv(output_path, self.csv_file, ["epoch", "steps", "MSE"], [epoch, steps, mse])
        return prefixed(self.name, {"negative_mse": -mse})
