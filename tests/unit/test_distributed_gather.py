"""Cross-worker in-batch negatives are exact at any batch size: 2 gloo workers, each with its shard of a
global batch that need not divide evenly (7 rows: shards of 4 and 3), gathering embeddings with gradients,
give the loss and every parameter gradient of 1 process with the whole global batch, in float64.

The matrix is generated from the catalogue's declarations, so a new gathering loss joins it by itself:
every loss in `CATALOGUE` whose constructor takes `gather_across_devices` (cached and plain forms are both
catalogue entries) x modifiers {none, MatryoshkaLoss, AdaptiveLayerLoss, Matryoshka2dLoss} x {0, 1, 3}
hard-negative columns, where the loss's declared `formats` take that many columns.

Spawning processes is slow on a small machine, so one spawn runs every case: the workers loop over the
cases and save their results; the one-process side runs in the test process, one test id per case.
"""

import inspect
import os
import random
import re
import socket
import traceback
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedlab import EmbeddingModel, distributed
from embedlab.losses import CATALOGUE, MODIFIERS, CachedMultipleNegativesRankingLoss, Matryoshka2dLoss
from embedlab.losses.adaptive_layer_loss import wraps_cached_loss

WORLD_SIZE = 2
ROWS = 7  # shards of 4 and 3: the uneven last batch of an epoch
# Each worker's Python RNG differs (as it does once rank 0 alone has run an evaluator): these seeds make the
# workers' own first draws of a layer (1 of 2) and of sizes (2 of 3) differ, so the modifiers' random
# choices agree only because every worker takes rank 0's (see the test of these seeds).
RANK_SEEDS = (0, 1)

# 8 rows x (anchor, positive, 3 hard negatives), all texts distinct (a repeated text would be a false
# negative the guide filters, which is a tie a float rounding could break either way).
TEXTS = [
    ("a man eats food", "someone eats", "a man plays a guitar", "the sky is blue", "a boat on the water"),
    ("the dog runs", "a dog is running", "a cat sits", "the old house", "a red car drives"),
    ("two cats sit on a table", "cats are sitting", "two dogs walk in the park", "a bird flies", "the river is green"),
    ("a bird flies over the field", "the bird is flying", "a plane in the sky", "a child is sad", "the kitchen table"),
    ("a red car drives on the road", "a car on the road", "a blue train", "a horse rides", "what is the answer ?"),
    ("the old house near the river", "an old home", "a young woman walks", "the beach at the city", "how fast is the horse"),
    ("a boat on the water", "a ship in the sea", "a man is riding a horse", "three small dogs", "the piano plays"),
    ("what is the capital of france ?", "paris is the capital of france", "where is the mountain", "the country is big", "a happy child plays"),
]
NEGATIVES_OF_FORMAT = {"anchor_positive_pairs": 0, "triplets": 1, "n_tuples": 3}

# Tolerances (float64, eps 2.2e-16). The two sides run the same maths with sums in another order (per
# worker then across workers, each shard padded to its own longest text): measured over the matrix, the
# loss differs by at most 1.3e-15 relative and a gradient entry by 6.3e-14 of its tensor's largest entry.
# A gradient entry passes within RTOL of the reference, or within RTOL x ATOL_SHARE of its tensor's
# largest entry (entries that are ~0 carry only absolute rounding noise).
RTOL = 1e-7
ATOL_SHARE = 1e-3
# Gradients that are zero in exact maths: attention key biases (softmax over keys ignores a constant added
# to every logit of a query; see test_loss_parity.py). Both sides must be below this absolute floor.
ZERO_GRADIENT = re.compile(r"attention\.self\.key\.bias$")
ZERO_FLOOR = 1e-14  # measured at most 1.5e-18
LIVE_GRADIENT = 1e-6  # some reference gradient above this, else a case tests nothing


@dataclass(frozen=True)
class Case:
    loss: str
    modifier: str | None = None
    negatives: int = 0
    rows: int = ROWS
    params: dict = field(default_factory=dict, hash=False, compare=False)
    tag: str = ""

    @property
    def id(self) -> str:
        return f"{self.loss}-{self.modifier or 'plain'}-{self.negatives}neg-{self.rows}rows{self.tag}"


def gathering_losses() -> list[str]:
    return [name for name, loss_class in CATALOGUE.items() if "gather_across_devices" in inspect.signature(loss_class.__init__).parameters]


def negative_counts(loss_name: str) -> list[int]:
    formats = getattr(CATALOGUE[loss_name], "formats", ())
    return sorted({NEGATIVES_OF_FORMAT[key] for key in formats if key in NEGATIVES_OF_FORMAT})


