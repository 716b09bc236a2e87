#!/bin/sh
# Container entry point: apply migrations, then run the command (daphne by default; see the Dockerfile's CMD).
set -eu
python manage.py migrate --noinput
exec "$@"
