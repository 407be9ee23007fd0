"""Django's Redis cache backend, with one redis-py client per connection pool.

Django's RedisCacheClient builds a new ``redis.Redis`` for every cache call. The connections
are pooled either way, but redis-py's constructor (its table of some 170 response callbacks)
cost more CPU than the GET it was made for: a signed-in request makes two or three cache
calls (its session, its user, a page fragment). The client is thread-safe and holds no
connection of its own, so one per pool serves every call; the pool still reconnects after a
Redis restart and after a fork.
"""

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
