"""Tune's trial function for a sweep, in a module that imports nothing heavy.

Tune's trial process imports this module before it runs the function. A trial of several workers starts
its other ranks here (embedlab.trial_group.start) before this process imports torch, transformers and the
rest of embedlab, so the ranks' imports run side by side instead of one after the other.
"""


def train_trial(params: dict, workers: int, gpus: float, cpus_per_worker: int, **settings) -> None:
    """One trial: `embedlab.sweep.run_trial` with the trial's sampled `params`."""
    if workers > 1:
        from embedlab import trial_group

        trial_group.start(workers, use_gpu=gpus > 0, cpus_per_worker=cpus_per_worker)
    from embedlab.sweep import run_trial

    run_trial(params, workers=workers, gpus=gpus, cpus_per_worker=cpus_per_worker, **settings)
