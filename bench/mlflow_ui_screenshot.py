"""Renders an experiment's pages of the MLflow UI in headless Chromium, as a user opens them: PNGs to look
at, and checks of what each page shows.

    python bench/mlflow_ui_screenshot.py runs/sweeps/stsb_score_pairs               # a sweep folder's local store
    python bench/mlflow_ui_screenshot.py sweep --tracking-uri http://127.0.0.1:5000  # an experiment on a server
    python bench/mlflow_ui_screenshot.py sweep --tracking-uri ... --model stsb       # and a registered model's page
    python bench/mlflow_ui_screenshot.py runs/sweeps/stsb_score_pairs --smoke-test   # same; smaller windows

Pages (each printed as "<page>: ok" or "<page>: FAILED (why)"):
- training view: the experiment's runs in the UI's model-training view, every top-level run listed;
- compare page: the runs (a sweep's trials) side by side, with their evaluator metric, and no section
  replaced by MLflow's "Something went wrong with this section";
- run page: a trial's page, listing its train data input by name and digest;
- registered model page (--model): the version that holds the alias champion.

MLflow 3.17's UI opens every experiment in the view its top bar's "GenAI | Model training" switch was
last left at (GenAI for a new browser), whatever the experiment's kind tag says; a link with
`?workflowType=machine_learning` opens the training view, as these pages do.

Needs `chromium` (Debian: apt-get install chromium). For a local store it starts `mlflow server` on a free
loopback port and stops it afterwards. Writes bench/results/mlflow_compare.png and, beside it,
mlflow_compare-<page>.png (kept out of git); exits 1 if a page fails its check.
"""

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

TRAINING_VIEW = "workflowType=machine_learning"
SECTION_ERROR = "Something went wrong"

parser = argparse.ArgumentParser()
parser.add_argument("experiment", help="an experiment name, or a run / sweep folder holding mlflow.db")
parser.add_argument("--tracking-uri", help="an MLflow server; default: the folder's local store, served for the shot")
parser.add_argument("--model", help="a registered model whose champion version the model page must show")
parser.add_argument("--output", default="bench/results/mlflow_compare.png")
parser.add_argument("--smoke-test", action="store_true")
args = parser.parse_args()

chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if chromium is None:
    sys.exit("chromium is not installed: apt-get install chromium")


def render(url: str, png: Path, size: str) -> str:
    """Saves the page's screenshot; returns its visible text (the DOM without styles, scripts and tags)."""
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}", "--virtual-time-budget=20000"]
    subprocess.run([chromium, *flags, f"--screenshot={png}", url], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
    text = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


server = None
uri, experiment_name = args.tracking_uri, args.experiment
if uri is None:
    folder = Path(args.experiment).resolve()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri, experiment_name = f"http://127.0.0.1:{port}", folder.name
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
failures = []
try:
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                sys.exit(f"no MLflow server answers at {uri}")
            time.sleep(0.5)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        sys.exit(f"no experiment '{experiment_name}' at {uri}")
    everything = client.search_runs([experiment.experiment_id])
    runs = [run for run in everything if "mlflow.parentRunId" in run.data.tags] or everything
    top_level = [run for run in everything if "mlflow.parentRunId" not in run.data.tags]
    metric = next(run.data.tags["embedlab_primary_metric"] for run in runs if "embedlab_primary_metric" in run.data.tags)
    output = Path(args.output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    size = "1280,900" if args.smoke_test else "1600,6000"  # tall: the compare page's metrics come after ~90 params
    base = f"{uri}/#/experiments/{experiment.experiment_id}"

    def check(page: str, url: str, png: Path, wanted: list[str], unwanted: list[str] = (), window: str = "1280,900") -> str:
        text = render(url, png, window)
        missing, found = [item for item in wanted if item not in text], [item for item in unwanted if item in text]
        why = "; ".join([f"does not show {missing}"] * bool(missing) + [f"shows {found}"] * bool(found))
        print(f"{page}: {'FAILED (' + why + ')' if why else 'ok'} ({png.name})")
        if why:
            failures.append(page)
        return text

    check("training view", f"{base}/runs?{TRAINING_VIEW}", output.with_name(f"{output.stem}-training.png"), [run.info.run_name for run in top_level], ["Evaluation runs"])
    ids = urllib.parse.quote(json.dumps([run.info.run_id for run in runs]))
    page = f"{uri}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment.experiment_id]))}&{TRAINING_VIEW}"
    text = check("compare page", page, output, [metric, "Artifacts"], [SECTION_ERROR], window=size)
    print(f"{output}: {output.stat().st_size} bytes; the comparison page of {len(runs)} runs {'shows' if metric in text else 'does NOT show'} {metric}")
    trial = runs[0]
    train = next((item.dataset for item in trial.inputs.dataset_inputs if item.tags and item.tags[0].value == "train"), None)
    wanted = [train.name, train.digest] if train else ["(a train data input)"]
    check("run page", f"{base}/runs/{trial.info.run_id}?{TRAINING_VIEW}", output.with_name(f"{output.stem}-run.png"), wanted, [SECTION_ERROR])
    if args.model:
        champion = client.get_model_version_by_alias(args.model, "champion")
        model_page = f"{uri}/#/models/{urllib.parse.quote(args.model)}?{TRAINING_VIEW}"
        check("registered model page", model_page, output.with_name(f"{output.stem}-model.png"), [f"Version {champion.version}", "champion"])
finally:
    if server is not None:
        server.terminate()
        server.wait(timeout=30)
sys.exit(1 if failures else 0)
