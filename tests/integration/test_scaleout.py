"""
Two proxy processes, started as a user starts them, sharing one real
redis-server: one's miss is the other's hit, a purge sent to one reaches
both, and a rate limit holds across them.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.python.filepath import FilePath

from ..redisserver import startRedis
from .support import curl
from .test_cache import ScriptedOrigin, header
from .test_twistd import TwistdTestCase

CONFIG = """
mode = "reverse"
listen = ["tcp:0:interface=127.0.0.1"]
access_log = "off"

[redis]
endpoint = "{endpoint}"
timeout = 1.0

[cache]
store = "redis"
purge_from = ["127.0.0.1/32"]

[reverse.pools.app]
backends = [{{ url = "http://{origin}" }}]
cache = true

[[reverse.routes]]
prefix = "/"
pool = "app"

[[reverse.routes]]
prefix = "/limited/"
pool = "app"
rate_limit = {{ limiter = "redis", rate = 0.01, burst = 3 }}
"""


class TwoInstancesTests(TwistdTestCase):
    @inlineCallbacks
    def setUp(self):
        self.redis = yield startRedis(self)
        self.origin = ScriptedOrigin()
        self.addCleanup(self.origin.stop)
        config = FilePath(self.mktemp())
        config.setContent(CONFIG.format(endpoint=self.redis.endpoint, origin=self.origin.address).encode())
        self.ports = []
        for _ in range(2):
            _, port, child = yield self.startTwistd("--config", config.path)
            yield child.waitFor(b"Redis at unix:", since=0)
            yield child.waitFor(b" is up", since=0)
            self.ports.append(port)

    @inlineCallbacks
    def fetch(self, instance: int, path: str, *args: str):
        # Behind one load balancer, every instance sees the site's name.
        out, err, code = yield curl("--include", "-H", "Host: www.example.test", *args,
                                    f"http://127.0.0.1:{self.ports[instance]}{path}")
        self.assertEqual(code, 0, err)
        head, _, body = out.decode("latin-1").rpartition("\r\n\r\n")
        return int(head.split(" ", 2)[1]), head + "\r\n\r\n", body

    @inlineCallbacks
    def test_sharedCacheAndPurge(self):
        self.origin.script("/page", b"shared body", Cache_Control="max-age=600")
        status, head, body = yield self.fetch(0, "/page")
        self.assertEqual((status, body), (200, "shared body"))
        self.assertIn("stored", header(head, "Cache-Status"))
        status, head, body = yield self.fetch(1, "/page")
        self.assertEqual((status, body), (200, "shared body"))
        self.assertIn("hit", header(head, "Cache-Status"))
        self.assertEqual(self.origin.count("/page"), 1)
        status, _, _ = yield self.fetch(0, "/page", "-X", "PURGE")
        self.assertEqual(status, 200)
        for instance in (1, 0):
            _, head, _ = yield self.fetch(instance, "/page")
        # Both went to the origin once more between them: the first after
        # the purge missed, the second hit what the first stored.
        self.assertEqual(self.origin.count("/page"), 2)
        self.assertIn("hit", header(head, "Cache-Status"))

    @inlineCallbacks
    def test_sharedRateLimit(self):
        """
        One client's burst of 3 is spent across both instances: the fourth
        request, whichever instance gets it, waits for the next token.
        """
        self.origin.script("/limited/x", b"limited body")
        statuses = []
        for instance in (0, 1, 0, 1):
            status, head, _ = yield self.fetch(instance, "/limited/x")
            statuses.append(status)
        self.assertEqual(statuses, [200, 200, 200, 429])
        self.assertEqual(header(head, "Retry-After"), "100")
        self.assertEqual(self.origin.count("/limited/x"), 3)
