"""The deployment files agree with the code and with each other: the Dockerfile, compose.yaml, the container entry
points, Prometheus' scrape config, Grafana's provisioning and dashboard (every PromQL metric is one we export), and
the log pipeline. No container engine runs here, so the stack is validated, not started: `docker-compose config`
(skipped without /usr/bin/docker-compose, except in CI) and `promtool check config` (skipped without promtool)."""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.test import Client
from django.urls import resolve
from prometheus_client import REGISTRY

from core.metrics import metrics_view

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "querynox.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMETHEUS_ENTRYPOINT = DEPLOY / "prometheus" / "entrypoint.sh"
APP_ENTRYPOINT = ROOT / "scripts" / "docker-entrypoint.sh"
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")
PROMTOOL = Path("/usr/bin/promtool")

# Series Prometheus itself adds to every scrape, not exported by the app.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
    "stateset": ("",),
    "gauge": ("",),
    "unknown": ("",),
}
PROMQL_KEYWORDS = set("by without on ignoring group_left group_right and or unless bool offset atan2 inf nan".split())


# --- helpers --------------------------------------------------------------------------------------------------------


def exported_series_names() -> set[str]:
    """Every series name the app can expose on /metrics, from the live registry (label-less families included)."""
    import django_prometheus.cache.metrics  # noqa: F401  (registers the cache counters)
    import django_prometheus.db.metrics  # noqa: F401  (registers the database counters)
    from django_prometheus.middleware import Metrics

    import core.metrics  # noqa: F401

    Metrics.get_instance()  # the HTTP metrics are created with the first middleware instance
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def promql_metric_names(expression: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords, labels or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # label values, which may contain anything
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations, $__rate_interval
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def dashboard_targets(datasource_type: str) -> list[tuple[str, dict]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == datasource_type:
                found.append((panel["title"], target))
    return found


def raw_compose() -> dict:
    """compose.yaml as YAML (anchors merged, ${...} not interpolated)."""
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> repository path, for the service's ./ bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def host_path_for(service: dict, container_path: str) -> Path:
    for target, source in bind_mounts(service).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not inside any bind mount of {service.get('image')}: {service}")


# The production server (querynox/uvicorn_server.py: uvicorn with the body limits, no access log, the socket limits);
# never plain `uvicorn` or `daphne`, which would run without them.
SERVER_COMMAND = ["python", "-m", "querynox.uvicorn_server"]


def daphne_port(command: list[str]) -> int:
    """The port of the server command (named for when it was daphne's `-p`; now uvicorn_server's `--port`)."""
    assert command[:3] == SERVER_COMMAND, command
    return int(command[command.index("--port") + 1])


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def run_compose(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    if not DOCKER_COMPOSE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{DOCKER_COMPOSE} is missing: CI must install the docker-compose package")
        pytest.skip(f"{DOCKER_COMPOSE} is not installed (apt-get install -y docker-compose)")
    # A clean environment: the developer's own SECRET_KEY or provider keys must not decide the outcome.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [str(DOCKER_COMPOSE), "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml"), *arguments],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


REQUIRED_COMPOSE_ENV = {"SECRET_KEY": "a-secret-key-for-the-compose-test", "METRICS_PASSWORD": "scrape-me"}


def resolved_compose() -> dict:
    result = run_compose(REQUIRED_COMPOSE_ENV, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def run_entrypoint(tmp_path: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    """scripts/docker-entrypoint.sh as the container runs it, on a throwaway SQLite database."""
    base = {
        name: value
        for name, value in os.environ.items()
        if name
        not in {"DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "MIGRATE_ON_START", "ALLOWED_HOSTS_ADD_CONTAINER_IP"}
    }
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"  # `python` is the venv's
    base["DATABASE_URL"] = f"sqlite:///{tmp_path / 'entrypoint.sqlite3'}"
    return subprocess.run(
        ["sh", str(APP_ENTRYPOINT), *command],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def applied_migrations(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "entrypoint.sqlite3") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "django_migrations" not in tables:
            return 0
        return connection.execute("SELECT COUNT(*) FROM django_migrations").fetchone()[0]


# --- the dashboard --------------------------------------------------------------------------------------------------


def test_promql_names_are_metrics_not_functions_labels_or_durations():
    expression = (
        'histogram_quantile(0.95, sum by (le, provider) (rate(querynox_time_to_first_token_seconds_bucket{job="a b",'
        ' provider=~"x|y"}[$__rate_interval]))) / on (instance) group_left up '
        "or sum(increase(querynox_turns_total[5m] offset 1h)) without (outcome) > bool 1e3"
    )

    assert promql_metric_names(expression) == {
        "querynox_time_to_first_token_seconds_bucket",
        "up",
        "querynox_turns_total",
    }


def test_dashboard_queries_only_series_we_export():
    exported = exported_series_names() | SCRAPE_SERIES
    targets = dashboard_targets("prometheus")
    assert targets, "the dashboard has no Prometheus queries"

    unknown = {}
    for title, target in targets:
        names = promql_metric_names(target["expr"])
        assert names, f"{title!r}: no metric in {target['expr']!r}"
        if names - exported:
            unknown[title] = sorted(names - exported)
    assert unknown == {}, "dashboard series that nothing exports (renamed metric?)"


def test_dashboard_covers_latency_answers_errors_quotas_and_sockets():
    referenced = set()
    for _, target in dashboard_targets("prometheus"):
        referenced |= promql_metric_names(target["expr"])

    assert {
        "django_http_requests_latency_seconds_by_view_method_bucket",  # HTTP request latency
        "querynox_time_to_first_token_seconds_bucket",
        "querynox_tokens_streamed_total",
        "querynox_provider_errors_total",
        "querynox_turns_total",  # by outcome, and outcome="error" among the errors
        "django_http_responses_total_by_status_total",  # HTTP 5xx
        "querynox_quota_refusals_total",
        "querynox_websockets_open",
    } <= referenced
    error_queries = " ".join(target["expr"] for _, target in dashboard_targets("prometheus"))
    assert 'outcome="error"' in error_queries
    assert 'status=~"5.."' in error_queries


def test_dashboard_log_panels_query_the_labels_alloy_sets():
    alloy = (DEPLOY / "alloy" / "config.alloy").read_text()
    log_targets = dashboard_targets("loki")
    assert log_targets, "the dashboard has no log panel"

    for title, target in log_targets:
        for label in re.findall(r"(\w+)\s*=~?\s*\"", target["expr"].split("}")[0]):
            assert re.search(rf'target_label\s*=\s*"{label}"|\b{label}\s*=\s*""', alloy), (title, label)


def test_every_dashboard_datasource_is_provisioned_and_reachable_in_compose():
    provisioned = {source["uid"]: source for source in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    services = raw_compose()["services"]
    used = {target["datasource"]["uid"] for _, target in dashboard_targets("prometheus") + dashboard_targets("loki")}

    assert used == {"prometheus", "loki"}
    assert used <= provisioned.keys()
    for source in provisioned.values():
        assert urlsplit(source["url"]).hostname in services, source


def test_grafana_provisioning_points_at_the_dashboard_in_the_repository():
    grafana = raw_compose()["services"]["grafana"]
    provisioning = host_path_for(grafana, "/etc/grafana/provisioning")
    assert provisioning == (DEPLOY / "grafana" / "provisioning").resolve()
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]

    assert provider["type"] == "file"
    assert host_path_for(grafana, provider["options"]["path"]) == DASHBOARD.parent.resolve()
    assert host_path_for(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]) == DASHBOARD


# --- Prometheus -----------------------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_app_replica_with_basic_auth():
    compose = raw_compose()["services"]
    (job,) = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]

    assert resolve(job["metrics_path"]).func is metrics_view
    assert job["basic_auth"]["username"] == compose["app"]["environment"]["METRICS_USERNAME"]
    assert "password" not in job["basic_auth"], "the password comes from METRICS_PASSWORD, not the file"
    password_dir = str(Path(job["basic_auth"]["password_file"]).parent)
    assert password_dir in compose["prometheus"]["tmpfs"], "the password file's directory must be writable"
    assert discovery["names"] == ["app"] and discovery["type"] == "A"
    assert discovery["port"] == daphne_port(compose["app"]["command"])


def test_promtool_accepts_the_prometheus_config():
    if not PROMTOOL.exists():
        pytest.skip(f"{PROMTOOL} is not installed (apt-get install -y prometheus)")
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_entrypoint_writes_the_password_file_and_hides_the_variable(tmp_path):
    command = ["sh", "-c", 'echo "started with METRICS_PASSWORD=${METRICS_PASSWORD-unset}"']
    env = {"PATH": os.environ["PATH"], "PROMETHEUS_SECRETS_DIR": str(tmp_path), "METRICS_PASSWORD": "s3cret pass"}
    result = subprocess.run(
        ["sh", str(PROMETHEUS_ENTRYPOINT), *command], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started with METRICS_PASSWORD=unset"
    written = tmp_path / "metrics-password"
    assert written.read_bytes() == b"s3cret pass"  # no trailing newline: it would be part of the password
    assert written.stat().st_mode & 0o077 == 0


def test_prometheus_entrypoint_refuses_an_empty_password(tmp_path):
    env = {"PATH": os.environ["PATH"], "PROMETHEUS_SECRETS_DIR": str(tmp_path), "METRICS_PASSWORD": ""}
    result = subprocess.run(
        ["sh", str(PROMETHEUS_ENTRYPOINT), "echo", "started"], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 2
    assert "METRICS_PASSWORD" in result.stderr
    assert "started" not in result.stdout
    assert not (tmp_path / "metrics-password").exists()


# --- compose.yaml ---------------------------------------------------------------------------------------------------


def test_compose_config_is_valid_with_the_required_variables():
    result = run_compose(REQUIRED_COMPOSE_ENV, "config", "-q")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED_COMPOSE_ENV))
def test_compose_refuses_to_run_without_a_required_variable(missing):
    env = {name: value for name, value in REQUIRED_COMPOSE_ENV.items() if name != missing}
    result = run_compose(env, "config", "-q")

    assert result.returncode != 0
    assert missing in result.stderr


def test_compose_wires_the_replicas_to_postgres_redis_and_prometheus():
    services = resolved_compose()["services"]
    app = services["app"]
    environment = app["environment"]
    database = urlsplit(environment["DATABASE_URL"])

    assert {"app", "migrate", "proxy", "postgres", "redis", "prometheus", "grafana", "loki", "alloy"} <= set(services)
    assert database.scheme == "postgres" and database.hostname == "postgres" and database.port == 5432
    assert database.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert database.password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert database.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["SECRET_KEY"] == REQUIRED_COMPOSE_ENV["SECRET_KEY"]
    assert environment["METRICS_PASSWORD"] == services["prometheus"]["environment"]["METRICS_PASSWORD"] == "scrape-me"
    assert environment["DEBUG"] == "false"
    # The container health check calls 127.0.0.1, which Django must accept as a host.
    assert "127.0.0.1" in environment["ALLOWED_HOSTS"].split(",")
    # Replicas cannot share a host port: only the proxy publishes one, and it forwards to the app's port.
    assert app["deploy"]["replicas"] >= 2
    assert "ports" not in app
    assert [port["target"] for port in services["proxy"]["ports"]] == [8000]
    # One migration run before the replicas start; the replicas do not migrate.
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert environment["MIGRATE_ON_START"] == "false"
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]


def test_compose_passes_optional_settings_through_only_when_set():
    services = resolved_compose()["services"]

    # null: compose takes the value from where it runs, and leaves the variable unset in the container otherwise,
    # so the app's own default applies (an empty WEB_SEARCH_BACKEND would switch web search off).
    assert services["app"]["environment"]["WEB_SEARCH_BACKEND"] is None
    assert services["app"]["environment"]["OPENAI_API_KEY"] is None


def test_the_proxy_forwards_to_the_app_and_hides_metrics():
    services = raw_compose()["services"]
    config = host_path_for(services["proxy"], "/etc/nginx/conf.d/default.conf").read_text()
    upstream = re.search(r"set \$querynox_app (\S+);", config).group(1)

    assert urlsplit(upstream).hostname == "app"
    assert urlsplit(upstream).port == daphne_port(services["app"]["command"])
    assert "proxy_pass $querynox_app;" in config
    assert re.search(r"location = /metrics \{\s*return 404;", config)
    assert "proxy_set_header Upgrade $http_upgrade;" in config  # WebSockets
    assert "--proxy-headers" in services["app"]["command"]  # the client address nginx forwards is used


NGINX_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}


def test_the_proxys_body_limit_is_just_above_the_apps():
    from querynox.body_limits import largest_limit

    services = raw_compose()["services"]
    config = host_path_for(services["proxy"], "/etc/nginx/conf.d/default.conf").read_text()
    number, unit = re.search(r"client_max_body_size (\d+)([kmg]?);", config, re.IGNORECASE).groups()
    proxy_limit = int(number) * NGINX_SIZE_UNITS[unit.lower()]

    # Above: an upload the app accepts is never cut off by nginx. Just above (within 1 MB): nginx does not stream
    # bodies the app refuses anyway, so the two move together.
    assert largest_limit() <= proxy_limit <= largest_limit() + 1024 * 1024, (proxy_limit, largest_limit())


def test_every_way_of_starting_the_server_bounds_request_bodies():
    makefile = (ROOT / "Makefile").read_text()
    live = (ROOT / "testsupport" / "live.py").read_text()

    assert re.search(r"\$\(PY\) -m querynox\.server -b \$\(HOST\) -p \$\(PORT\) querynox\.asgi:application", makefile)
    assert "bin/daphne" not in makefile
    assert '"querynox.server"' in live and '"daphne",' not in live
    # compose.yaml and the Dockerfile: daphne_port() in the tests above insists on SERVER_COMMAND.


def test_alloy_ships_the_app_logs_to_loki():
    services = raw_compose()["services"]
    alloy = host_path_for(services["alloy"], "/etc/alloy/config.alloy").read_text()
    loki = yaml.safe_load(host_path_for(services["loki"], "/etc/loki/loki.yaml").read_text())
    label, value = re.search(r'filter \{\s*name\s*=\s*"label"\s*values\s*=\s*\["([^"=]+)=([^"]+)"\]', alloy).groups()
    push = urlsplit(re.search(r'url\s*=\s*"([^"]+)"', alloy).group(1))

    assert services["app"]["labels"][label] == value
    assert services["migrate"]["labels"][label] == value
    assert push.hostname == "loki" and push.port == loki["server"]["http_listen_port"]
    assert push.path == "/loki/api/v1/push"
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in services["alloy"]["volumes"]
    assert "stage.json" in alloy


# --- the Dockerfile -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dockerfile_builds_a_non_root_image_with_tesseract_and_a_working_healthcheck():
    instructions = dockerfile_instructions()
    arguments = {keyword: [args for kw, args in instructions if kw == keyword] for keyword, _ in instructions}
    runs = " ".join(arguments["RUN"])
    port = int(arguments["EXPOSE"][-1])

    assert arguments["FROM"][0].startswith("python:3.11-slim")
    assert re.search(r"apt-get install [^&]*(?<![\w-])tesseract-ocr(?![\w-])", runs)  # the engine, not only data
    assert re.search(r"apt-get install [^&]*(?<![\w-])libgomp1(?![\w-])", runs)
    assert "pip install -r requirements.txt" in runs
    assert "pip install --no-deps -r requirements-nodeps.txt" in runs
    assert "manage.py collectstatic" in runs
    last_user = [args for keyword, args in instructions if keyword == "USER"][-1]
    assert last_user.split(":")[0] not in {"root", "0"}
    command = json.loads(arguments["CMD"][-1])
    assert command[:3] == SERVER_COMMAND
    assert daphne_port(command) == port
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from outside the container
    (entrypoint,) = json.loads(arguments["ENTRYPOINT"][-1])
    assert os.access(ROOT / Path(entrypoint).relative_to("/app"), os.X_OK), "COPY keeps the mode: it must be +x"
    healthcheck = arguments["HEALTHCHECK"][-1]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"]*)", healthcheck)
    assert int(url.group(1)) == port
    assert Client().get(url.group(2)).status_code == 200


def _docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore line as Docker reads it: `*` and `?` stay within one path segment, `**` spans any number of
    them, and a pattern that names a folder excludes everything below it."""
    segments = pattern.strip("/").split("/")
    parts = []
    for index, segment in enumerate(segments):
        if segment == "**":
            parts.append("(?:[^/]+/)*" if index < len(segments) - 1 else ".*")
        else:
            body = re.escape(segment).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            parts.append(body + ("/" if index < len(segments) - 1 else ""))
    return re.compile("^" + "".join(parts) + "(?:/.*)?$")


def docker_build_context() -> set[str]:
    """The repository's files that `docker build .` sends (git's tracked files, less what .dockerignore excludes;
    later lines win, `!` re-includes)."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _docker_pattern(line.removeprefix("!"))))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    context = set()
    for path in tracked.splitlines():
        included = True
        for negated, pattern in rules:
            if pattern.match(path):
                included = negated
        if included:
            context.add(path)
    return context


def test_dockerignore_keeps_what_the_image_needs():
    context = docker_build_context()
    needed = ["requirements.txt", "requirements-nodeps.txt", "manage.py", "scripts/docker-entrypoint.sh"]

    for path in needed:
        assert path in context, path
    assert any(path.startswith("static/") for path in context)
    for app in ("querynox", "core", "accounts", "chat", "billing", "rag"):
        assert f"{app}/__init__.py" in context, app
        assert any(path.startswith(f"{app}/migrations/") for path in context) or app in ("querynox", "core")


def test_the_image_carries_no_tests_and_no_test_doubles():
    context = docker_build_context()

    shipped_test_code = sorted(
        path
        for path in context
        if path.startswith("testsupport/") or "/tests/" in f"/{path}" or path == "conftest.py"
    )
    assert shipped_test_code == []
    assert not any(path.startswith(("bench/", "deploy/", ".ci/")) for path in context)


def test_the_dockerignore_reader_follows_dockers_rules():
    assert _docker_pattern("**/tests").match("chat/tests/test_sse.py")
    assert _docker_pattern("**/tests").match("tests/x.py")
    assert not _docker_pattern("**/tests").match("chat/testsupport.py")
    assert _docker_pattern("testsupport").match("testsupport/emulator.py")
    assert not _docker_pattern("testsupport").match("chat/testsupport/x.py")
    assert _docker_pattern("**/*.pyc").match("chat/__pycache__/a.pyc")
    assert _docker_pattern("db.sqlite3*").match("db.sqlite3-wal")


# --- scripts/docker-entrypoint.sh -----------------------------------------------------------------------------------


def test_entrypoint_waits_for_the_database_migrates_and_runs_the_command(tmp_path):
    result = run_entrypoint(tmp_path, {}, "python", "-c", "print('the command ran')")

    assert result.returncode == 0, result.stderr
    assert "database is up" in result.stdout
    assert result.stdout.strip().endswith("the command ran")
    assert applied_migrations(tmp_path) > 0


def test_entrypoint_on_a_replica_skips_migrations_and_accepts_its_own_address_as_host(tmp_path):
    try:  # in a container the hostname always resolves (Docker writes it into /etc/hosts); on a bare host maybe not
        addresses = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError as exc:
        pytest.skip(f"this machine's hostname does not resolve ({exc})")
    env = {"MIGRATE_ON_START": "false", "ALLOWED_HOSTS_ADD_CONTAINER_IP": "true", "ALLOWED_HOSTS": "chat.example"}
    env["SECRET_KEY"] = "a-secret-key-for-the-entrypoint-test"  # a real host: the built-in key is refused
    result = run_entrypoint(tmp_path, env, "sh", "-c", 'echo "ALLOWED_HOSTS=$ALLOWED_HOSTS"')

    assert result.returncode == 0, result.stderr
    assert "database is up" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "ALLOWED_HOSTS=" + ",".join(["chat.example", *addresses])
    assert applied_migrations(tmp_path) == 0


def test_entrypoint_stops_on_a_malformed_boolean(tmp_path):
    result = run_entrypoint(tmp_path, {"MIGRATE_ON_START": "sometimes"}, "echo", "the command ran")

    assert result.returncode == 2
    assert "MIGRATE_ON_START=sometimes is not a boolean" in result.stderr
    assert "the command ran" not in result.stdout


def test_entrypoint_needs_explicit_allowed_hosts_to_add_addresses_to(tmp_path):
    env = {"MIGRATE_ON_START": "false", "ALLOWED_HOSTS_ADD_CONTAINER_IP": "true"}
    result = run_entrypoint(tmp_path, env, "echo", "the command ran")

    assert result.returncode == 2
    assert "needs ALLOWED_HOSTS" in result.stderr
    assert "the command ran" not in result.stdout
