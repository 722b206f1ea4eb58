import torch

from embedlab.evaluation.common import append_csv, check_lengths, prefixed


class LabelAccuracyEvaluator:
    """Classification accuracy of a SoftmaxLoss head on labelled pairs: how often its classifier picks
    the gold class. It evaluates the loss's head and the model together.

    Args:
        sentences1, sentences2: the pairs.
        labels: the gold class ids (as the training data's classes map to ids).
        softmax_model: the trained SoftmaxLoss (holding the classifier).
        name: prefix of every metric name.
        batch_size: pairs per forward pass.
        write_csv: append results to ``accuracy_evaluation_{name}_results.csv``.

    References:
        - Sentence-BERT, Reimers and Gurevych, 2019: https://arxiv.org/abs/1908.10084

    Inputs:
        +--------------------------------+-------+------------+
        | Inputs                         | Labels| Format     |
        +================================+=======+============+
        | (sentence_A, sentence_B) pairs | class | pair_class |
        +--------------------------------+-------+------------+

    Example:
        evaluator = LabelAccuracyEvaluator(premises, hypotheses, labels, softmax_model=loss, name="nli-dev")
        evaluator(model)["nli-dev_accuracy"]
    """

    greater_is_better = True
    formats = ()  # needs the trained SoftmaxLoss, so it is built in code, not from a config entry

    def __init__(self, sentences1, sentences2, labels, softmax_model, name="", batch_size=32, write_csv=True):
        check_lengths(sentences1=sentences1, sentences2=sentences2, labels=labels)
        self.sentences1, self.sentences2, self.labels = list(sentences1), list(sentences2), list(labels)
        self.softmax_model = softmax_model
        self.name = name
        self.batch_size = batch_size
        self.write_csv = write_csv
        self.csv_file = f"accuracy_evaluation{'_' + name if name else ''}_results.csv"

    @property
    def primary_metric(self) -> str:
        return f"{self.name}_accuracy" if self.name else "accuracy"

    @torch.inference_mode()
    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        was_training = self.softmax_model.training
        self.softmax_model.eval()
        correct = 0
        for start in range(0, len(self.labels), self.batch_size):
            end = start + self.batch_size
            features = [{key: value.to(model.device) for key, value in model.tokenize(texts[start:end]).items()} for texts in (self.sentences1, self.sentences2)]
            _, logits = self.softmax_model(features, None)
            correct += (logits.argmax(dim=1).cpu() == torch.tensor(self.labels[start:end])).sum().item()
        self.softmax_model.train(was_training)
        accuracy = correct / len(self.labels)
        if self.write_csv:
            append_csv(output_path, self.csv_file, ["epoch", "steps", "accuracy"], [epoch, steps, accuracy])
        return prefixed(self.name, {"accuracy": accuracy})
