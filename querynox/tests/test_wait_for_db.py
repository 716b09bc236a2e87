import io

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.django_db
def test_returns_at_once_when_the_database_answers():
    out = io.StringIO()
    call_command("wait_for_db", stdout=out)
    assert "database is up" in out.getvalue() and "attempt 1" in out.getvalue()


def test_retries_with_backoff_then_fails_with_a_clear_message(monkeypatch, django_db_blocker):
    # A PostgreSQL server nobody runs (port 9 on loopback), with a short connect timeout.
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "querynox",
                "USER": "nobody",
                "HOST": "127.0.0.1",
                "PORT": "9",
                "OPTIONS": {"connect_timeout": 1},
            }
        }
    )
    monkeypatch.setattr("querynox.management.commands.wait_for_db.connections", handler)
    sleeps = []
    monkeypatch.setattr("querynox.management.commands.wait_for_db.time.sleep", sleeps.append)
    err = io.StringIO()

    with django_db_blocker.unblock(), pytest.raises(CommandError) as failure:
        call_command("wait_for_db", attempts=4, first_delay=0.5, max_delay=1.5, stderr=err)

    assert sleeps == [0.5, 1.0, 1.5]  # doubling, capped
    assert "did not answer after 4 attempts" in str(failure.value) and "DATABASE_URL" in str(failure.value)
    assert err.getvalue().count("database not ready") == 3
