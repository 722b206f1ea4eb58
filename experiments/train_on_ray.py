"""Train one config on Ray Train workers, as a Ray job.

    ray start --head                                   # or `ray up cluster.yaml` for a cloud cluster
    ray job submit --working-dir . -- python experiments/train_on_ray.py \
        experiments/configs/stsb_cosent.yaml --workers 2 output_dir=$PWD/runs/stsb_cosent
    ray job submit --working-dir . -- python experiments/train_on_ray.py \
        experiments/configs/stsb_cosent.yaml --workers 1 --smoke-test output_dir=$PWD/runs/stsb_cosent  # a few steps

`--working-dir .` uploads this repository (git-ignored files stay home); the job's runtime environment
ships the uploaded `platform/embedlab` package to every Ray Train worker, so the nodes need only the
pinned dependencies (cluster.yaml's setup commands install them). Config paths are relative to the
repository root. The job runs in a temporary copy of the working directory, so output_dir must be an
absolute path (a relative one is refused): results land there on the head node, checkpoints and the
final model in distributed.storage_path (set an s3:// / gs:// URI on a multi-node cluster).
"""

import argparse
import sys
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))  # the submitted code, installed or not

import embedlab  # noqa: E402
from embedlab import run  # noqa: E402
from embedlab.config import load_config  # noqa: E402
from embedlab.errors import EmbedlabError  # noqa: E402
from embedlab.ray_train import check_job_output_dir, train_on_ray  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("config", help="a train config, e.g. experiments/configs/stsb_cosent.yaml")
parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. training.batch_size=32")
parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (data-parallel)")
parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
parser.add_argument("--smoke-test", action="store_true", help="4 steps on 64 rows")
args = parser.parse_intermixed_args()  # overrides before or after the flags

overrides = [*args.overrides, f"distributed.workers={args.workers}", f"distributed.use_gpu={str(args.gpu).lower()}"]
try:
    config = load_config(args.config, overrides, smoke_test=args.smoke_test)
    check_job_output_dir(config.output_dir)
    prepared = run.prepare(config, device="cpu")  # the workers hold the GPUs
    # Inside `ray job submit`, ray.init joins the job's cluster; the workers import this embedlab.
    ray.init(runtime_env={"py_modules": [str(Path(embedlab.__file__).parent)]})
    results = train_on_ray(prepared)
except EmbedlabError as error:
    sys.exit(f"error: {error}")

print(f"\nModel saved in {Path(results['output_dir']).resolve() / 'model'}")
for name, value in results["after"].items():
    print(f"{name}: {value:.4f} (before training: {results['before'][name]:.4f})")
