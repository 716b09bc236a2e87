#!/bin/sh
# Prometheus reads the scrape password from a file (password_file in prometheus.yml). This writes that file from
# METRICS_PASSWORD, the variable compose.yaml also gives the app, then runs the command (Prometheus itself).
# The directory is a tmpfs in compose.yaml, so the password never reaches a volume.
set -eu
secrets_dir=${PROMETHEUS_SECRETS_DIR:-/run/prometheus-secrets}
if [ -z "${METRICS_PASSWORD:-}" ]; then
    echo "METRICS_PASSWORD is empty: the app's /metrics would refuse every scrape" >&2
    exit 2
fi
umask 077
printf '%s' "$METRICS_PASSWORD" >"$secrets_dir/metrics-password"
unset METRICS_PASSWORD
exec "$@"
