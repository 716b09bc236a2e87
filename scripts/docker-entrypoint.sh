#!/bin/sh
# Container entry point: wait for the database (backoff, then a clear error), apply migrations, then run the command
# (querynox.uvicorn_server by default; see the Dockerfile's CMD).
#
# MIGRATE_ON_START (default true): compose.yaml migrates once, in its `migrate` service, and turns this off on the
# app replicas, because two instances migrating one PostgreSQL at the same moment collide on the same CREATE TABLE.
# ALLOWED_HOSTS_ADD_CONTAINER_IP (default false): Prometheus scrapes each replica by its container IP, so the Host
# header is that IP and Django would answer 400 (DisallowedHost). This appends the container's own addresses to
# ALLOWED_HOSTS, which must then be set explicitly. A private address in ALLOWED_HOSTS only lets requests that
# already reach the container name it as their host.
set -eu

# The same spellings querynox/env.py accepts; anything else stops the container instead of being guessed.
check_bool() {
    case "$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes | on) echo true ;;
        0 | false | no | off | "") echo false ;;
        *)
            echo "$1=$2 is not a boolean (use true/false, 1/0, yes/no, on/off)" >&2
            return 2
            ;;
    esac
}

migrate=$(check_bool MIGRATE_ON_START "${MIGRATE_ON_START-true}")
add_container_ip=$(check_bool ALLOWED_HOSTS_ADD_CONTAINER_IP "${ALLOWED_HOSTS_ADD_CONTAINER_IP-false}")

if [ "$add_container_ip" = true ]; then
    if [ -z "${ALLOWED_HOSTS:-}" ]; then
        echo "ALLOWED_HOSTS_ADD_CONTAINER_IP=true needs ALLOWED_HOSTS set (the addresses are appended to it)" >&2
        exit 2
    fi
    container_ips=$(python -c 'import socket; print(",".join(socket.gethostbyname_ex(socket.gethostname())[2]))')
    ALLOWED_HOSTS="$ALLOWED_HOSTS,$container_ips"
    export ALLOWED_HOSTS
fi

python manage.py wait_for_db
if [ "$migrate" = true ]; then
    python manage.py migrate --noinput
fi
exec "$@"
