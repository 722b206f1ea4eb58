"""Renders the MLflow UI's run comparison page for an experiment in headless Chromium: a PNG to look at,
and a check that the page shows the evaluator metrics.

    python bench/mlflow_ui_screenshot.py runs/sweeps/stsb_score_pairs               # a sweep folder's local store
    python bench/mlflow_ui_screenshot.py sweep --tracking-uri http://127.0.0.1:5000  # an experiment on a server
    python bench/mlflow_ui_screenshot.py runs/sweeps/stsb_score_pairs --smoke-test   # same; smaller window

Needs `chromium` (Debian: apt-get install chromium). For a local store it starts `mlflow server` on a free
loopback port and stops it afterwards. Writes bench/results/mlflow_compare.png (kept out of git) and
exits 1 if the rendered page does not show the runs' evaluator metric.
"""

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

parser = argparse.ArgumentParser()
parser.add_argument("experiment", help="an experiment name, or a run / sweep folder holding mlflow.db")
parser.add_argument("--tracking-uri", help="an MLflow server; default: the folder's local store, served for the shot")
parser.add_argument("--output", default="bench/results/mlflow_compare.png")
parser.add_argument("--smoke-test", action="store_true")
args = parser.parse_args()

chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if chromium is None:
    sys.exit("chromium is not installed: apt-get install chromium")

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
    runs = [run for run in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in run.data.tags] or client.search_runs(
        [experiment.experiment_id]
    )
    metric = next(run.data.tags["embedlab_primary_metric"] for run in runs if "embedlab_primary_metric" in run.data.tags)
    ids = json.dumps([run.info.run_id for run in runs])
    page = f"{uri}/#/compare-runs?runs={urllib.request.quote(ids)}&experiments={urllib.request.quote(json.dumps([experiment.experiment_id]))}"
    size = "1280,900" if args.smoke_test else "1600,6000"  # tall: the metrics table comes after ~90 params
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}", "--virtual-time-budget=20000"]
    output = Path(args.output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, *flags, f"--screenshot={output}", page], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=180, check=True).stdout
finally:
    if server is not None:
        server.terminate()
        server.wait(timeout=30)

shown = metric in dom
print(f"{output}: {output.stat().st_size} bytes; the comparison page of {len(runs)} runs {'shows' if shown else 'does NOT show'} {metric}")
sys.exit(0 if shown else 1)
