"""What a sweep's trials report to Tune, in a module that imports no model code.

A trial of several workers hands `SweepReportCallback` to its TorchTrainer, whose controller process
unpickles it: importing this module there costs nothing beyond Ray (embedlab's package imports model code
only when it is used), where importing embedlab.sweep would load transformers, datasets and MLflow into
every trial's controller.
"""

import math
import numbers

from ray.tune.integration.ray_train import TuneReportCallback

METRIC_STATUS = "metric_status"  # in every report: ok | nan | missing, what the sweep's metric really was (see for_tune)


def for_tune(metrics: dict, metric: str, mode: str) -> dict:
    """What a trial reports to Tune: its metrics, with the sweep's metric always a number that can be compared.

    Tune ends the whole sweep on a result without the metric (its strict metric check), Optuna refuses NaN as a
    trial value (Ray's OptunaSearch logs the refusal and leaves the Optuna trial unfinished) and ASHA never stops
    a NaN trial (NaN < cutoff is false) while its percentile cutoffs skip NaN. So a NaN (or infinite) or missing
    metric is reported as the worst value there is, -inf for mode max (+inf for min): ASHA stops the trial at its
    next rung, TPE records it as the worst trial (and learns to avoid its region), and `metric_status` says what
    the metric really was; the summary reads it back, so trials.csv and the best-trial choice never see the
    stand-in. The trial's own MLflow run records the true values (NaN as NaN)."""
    value = metrics.get(metric)
    status = "missing" if not is_number(value) else ("ok" if math.isfinite(value) else "nan")
    reported = {**metrics, METRIC_STATUS: status}
    if status != "ok":
        reported[metric] = -math.inf if mode == "max" else math.inf
    return reported


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's scalars too


class SweepReportCallback(TuneReportCallback):
    """Ray Train's TuneReportCallback (a multi-worker trial's reports to Tune), through `for_tune`, with the
    trial's own keys (`extra`) added to rank 0's metrics."""

    def __init__(self, extra: dict, metric: str, mode: str):
        super().__init__()
        self.extra, self.metric, self.mode = extra, metric, mode

    def after_report(self, run_context, metrics, checkpoint):
        first = for_tune({**metrics[0], **self.extra}, self.metric, self.mode)
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)
