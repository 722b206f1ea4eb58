"""Tune's trial function for a sweep, and what a trial needs to find on its node; nothing heavy to import.

Tune's trial process imports this module before it runs the function. A trial of several workers starts
its other ranks here (embedlab.trial_group.start) before this process imports torch, transformers and the
rest of embedlab, so the ranks' imports run side by side instead of one after the other.
"""

import os


def train_trial(params: dict, workers: int, gpus: float, cpus_per_worker: int, **settings) -> None:
    """One trial: `embedlab.sweep.run_trial` with the trial's sampled `params`."""
    if workers > 1:
        from embedlab import trial_group

        trial_group.start(workers, use_gpu=gpus > 0, cpus_per_worker=cpus_per_worker)
    from embedlab.sweep import run_trial

    run_trial(params, workers=workers, gpus=gpus, cpus_per_worker=cpus_per_worker, **settings)


def unseen_on_other_nodes(paths: list[str]) -> dict[str, list[str]]:
    """Each live node of the cluster but this one (by address) -> the paths among `paths` that it does not see."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from embedlab.errors import EmbedlabError

    here = ray.get_runtime_context().get_node_id()
    nodes = [node for node in ray.nodes() if node["Alive"] and node["NodeID"] != here]
    look = ray.remote(num_cpus=0)(_unseen)
    answers = [look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(paths) for node in nodes]
    try:
        return {node["NodeManagerAddress"]: missing for node, missing in zip(nodes, ray.get(answers, timeout=120), strict=True) if missing}
    except ray.exceptions.GetTimeoutError:
        raise EmbedlabError("the cluster's other nodes did not answer within 2 minutes whether they see the sweep's data and folder: check the cluster with `ray status`") from None


def _unseen(paths: list[str]) -> list[str]:
    return [path for path in paths if not os.path.exists(path)]
