"""config.cache.RedisCache: Django's Redis backend, one redis-py client per connection pool.
Run against the real Redis of REDIS_URL (the PostgreSQL + Redis pass of CI)."""

import pytest
from django.conf import settings
from django.core.cache import cache

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (make test-postgres)")


def test_the_configured_cache_is_the_reusing_backend():
    from django.core.cache import caches

    from config.cache import RedisCache

    assert isinstance(caches["default"], RedisCache)


def test_cache_calls_share_one_client_and_behave_as_djangos():
    client = cache._cache.get_client()
    cache.set("cache-test:a", {"x": 1}, 30)
    assert cache.get("cache-test:a") == {"x": 1}
    assert cache.get_many(["cache-test:a", "cache-test:missing"]) == {"cache-test:a": {"x": 1}}
    cache.set("cache-test:n", 1, 30)
    assert cache.incr("cache-test:n") == 2
    cache.delete_many(["cache-test:a", "cache-test:n"])
    assert cache.get("cache-test:a") is None
    assert cache._cache.get_client() is client
    assert cache._cache.get_client(write=True) is client  # one server: reads and writes share a pool


def test_the_client_reconnects_after_its_connections_are_dropped():
    cache.set("cache-test:b", "before", 30)
    client = cache._cache.get_client()
    client.connection_pool.disconnect()  # as when Redis restarts
    assert cache.get("cache-test:b") == "before"
    assert cache._cache.get_client() is client


def test_replies_are_parsed_by_hiredis():
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE  # redis[hiredis] in pyproject.toml: a third of a call's CPU otherwise
