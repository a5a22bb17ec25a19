"""A full connection pool is a busy process (503, retry in a second), not a database
that went away (level 3): voiceplatform.dbpool tells the two apart."""

from __future__ import annotations

import psycopg
import pytest
from django.db import OperationalError, connections
from psycopg_pool import ConnectionPool, PoolTimeout

from ops_app import health
from sessions_app import journal
from tests.support import free_port
from voiceplatform import dbpool
from voiceplatform.errors import ServiceUnavailable


def _conninfo(port: int | None = None) -> str:
    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    if port is not None:
        params["port"] = port
    return psycopg.conninfo.make_conninfo(**params)


def _timed_out(pool: ConnectionPool) -> OperationalError:
    """What Django raises when a request waits too long for a pooled connection."""
    try:
        pool.getconn(timeout=0.2)
    except PoolTimeout as exc:
        try:
            raise OperationalError(str(exc)) from exc
        except OperationalError as wrapped:
            return wrapped
    raise AssertionError("the pool lent a connection")


@pytest.fixture
def full_pool(monkeypatch, django_db_blocker):
    with django_db_blocker.unblock():
        pool = ConnectionPool(_conninfo(), min_size=1, max_size=1, open=True)
        pool.wait()
        held = pool.getconn()
    monkeypatch.setattr(dbpool, "_pool", lambda: pool)
    yield pool
    pool.putconn(held)
    pool.close()


@pytest.fixture
def pool_of_a_dead_server(monkeypatch):
    pool = ConnectionPool(
        _conninfo(port=free_port()), min_size=0, max_size=2, open=True, reconnect_timeout=1
    )
    monkeypatch.setattr(dbpool, "_pool", lambda: pool)
    yield pool
    pool.close()


def test_a_wait_on_a_full_pool_is_busy(full_pool):
    assert dbpool.exhausted(_timed_out(full_pool))


def test_a_wait_on_a_pool_that_cannot_connect_is_the_database_away(pool_of_a_dead_server):
    assert not dbpool.exhausted(_timed_out(pool_of_a_dead_server))


def test_other_database_errors_are_not_busy(full_pool):
    assert not dbpool.exhausted(OperationalError("connection refused"))


async def test_a_busy_pool_is_refused_with_503_and_does_not_switch_to_the_journal(full_pool):
    health.forget()
    error = _timed_out(full_pool)

    with pytest.raises(ServiceUnavailable) as refused:
        journal.went_away(error)

    assert refused.value.status == 503 and refused.value.retry_after == 1
    assert not await journal.away()


async def test_a_database_away_still_switches_to_the_journal(pool_of_a_dead_server):
    health.forget()

    journal.went_away(_timed_out(pool_of_a_dead_server))

    assert await journal.away()
    health.forget()
