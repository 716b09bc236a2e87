"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a real server's /metrics with basic auth, and one of
our metrics comes back through Prometheus's query API. Skipped without the binary, except in CI (CI=true)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from testsupport.http import free_port
from testsupport.live import LiveServer

PROMETHEUS = Path("/usr/bin/prometheus")
USERNAME, PASSWORD = "prometheus", "scrape-password-for-tests"

pytestmark = pytest.mark.prometheus


@pytest.fixture(scope="module")
def prometheus_binary():
    if not PROMETHEUS.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{PROMETHEUS} is missing: .ci/run installs the prometheus package")
        pytest.skip(f"{PROMETHEUS} is not installed (apt-get install -y prometheus)")
    return PROMETHEUS


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    env = {"METRICS_USERNAME": USERNAME, "METRICS_PASSWORD": PASSWORD, "LOCAL_MODEL_PRELOAD": "false"}
    server = LiveServer(tmp_path_factory.mktemp("metrics-server"), extra_env=env).start()
    yield server
    server.stop()


def start_prometheus(binary: Path, work: Path, target_port: int) -> tuple[subprocess.Popen, str]:
    config = work / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: querynox
    metrics_path: /metrics
    basic_auth:
      username: {USERNAME}
      password: {PASSWORD}
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
"""
    )
    port = free_port()
    log = open(work / "prometheus.log", "wb")  # closed after the process ends (finally below)
    process = subprocess.Popen(
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_file = log
    return process, f"http://127.0.0.1:{port}"


def wait_for(check, what: str, process: subprocess.Popen, log: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            last = exc
        time.sleep(0.25)
    pytest.fail(f"{what} within {timeout:.0f} s (last: {last!r}):\n{log.read_text(errors='replace')[-3000:]}")


def test_prometheus_scrapes_metrics_with_basic_auth_and_queries_ours_back(prometheus_binary, metrics_server, tmp_path):
    key = metrics_server.create_user_with_key("scraped@example.com", "a good password for scraping")
    process, prometheus_url = start_prometheus(prometheus_binary, tmp_path, metrics_server.port)
    log = tmp_path / "prometheus.log"
    try:

        def target_up():
            targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            return targets and targets[0]["health"] == "up"

        wait_for(target_up, "the QueryNox target was not up", process, log)

        def query(expression: str):
            response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expression}, timeout=2)
            result = response.json()["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        # One of our gauges moves while Prometheus watches: an authenticated chat socket stays open.
        with connect(f"{metrics_server.ws_url}/ws/chat/", additional_headers={"Authorization": f"Bearer {key}"}):
            wait_for(
                lambda: query('querynox_websockets_open{job="querynox"}') == 1,
                "querynox_websockets_open did not reach 1",
                process,
                log,
            )
        wait_for(
            lambda: query('querynox_websockets_open{job="querynox"}') == 0,
            "the socket was not counted closed",
            process,
            log,
        )
        # django-prometheus's HTTP metrics arrive through the same scrape.
        assert query('sum(django_http_requests_total_by_method_total{job="querynox"})') > 0
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        process.log_file.close()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
