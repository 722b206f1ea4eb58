import numpy as np

from embedlab.evaluation.common import append_csv, check_lengths, prefixed
from embedlab.similarity import cos_sim


class TranslationEvaluator:
    """Translation retrieval: the share of source sentences whose most similar target is their own
    translation (`src2trg_accuracy`), the same the other way (`trg2src_accuracy`), and their mean.

    Args:
        source_sentences, target_sentences: parallel sentences, row i translating row i.
        show_progress_bar: show encoding progress.
        batch_size: encoding batch size.
        name: prefix of every metric name.
        print_wrong_matches: print the sources matched to a wrong target.
        write_csv: append results to ``translation_evaluation_{name}_results.csv``.
        truncate_dim: evaluate embeddings cut to this many dimensions.

    References:
        - Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation, Reimers and
          Gurevych, 2020: https://arxiv.org/abs/2004.09813

    Inputs:
        +---------------------------------+--------+-----------------------+
        | Inputs                          | Labels | Format                |
        +=================================+========+=======================+
        | (source, translation) pairs     | none   | anchor_positive_pairs |
        +---------------------------------+--------+-----------------------+

    Example:
        evaluator = TranslationEvaluator(["Hello"], ["Bonjour"], name="en-fr")
        evaluator(model)["en-fr_mean_accuracy"]
    """

    greater_is_better = True
    formats = ("anchor_positive_pairs",)  # parallel pairs; named with `type`, as such pairs default to retrieval

    def __init__(self, source_sentences, target_sentences, show_progress_bar=False, batch_size=16, name="", print_wrong_matches=False, write_csv=True, truncate_dim=None):
        check_lengths(source_sentences=source_sentences, target_sentences=target_sentences)
        self.source_sentences, self.target_sentences = list(source_sentences), list(target_sentences)
        self.show_progress_bar = show_progress_bar
        self.batch_size = batch_size
        self.name = name
        self.print_wrong_matches = print_wrong_matches
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.csv_file = f"translation_evaluation{'_' + name if name else ''}_results.csv"

    @property
    def primary_metric(self) -> str:
        return f"{self.name}_mean_accuracy" if self.name else "mean_accuracy"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        encode = dict(batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, convert_to_tensor=True, truncate_dim=self.truncate_dim)
        similarities = cos_sim(model.encode(self.source_sentences, **encode).float().cpu(), model.encode(self.target_sentences, **encode).float().cpu()).numpy()
        best_targets, best_sources = np.argmax(similarities, axis=1), np.argmax(similarities.T, axis=1)
        # A match counts when the retrieved text equals the expected one (duplicates in the data are fine).
        src2trg = np.mean([self.target_sentences[i] == self.target_sentences[j] for i, j in enumerate(best_targets)])
        trg2src = np.mean([self.source_sentences[i] == self.source_sentences[j] for i, j in enumerate(best_sources)])
        if self.print_wrong_matches:
            for i, j in enumerate(best_targets):
                if self.target_sentences[i] != self.target_sentences[j]:
                    print(f"Source {i} {self.source_sentences[i]!r} matched target {j} {self.target_sentences[j]!r}")
        if self.write_csv:
            append_csv(output_path, self.csv_file, ["epoch", "steps", "src2trg", "trg2src"], [epoch, steps, src2trg, trg2src])
        return prefixed(self.name, {"src2trg_accuracy": float(src2trg), "trg2src_accuracy": float(trg2src), "mean_accuracy": float((src2trg + trg2src) / 2)})

    @classmethod
    def from_data(cls, dataset, detected, **kwargs) -> "TranslationEvaluator":
        source, target = detected.input_columns[:2]
        return cls(dataset[source], dataset[target], **kwargs)
