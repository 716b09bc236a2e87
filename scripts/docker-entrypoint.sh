#!/bin/sh
# Container entry point: wait for the database (backoff, then a clear error), apply migrations, then run the command (daphne by default; see the Dockerfile's CMD).
set -eu
python manage.py wait_for_db
python manage.py migrate --noinput
exec "$@"
