"""Start-up: wait for the database with exponential backoff, then give up with a clear message (the seed's
connectDB). Run before migrate, so a container started before its database does not crash-loop on a traceback."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connections


class Command(BaseCommand):
    help = "Wait until the default database answers, retrying with backoff."

    def add_arguments(self, parser):
        parser.add_argument("--attempts", type=int, default=8, help="tries before giving up (default 8)")
        parser.add_argument("--first-delay", type=float, default=0.5, help="seconds before the second try")
        parser.add_argument("--max-delay", type=float, default=8.0, help="longest wait between tries")

    def handle(self, *args, attempts, first_delay, max_delay, **options):
        connection = connections["default"]
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                connection.ensure_connection()
                self.stdout.write(f"database is up ({connection.vendor}, attempt {attempt})")
                return
            except OperationalError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                connection.close()
                if attempt == attempts:
                    raise CommandError(
                        f"The database did not answer after {attempts} attempts ({reason}). "
                        "Check DATABASE_URL and that the database server is running."
                    ) from None
                self.stderr.write(
                    f"database not ready (attempt {attempt}/{attempts}): {reason}; retrying in {delay:g}s"
                )
                time.sleep(delay)
                delay = min(delay * 2, max_delay)
