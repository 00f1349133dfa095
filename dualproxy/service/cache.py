"""
The HTTP cache both modes share, opened on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..cache.cache import HTTPCache

if TYPE_CHECKING:
    from ..settings.model import CacheSettings


class SharedCache:
    """
    The one L{HTTPCache} of a running proxy, built on first use so that a
    configuration that caches nothing opens no store.  A reload keeps it
    while the C{[cache]} table stays the same.
    """

    def __init__(self, settings: CacheSettings, clock, resources):
        self.settings = settings
        self.clock = clock
        self.resources = resources
        self._cache: Optional[HTTPCache] = None

    def get(self) -> HTTPCache:
        """
        The cache, built now if it is not yet.

        @raise ConfigError: naming the C{cache} key that is wrong.
        """
        if self._cache is None:
            from ..plugins import loadCacheStore
            from ..policy.acl import ClientACL

            settings = self.settings
            store = loadCacheStore(settings, self.resources)
            purgeFrom = ClientACL(settings.purge_from) if settings.purge_from else None
            self._cache = HTTPCache(store, self.clock, settings.name, settings.lock_timeout, purgeFrom)
        return self._cache

    def ifBuilt(self) -> Optional[HTTPCache]:
        """
        The cache if something used it, else None: what status pages and
        metrics read without opening a store.
        """
        return self._cache

    def successor(self, settings: CacheSettings, resources) -> SharedCache:
        """
        The shared cache of a reloaded configuration: this one while the
        settings are the same, else a new one.
        """
        return self if settings == self.settings else SharedCache(settings, self.clock, resources)