def _cases() -> list[Case]:
    cases = []
    for loss_name in gathering_losses():
        for modifier in (None, *MODIFIERS):
            cases += [Case(loss_name, modifier, negatives) for negatives in negative_counts(loss_name)]
        most = max(negative_counts(loss_name))
        cases.append(Case(loss_name, None, most, rows=8))  # equal shards (4 + 4): the common, fast path
        cases.append(Case(loss_name, None, most, rows=3))  # shards of 2 and 1
    # Settings beyond the defaults that change which gathered rows a loss reads or masks.
    every_direction = {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")}
    cases += [
        Case("MultipleNegativesRankingLoss", None, 3, params=every_direction, tag="-all_directions"),
        Case("MultipleNegativesRankingLoss", None, 1, params={"hardness_mode": "all_negatives", "hardness_strength": 3.0}, tag="-hardness_all"),
        Case("MultipleNegativesRankingLoss", None, 3, params={"hardness_mode": "hard_negatives", "hardness_strength": 3.0}, tag="-hardness_hard"),
        Case("CachedMultipleNegativesRankingLoss", "MatryoshkaLoss", 1, params=every_direction, tag="-all_directions"),
        Case("GISTEmbedLoss", None, 1, params={"margin_strategy": "relative", "margin": 0.01, "contrast_anchors": False}, tag="-relative"),
        Case("CachedGISTEmbedLoss", None, 3, params={"contrast_positives": False}, tag="-anchors_only"),
    ]
    return [case for case in cases if case.loss in CATALOGUE]


CASES = _cases()


def build_loss(case: Case, model, guide, gather: bool):
    """The case's loss, from the constructors' signatures: a guide where one is taken, small mini-batches
    for the cached losses (several run per shard), every size of the tiny model for Matryoshka."""
    loss_class = CATALOGUE[case.loss]
    accepted = inspect.signature(loss_class.__init__).parameters
    params = {"gather_across_devices": gather, **case.params}
    if "guide" in accepted:
        params["guide"] = guide
    if "mini_batch_size" in accepted:
        params["mini_batch_size"] = 2
    loss = loss_class(model, **params)
    if case.modifier is not None:
        modifier = MODIFIERS[case.modifier]
        accepted = inspect.signature(modifier.__init__).parameters
        modifier_params = {}
        if "matryoshka_dims" in accepted:
            dimension = model.embedding_dimension
            modifier_params["matryoshka_dims"] = [dimension, dimension // 2, dimension // 4]
        if "n_dims_per_step" in accepted:
            modifier_params["n_dims_per_step"] = 2  # a random choice of sizes, which every worker must share
        loss = modifier(model, loss, **modifier_params)
    return loss.eval()  # no dropout (GIST keeps its guide in eval mode itself)


def refused_by_declaration(case: Case, model, guide) -> str | None:
    """Why the case's combination is not meant to work, by the modifier's own declaration, else None.

    The rule: a modifier declaring `accepts_cached_losses = False` (AdaptiveLayerLoss, Matryoshka2dLoss:
    they replay the transformer's layers through the model's forward, which a GradCache loss calls without
    a graph and again inside backward) does not wrap a cached loss (`uses_gradient_cache`). Today that
    skips AdaptiveLayerLoss and Matryoshka2dLoss around CachedMultipleNegativesRankingLoss,
    CachedMultipleNegativesSymmetricRankingLoss and CachedGISTEmbedLoss.
    """
    if case.modifier is None or getattr(MODIFIERS[case.modifier], "accepts_cached_losses", True):
        return None
    inner = build_loss(Case(case.loss, None, case.negatives, case.rows, case.params), model, guide, gather=False)
    if wraps_cached_loss(inner):
        return f"{case.modifier} declares accepts_cached_losses = False and {case.loss} is cached"
    return None


def shard(rows: int, rank: int, world_size: int) -> slice:
    """The trainer's dealing: contiguous shards in rank order, sizes as equal as possible (lower ranks
    take the extra rows)."""
    base, extra = divmod(rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def features(model, case: Case, rows: slice) -> list[dict]:
    columns = list(zip(*TEXTS[: case.rows], strict=True))[: 2 + case.negatives]
    return [model.tokenize(list(column[rows])) for column in columns]


def load_models(model_path: str, guide_path: str):
    model = EmbeddingModel(model_path, device="cpu").double().eval()
    guide = EmbeddingModel(guide_path, device="cpu").double().eval()
    return model, guide


def gradients(model) -> dict:
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def _check_helpers(rank: int) -> dict:
    """The collectives themselves, on uneven sizes: rows, offsets, gradients back to the owner's rows."""
    rows = 3 if rank == 0 else 1
    local = torch.arange(rows * 2, dtype=torch.float64).reshape(rows, 2).add(10 * rank).requires_grad_()
    other = torch.full((rows,), float(rank), dtype=torch.float32)  # another dtype: gathered apart
    (everyone, others), offset = distributed.gather_columns_with_offset([local, other])
    weights = torch.arange(everyone.numel(), dtype=torch.float64).reshape(everyone.shape) * (rank + 1)
    (everyone * weights).sum().backward()  # gradient of row j: the sum over workers of their weights' row j
    alone, alone_offset = distributed.gather_with_offset(local.detach())
    return {
        "sizes": distributed.gathered_sizes(rows),
        "offset": offset,
        "alone_offset": alone_offset,
        "gathered": everyone.detach(),
        "alone": alone,
        "others": others,
        "grad": local.grad,
        "weight_from_argument": distributed.shard_weight(rows, 4),
        "weight_from_collective": distributed.shard_weight(rows),
        "choice": distributed.same_on_every_rank([rank + 5, rank + 7]),
        "ranks_agree": {name: _ranks_agree_error(values) for name, values in [("equal", [1.0, 2.0]), ("nan", [float("nan"), 2.0]), ("differ", [1.0, 2.0 + rank])]},
    }


def _ranks_agree_error(weights: list[float]) -> str | None:
    """`check_ranks_agree` on a module holding `weights`: None when it passes, else its error."""
    module = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([weights]))
    try:
        distributed.check_ranks_agree(module)
    except RuntimeError as error:
        return str(error)
    return None


def _worker(rank: int, world_size: int, port: int, model_path: str, guide_path: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # two workers on a small shared CPU: intra-op threads only contend
    # A bug that desynchronizes the collectives ends the run in a minute instead of gloo's 30.
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    results, errors = {"helpers": _check_helpers(rank)}, {}
    try:
        model, guide = load_models(model_path, guide_path)
        for case in CASES:
            if refused_by_declaration(case, model, guide):
                continue
            print(f"rank {rank}: {case.id}", flush=True)  # shown if a worker dies: the case it ran
            try:
                model.zero_grad(set_to_none=True)
                loss = build_loss(case, model, guide, gather=True)
                rows = shard(case.rows, rank, world_size)
                random.seed(RANK_SEEDS[rank])
                value = loss(features(model, case, rows), None)
                scaled = value * distributed.shard_weight(rows.stop - rows.start, case.rows)  # the trainer's step
                scaled.backward()
                distributed.average_gradients(loss)
                averaged = scaled.detach().clone()
                dist.all_reduce(averaged)
                results[case.id] = {"loss": averaged / world_size, "gradients": gradients(model)}
            except Exception:  # noqa: BLE001 - recorded per case; the same code fails on both workers alike
                errors[case.id] = f"rank {rank}: {traceback.format_exc()}"
    finally:
        torch.save({"results": results, "errors": errors}, os.path.join(result_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_workers(tiny_model_path, tiny_guide_path, tmp_path_factory) -> list[dict]:
    """Every case on 2 gloo workers, in one spawn: each worker's saved results and errors."""
    result_dir = tmp_path_factory.mktemp("two-workers")
    mp.spawn(_worker, args=(WORLD_SIZE, _free_port(), str(tiny_model_path), str(tiny_guide_path), str(result_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(result_dir / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def models(tiny_model_path, tiny_guide_path):
    return load_models(str(tiny_model_path), str(tiny_guide_path))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_matrix_covers_every_gathering_loss_modifier_and_negative_count():
    losses = gathering_losses()
    assert {"MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", "GISTEmbedLoss", "CachedGISTEmbedLoss"} <= set(losses)
    covered = {(case.loss, case.modifier, case.negatives) for case in CASES}
    for loss_name in losses:
        for modifier in (None, *MODIFIERS):
            for negatives in negative_counts(loss_name):
                assert (loss_name, modifier, negatives) in covered
    assert len({case.id for case in CASES}) == len(CASES)


def test_the_workers_seeds_draw_different_layers_and_sizes():
    def first_draws(seed):
        random.seed(seed)
        layer = random.sample(range(2), 1)
        random.seed(seed)
        return layer, sorted(random.sample(range(3), 2))

    first, second = (first_draws(seed) for seed in RANK_SEEDS)
    assert first[0] != second[0] and first[1] != second[1]


def test_without_a_process_group_every_helper_is_the_identity():
    tensor = torch.randn(3, 4)
    assert distributed.all_gather_with_grad(tensor) is tensor
    assert distributed.gather_with_offset(tensor) == (tensor, 0)
    assert distributed.gathered_sizes(3) == [3]
    assert distributed.shard_weight(3) == distributed.shard_weight(3, 7) == 1.0
    assert distributed.same_on_every_rank([2, 1]) == [2, 1]
    assert (distributed.rank(), distributed.world_size()) == (0, 1)


@pytest.mark.parametrize(("rows", "expected"), [(7, [slice(0, 4), slice(4, 7)]), (5, [slice(0, 3), slice(3, 5)]), (8, [slice(0, 4), slice(4, 8)]), (3, [slice(0, 2), slice(2, 3)])])
def test_shards_are_contiguous_and_differ_by_at_most_one_row(rows, expected):
    assert [shard(rows, rank, 2) for rank in range(2)] == expected


def test_matryoshka_2d_refuses_a_cached_loss_before_patching_it(tiny_model):
    inner = CachedMultipleNegativesRankingLoss(tiny_model)
    with pytest.raises(ValueError, match="cached"):
        Matryoshka2dLoss(tiny_model, inner, matryoshka_dims=[32, 16])
    assert "compute_loss_from_embeddings" not in inner.__dict__  # not left wrapped by a MatryoshkaLoss


def test_the_collectives_on_uneven_sizes(two_workers):
    helpers = [worker["results"]["helpers"] for worker in two_workers]
    locals_ = [torch.arange(6, dtype=torch.float64).reshape(3, 2), torch.arange(2, dtype=torch.float64).reshape(1, 2) + 10]
    everyone = torch.cat(locals_)
    for rank, got in enumerate(helpers):
        assert got["sizes"] == [3, 1]
        assert got["offset"] == got["alone_offset"] == [0, 3][rank]
        torch.testing.assert_close(got["gathered"], everyone, rtol=0, atol=0)
        torch.testing.assert_close(got["alone"], everyone, rtol=0, atol=0)
        torch.testing.assert_close(got["others"], torch.tensor([0.0, 0.0, 0.0, 1.0]), rtol=0, atol=0)
        # Worker r weighs the gathered rows by (r + 1) * index: a row's gradient sums both workers' weights.
        summed = torch.arange(everyone.numel(), dtype=torch.float64).reshape(everyone.shape) * (1 + 2)
        torch.testing.assert_close(got["grad"], summed[got["offset"] : got["offset"] + [3, 1][rank]], rtol=0, atol=0)
        assert got["weight_from_argument"] == got["weight_from_collective"] == [3, 1][rank] * 2 / 4
        assert got["choice"] == [5, 7]  # rank 0's
        # Equal weights agree, NaN ones too (a diverged run is not a broken one); different ones do not.
        assert got["ranks_agree"]["equal"] is None and got["ranks_agree"]["nan"] is None
        assert "workers ended with different weights (parameter checksums 3.0 .. 4.0)" in got["ranks_agree"]["differ"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_two_workers_on_uneven_shards_equal_one_process_on_the_global_batch(two_workers, models, case):
    model, guide = models
    reason = refused_by_declaration(case, model, guide)
    if reason:
        pytest.skip(reason)
    errors = [worker["errors"][case.id] for worker in two_workers if case.id in worker["errors"]]
    assert not errors, "\n".join(errors)
    two = two_workers[0]["results"][case.id]

    model.zero_grad(set_to_none=True)
    loss = build_loss(case, model, guide, gather=False)
    random.seed(RANK_SEEDS[0])  # rank 0's random layers and sizes are the ones every worker used
    value = loss(features(model, case, slice(None)), None)
    value.backward()
    one_gradients = gradients(model)

    assert torch.isfinite(value)
    torch.testing.assert_close(two["loss"], value.detach(), rtol=RTOL, atol=0)
    assert two["gradients"].keys() == one_gradients.keys() and one_gradients
    assert max(gradient.abs().max().item() for gradient in one_gradients.values()) > LIVE_GRADIENT, "every gradient ~0: the case tests nothing"
    for name, reference in one_gradients.items():
        got = two["gradients"][name]
        if ZERO_GRADIENT.search(name):
            largest = max(got.abs().max().item(), reference.abs().max().item())
            assert largest < ZERO_FLOOR, f"{name}: zero in exact maths, got {largest:.3g}"
        else:
            torch.testing.assert_close(got, reference, rtol=RTOL, atol=RTOL * ATOL_SHARE * reference.abs().max().item(), msg=name)
