"""`ray job submit` on a real local cluster: `ray start --head`, submit the smoke job, wait, `ray stop`."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    port, dashboard_port = _free_port(), _free_port()
    # Token authentication, as Ray sets it up by default, with this test's own token for server and client.
    token = tmp_path / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    # Every port free: Ray's fixed defaults (dashboard agent 52365, ...) may still be held by an earlier cluster.
    agent_ports = [f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")]
    start = [ray, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard_port}", *agent_ports, "--num-cpus=2", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, env=env, timeout=120)
    try:
        yield ray, f"http://127.0.0.1:{dashboard_port}", env
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_ray_job_submit_runs_the_smoke_job_to_success(ray_head, tmp_path, tiny_model_path):
    ray, address, env = ray_head
    output_dir = tmp_path / "job"
    submit = [
        ray, "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1"}}),
        "--",
        sys.executable, "experiments/train_on_ray.py", "experiments/configs/stsb_cosent.yaml", "--workers", "1", "--smoke-test",
        f"model.name={tiny_model_path}", f"output_dir={output_dir}",
    ]  # fmt: skip
    result = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output and "sts-test_spearman_cosine: " in output
    assert (tmp_path / "job-smoke" / "model" / "modules.json").exists()
