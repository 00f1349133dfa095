"""
Tests for L{dualproxy.config}: every mistake is refused with one line naming
its key, and every default is the safe one.
"""

from __future__ import annotations

import base64
import glob
import operator
import os
from ipaddress import ip_network

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.plugins import findModes, loadFilters
from dualproxy import prestart
from dualproxy.config import ConfigError, fromDict, loadFile
from dualproxy.socks.settings import SocksSettings
from dualproxy.settings.model import (
    Config,
    DnsSettings,
    ForwardSettings,
    ParentProxy,
    ParentRule,
    RedisSettings,
    ReverseSettings,
    Timeouts,
    UpstreamSettings,
)

def checked(data, **kwargs) -> Config:
    """
    C{data} parsed, then checked as before start-up: what twistd does.
    """
    config = fromDict(data, **kwargs)
    prestart.check(config, findModes())
    return config


class EchoMode:
    """
    A third-party mode without settings hooks: its table stays raw.
    """

    name = "echo"


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (config dict, key named by the error, text the problem must contain)
ERRORS = [
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"forward": {"allow_client": []}}, "forward.allow_client", "unknown key (known: allow_clients,"),
    ({"timeouts": {"read": 1}}, "timeouts.read", "unknown key"),
    ({"upstream": {"max_idle": 1}}, "upstream.max_idle", "unknown key"),
    ({"forward": 1}, "forward", "expected a table, got an integer"),
    ({"timeouts": []}, "timeouts", "expected a table, got an array"),
    ({"upstream": "x"}, "upstream", "expected a table, got a string"),
    ({"mode": 1}, "mode", "expected a string, got an integer"),
    ({"mode": ""}, "mode", "must not be empty"),
    ({"listen": "tcp:80"}, "listen", "expected an array, got a string"),
    ({"listen": [80]}, "listen[0]", "expected a string, got an integer"),
    ({"listen": ["xyz"]}, "listen[0]", "bad endpoint 'xyz': Unknown endpoint type"),
    ({"listen": ["tcp:0", "tcp:abc"]}, "listen[1]", "bad endpoint 'tcp:abc': "),
    ({"listen": ["tcp:80:bogus=1"]}, "listen[0]", "bad endpoint 'tcp:80:bogus=1': "),
    ({"access_log": "apache"}, "access_log", "'apache' is not one of combined, json, off"),
    ({"access_log": False}, "access_log", "expected a string, got a boolean"),
    ({"filters": "a"}, "filters", "expected an array"),
    ({"filters": [""]}, "filters[0]", "must not be empty"),
    ({"timeouts": {"connect": 0}}, "timeouts.connect", "must be a positive number of seconds, got 0"),
    ({"timeouts": {"client_idle": -1.5}}, "timeouts.client_idle", "must be a positive number of seconds"),
    ({"timeouts": {"upstream_idle": float("inf")}}, "timeouts.upstream_idle", "must be a positive number"),
    ({"timeouts": {"upstream_read": float("nan")}}, "timeouts.upstream_read", "must be a positive number"),
    ({"timeouts": {"connect": True}}, "timeouts.connect", "expected a number of seconds, got a boolean"),
    ({"timeouts": {"connect": "10"}}, "timeouts.connect", "expected a number of seconds, got a string"),
    ({"upstream": {"max_idle_per_host": -1}}, "upstream.max_idle_per_host", "must be 0 or more, got -1"),
    ({"upstream": {"max_idle_per_host": 1.5}}, "upstream.max_idle_per_host", "expected an integer, got a number"),
    ({"upstream": {"max_idle_per_host": True}}, "upstream.max_idle_per_host", "expected an integer, got a boolean"),
    (
        {"forward": {"allow_clients": ["10.0.0.0/8", "x"]}},
        "forward.allow_clients[1]",
        "'x' is not an IP network",
    ),
    ({"forward": {"allow_clients": "10.0.0.0/8"}}, "forward.allow_clients", "expected an array, got a string"),
    ({"forward": {"allow_clients": ["10.0.0.0/33"]}}, "forward.allow_clients[0]", "is not an IP network"),
    ({"forward": {"allow_destinations": ["lan"]}}, "forward.allow_destinations[0]", "'lan' is not an IP network"),
    ({"forward": {"x_forwarded_for": [10]}}, "forward.x_forwarded_for[0]", "expected a string, got an integer"),
    (
        {"forward": {"deny_destinations": ["bad host"]}},
        "forward.deny_destinations[0]",
        "'bad host' is not a host name, .domain, *.domain or IP network",
    ),
    ({"forward": {"deny_destinations": ["a..b"]}}, "forward.deny_destinations[0]", "is not a host name"),
    ({"forward": {"connect_ports": [443, 0]}}, "forward.connect_ports[1]", "port 0 is not in 1-65535"),
    ({"forward": {"connect_ports": [65536]}}, "forward.connect_ports[0]", "port 65536 is not in 1-65535"),
    ({"forward": {"connect_ports": [True]}}, "forward.connect_ports[0]", "expected an integer, got a boolean"),
    ({"forward": {"connect_ports": ["443"]}}, "forward.connect_ports[0]", "expected an integer, got a string"),
    ({"forward": {"parent": "ftp://p:3128"}}, "forward.parent", "expected http[s]://[user:password@]host:port"),
    ({"forward": {"parent": "http://p"}}, "forward.parent", "expected http[s]://[user:password@]host:port"),
    ({"forward": {"parent": "p:3128"}}, "forward.parent", "expected http[s]://"),
    ({"forward": {"parent": "http://:3128"}}, "forward.parent", "expected http[s]://"),
    ({"forward": {"parent": "http://p:x"}}, "forward.parent", "'http://p:x': "),
    ({"forward": {"parent": "http://p:99999"}}, "forward.parent", "'http://p:99999': "),
    ({"forward": {"parent": "http://p:0"}}, "forward.parent", "port 0 is not in 1-65535"),
    ({"forward": {"parent": "http://p:3128/path"}}, "forward.parent", "has no path, query or fragment"),
    ({"forward": {"parent": "http://p:3128?q"}}, "forward.parent", "has no path, query or fragment"),
    ({"forward": {"parent": 3128}}, "forward.parent", "expected a string, got an integer"),
    ({"forward": {"parents": "http://p:1"}}, "forward.parents", "expected an array, got a string"),
    ({"forward": {"parents": ["http://p:1", "socks5://q:1"]}}, "forward.parents[1]",
     "'socks5://q:1': expected http[s]://[user:password@]host:port"),
    ({"forward": {"parents": ["https://p:1/x"]}}, "forward.parents[0]", "has no path, query or fragment"),
    ({"forward": {"parents": ["https://p:70000"]}}, "forward.parents[0]", "'https://p:70000': "),
    ({"forward": {"parents": ["https://p"]}}, "forward.parents[0]", "expected http[s]://"),
    ({"forward": {"parent": "http://p:1", "parents": ["http://q:1"]}}, "forward.parents",
     "give either forward.parent (one URL) or forward.parents, not both"),
    ({"forward": {"parent_selection": "random"}}, "forward.parent_selection",
     "'random' is not one of first, round-robin"),
    ({"forward": {"parent_retry": 0}}, "forward.parent_retry", "must be a positive number of seconds"),
    ({"forward": {"parent_ca": "/nonexistent/ca.pem"}}, "forward.parent_ca", "/nonexistent/ca.pem"),
    ({"forward": {"parent_rules": {"destinations": ["x"]}}}, "forward.parent_rules", "expected an array"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "direct": True}, 1]}}, "forward.parent_rules[1]",
     "expected a table, got an integer"),
    ({"forward": {"parent_rules": [{"direct": True}]}}, "forward.parent_rules[0].destinations",
     "a rule needs at least one destination"),
    ({"forward": {"parent_rules": [{"destinations": [], "direct": True}]}},
     "forward.parent_rules[0].destinations", "a rule needs at least one destination"),
    ({"forward": {"parent_rules": [{"destinations": ["bad host"], "direct": True}]}},
     "forward.parent_rules[0].destinations[0]", "'bad host' is not a host name, .domain, *.domain or IP network"),
    ({"forward": {"parent_rules": [{"destinations": ["*..x"], "direct": True}]}},
     "forward.parent_rules[0].destinations[0]", "is not a host name"),
    ({"forward": {"parent_rules": [{"destinations": ["x"]}]}}, "forward.parent_rules[0]",
     "a rule has either parents = [...] (at least one) or direct = true"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "direct": False}]}}, "forward.parent_rules[0]",
     "a rule has either parents"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "parents": []}]}}, "forward.parent_rules[0]",
     "a rule has either parents"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "direct": True, "parents": ["http://p:1"]}]}},
     "forward.parent_rules[0]", "a rule has either parents"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "parents": ["ftp://p:1"]}]}},
     "forward.parent_rules[0].parents[0]", "expected http[s]://"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "direct": "yes"}]}},
     "forward.parent_rules[0].direct", "expected true or false"),
    ({"forward": {"parent_rules": [{"destinations": ["x"], "parent": "http://p:1"}]}},
     "forward.parent_rules[0].parent", "unknown key"),
    ({"forward": {"via": "my proxy"}}, "forward.via", "'my proxy' is not an HTTP token"),
    ({"forward": {"via": ""}}, "forward.via", "is not an HTTP token"),
    ({"forward": {"anonymous": "yes"}}, "forward.anonymous", "expected true or false, got a string"),
    ({"forward": {"anonymous": 1}}, "forward.anonymous", "expected true or false, got an integer"),
    (
        {"forward": {"anonymous_headers": ["Cookie", "X: Y"]}},
        "forward.anonymous_headers[1]",
        "'X: Y' is not an HTTP field name",
    ),
    ({"forward": {"auth_file": "/nonexistent/users"}}, "forward.auth_file", "cannot read '/nonexistent/users'"),
    ({"forward": {"auth_file": ""}}, "forward.auth_file", "must not be empty"),
    ({"access_log_file": "/nonexistent/access.log"}, "access_log_file",
     "cannot open '/nonexistent/access.log' for appending: No such file or directory"),
    ({"access_log_file": ""}, "access_log_file", "must not be empty"),
    ({"forward": {"auth_realm": 'a"b'}}, "forward.auth_realm", "without quotes or backslashes"),
    ({"forward": {"auth_realm": "a\nb"}}, "forward.auth_realm", "printable ASCII"),
    ({"cache": 1}, "cache", "expected a table, got an integer"),
    ({"limits": {"max_body": -1}}, "limits.max_body", "must be 0 or more, got -1"),
    ({"limits": {"max_request_line": 0}}, "limits.max_request_line", "must be 1 or more, got 0"),
    ({"limits": {"max_connections": 1.5}}, "limits.max_connections", "expected an integer"),
    ({"limits": {"max_uploads": 1}}, "limits.max_uploads", "unknown key"),
    ({"cache": {"lock_timeout": 0}}, "cache.lock_timeout", "must be a positive number of seconds"),
    ({"cache": {"store": ""}}, "cache.store", "must not be empty"),
    ({"cache": {"purge_from": ["everyone"]}}, "cache.purge_from[0]", "everyone"),
    ({"forward": {"cache": "yes"}}, "forward.cache", "expected true or false, got a string"),
    ({"reverse": {"routes": [{"redirect": "http://a/", "cache": True}]}}, "reverse.routes[0].cache",
     "only a route to a pool is cached"),
    ({"forward": {"rate_limit": 10}}, "forward.rate_limit", "expected a table, got an integer"),
    ({"forward": {"rate_limit": {"burst": 5}}}, "forward.rate_limit.rate", "missing (requests per second)"),
    ({"forward": {"rate_limit": {"rate": 0}}}, "forward.rate_limit.rate", "must be a positive number"),
    ({"forward": {"rate_limit": {"rate": float("inf")}}}, "forward.rate_limit.rate", "must be a positive number"),
    ({"forward": {"rate_limit": {"rate": "10/s"}}}, "forward.rate_limit.rate",
     "expected a number of requests per second, got a string"),
    ({"forward": {"rate_limit": {"rate": True}}}, "forward.rate_limit.rate", "got a boolean"),
    ({"forward": {"rate_limit": {"rate": 1, "burst": 0}}}, "forward.rate_limit.burst", "must be 1 or more, got 0"),
    ({"forward": {"rate_limit": {"rate": 1, "burst": 2.5}}}, "forward.rate_limit.burst",
     "expected an integer, got a number"),
    ({"forward": {"rate_limit": {"rate": 1, "key": "cookie:id"}}}, "forward.rate_limit.key",
     "'cookie:id' is not \"address\", \"header:NAME\" or \"user\""),
    ({"forward": {"rate_limit": {"rate": 1, "key": "header:"}}}, "forward.rate_limit.key",
     "'' is not an HTTP field name"),
    ({"forward": {"rate_limit": {"rate": 1, "key": "header:X Key"}}}, "forward.rate_limit.key",
     "is not an HTTP field name"),
    ({"forward": {"rate_limit": {"rate": 1, "key": "user"}}}, "forward.rate_limit.key",
     '"user" needs forward.auth_file'),
    ({"forward": {"rate_limit": {"rate": 1, "limiter": ""}}}, "forward.rate_limit.limiter", "must not be empty"),
    ({"reverse": {"pools": {"app": {"backends": ["http://a:1"], "rate_limit": {"rate": 1, "key": "user"}}}}},
     "reverse.pools.app.rate_limit.key", '"user" is the authenticated user of forward and socks modes'),
    ({"reverse": {"pools": {"app": {"backends": ["http://a:1"]}},
                  "routes": [{"pool": "app", "rate_limit": {"rate": 1, "key": "user"}}]}},
     "reverse.routes[0].rate_limit.key", 'use "address" or "header:NAME" here'),
    ({"reverse": {"routes": [{"redirect": "http://a/", "rate_limit": {"rate": 1}}]}}, "reverse.routes[0].rate_limit",
     "only a route to a pool is rate limited"),
    ({"forward": {"routes": [{"static": ".", "rate_limit": {"rate": 1}}]}}, "forward.routes[0].rate_limit",
     "only a route to a pool is rate limited"),
    ({"reverse": {"pools": {"app": {"backends": ["http://a:1"]}},
                  "routes": [{"pool": "app", "upgrades": ["websocket", "H2C"]}]}},
     "reverse.routes[0].upgrades[1]", "h2c is never relayed"),
    ({"reverse": {"pools": {"app": {"backends": ["http://a:1"]}},
                  "routes": [{"pool": "app", "upgrades": ["web socket"]}]}},
     "reverse.routes[0].upgrades[0]", "is not an Upgrade protocol name"),
    ({"reverse": {"routes": [{"redirect": "http://a/", "upgrades": ["websocket"]}]}}, "reverse.routes[0].upgrades",
     "only a route to a pool relays upgrades"),
    ({"socks": {"allow_client": []}}, "socks.allow_client", "unknown key (known: allow_clients,"),
    ({"socks": {"allow_clients": ["everyone"]}}, "socks.allow_clients[0]", "is not an IP network"),
    ({"socks": {"deny_destinations": ["a b"]}}, "socks.deny_destinations[0]", "is not a host name"),
    ({"socks": {"ports": []}}, "socks.ports", "must not be empty"),
    ({"socks": {"ports": [0]}}, "socks.ports[0]", "port 0 is not in 1-65535"),
    ({"socks": {"ports": ["80-"]}}, "socks.ports[0]", "is not a port or a range of ports"),
    ({"socks": {"ports": ["90-80"]}}, "socks.ports[0]", "the range is empty"),
    ({"socks": {"ports": ["1-65536"]}}, "socks.ports[0]", "port 65536 is not in 1-65535"),
    ({"socks": {"ports": [True]}}, "socks.ports[0]", "expected an integer, got a boolean"),
    ({"socks": {"auth_file": 1}}, "socks.auth_file", "expected a string"),
    ({"socks": {"auth_file": "missing-users"}}, "socks.auth_file", "cannot read"),
    ({"socks": {"rate_limit": {"rate": 0}}}, "socks.rate_limit.rate", "must be a positive number"),
    ({"socks": {"rate_limit": {"rate": 1, "key": "header:X-User"}}}, "socks.rate_limit.key",
     "SOCKS has no headers"),
    ({"socks": {"rate_limit": {"rate": 1, "key": "user"}}}, "socks.rate_limit.key", '"user" needs socks.auth_file'),
    ({"mode": "socks", "tls": {"listen": ["tcp:8443"], "certificates": [
        {"cert": os.path.join(REPO, "conf", "certs", "localhost.pem"),
         "key": os.path.join(REPO, "conf", "certs", "localhost.key")}]}},
     "tls.listen", "TLS listeners serve HTTP; socks mode has none"),
    ({"mode": "socks", "filters": ["addheader"]}, "filters", "socks mode relays none"),
]


class FromDictErrorTests(SynchronousTestCase):
    def test_errors(self):
        """
        Each mistake raises L{ConfigError} naming the dotted key, with a
        one-line message C{"<key>: <problem>"}.
        """
        for data, key, problem in ERRORS:
            error = self.assertRaises(ConfigError, checked, data)
            self.assertEqual((error.key, problem in error.problem), (key, True), f"{data!r}: {error}")
            self.assertEqual(str(error), f"{key}: {error.problem}")
            self.assertNotIn("\n", str(error))

    def test_authFileDirectory(self):
        """
        A directory is not a password file.
        """
        directory = os.path.dirname(self.mktemp())
        error = self.assertRaises(ConfigError, checked, {"forward": {"auth_file": directory}})
        self.assertEqual(error.key, "forward.auth_file")
        self.assertIn("cannot read", error.problem)

    def test_unusableCipherList(self):
        error = self.assertRaises(ConfigError, checked, {"tls": {"ciphers": "NOTHING-REAL"}})
        self.assertEqual(str(error), "tls.ciphers: no usable cipher in 'NOTHING-REAL'")

    def test_malformedPasswordFile(self):
        """
        A password file that cannot be used stops start-up, naming the line.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# users\nalice-without-hash\n")
        error = self.assertRaises(ConfigError, checked, {"forward": {"auth_file": path}})
        self.assertEqual(str(error), f"forward.auth_file: {os.path.abspath(path)}: line 2: expected user:hash")

    def test_parsingReadsNoFile(self):
        """
        Parsing takes a missing file as a path; the pre-start step refuses it,
        naming the key and the absolute path.
        """
        data = {"forward": {"tls_ca": "missing.pem"}, "mode": "forward"}
        config = fromDict(data, base="/nonexistent")
        self.assertEqual(config.forward.tls_ca, "/nonexistent/missing.pem")
        error = self.assertRaises(ConfigError, prestart.check, config, findModes())
        self.assertEqual(str(error), "forward.tls_ca: '/nonexistent/missing.pem' is not a file")

    def test_accessLogFileRelativeToTheConfig(self):
        """
        A relative access_log_file is the config file's neighbour; with the
        access log off it is not opened.
        """
        config = fromDict({"access_log_file": "logs/access.log", "access_log": "off"}, base="/nonexistent")
        self.assertEqual(config.access_log_file, "/nonexistent/logs/access.log")
        prestart.check(config, findModes())

    def test_unknownModeTableWithoutModes(self):
        """
        A table named after a mode is only accepted when that mode is known.
        """
        error = self.assertRaises(ConfigError, fromDict, {"echo": {}})
        self.assertEqual(str(error).split(" (")[0], "echo: unknown key")

    def test_socksChecksOnlyItsOwnMode(self):
        """
        The shared tables socks mode cannot serve are refused only when
        socks is the mode run.
        """
        checked({"mode": "forward", "filters": ["addheader"]})

    def test_socksSettings(self):
        """
        Loopback clients, ports 80 and 443, no login by default; ports may
        be ranges.
        """
        self.assertEqual(fromDict({}).modes["socks"], SocksSettings(
            (ip_network("127.0.0.0/8"), ip_network("::1/128")), (), (), ((80, 80), (443, 443)), None, None))
        table = {"ports": [22, " 1024 - 65535 "], "allow_clients": ["10.0.0.0/8"]}
        settings = fromDict({"socks": table}).modes["socks"]
        self.assertEqual(settings.ports, ((22, 22), (1024, 65535)))
        self.assertEqual(settings.allow_clients, (ip_network("10.0.0.0/8"),))
        self.assertEqual([settings.allowsPort(port) for port in (22, 23, 1023, 1024, 65535)],
                         [True, False, False, True, True])

    def test_extraModeTableMustBeTable(self):
        error = self.assertRaises(ConfigError, fromDict, {"echo": 1}, modes={"echo": EchoMode()})
        self.assertEqual(str(error), "echo: expected a table, got an integer")


class FromDictTests(SynchronousTestCase):
    def test_defaults(self):
        """
        An empty config is the safe default: loopback clients only, CONNECT
        to 443 only, no parent, the mode's own listeners.
        """
        config = fromDict({})
        self.assertEqual(config, Config(modes={"forward": ForwardSettings(), "reverse": ReverseSettings(),
                                               "socks": SocksSettings()}))
        self.assertEqual(config.mode, "forward")
        self.assertEqual(config.listen, ())
        self.assertEqual(config.access_log, "combined")
        self.assertEqual(config.filters, ())
        self.assertEqual(config.timeouts, Timeouts(10.0, 60.0, 60.0, 60.0))
        self.assertEqual(config.upstream, UpstreamSettings(32))
        forward = config.forward
        self.assertEqual(forward.allow_clients, (ip_network("127.0.0.0/8"), ip_network("::1/128")))
        self.assertEqual(forward.allow_destinations, ())
        self.assertEqual(forward.deny_destinations, ())
        self.assertEqual(forward.connect_ports, (443,))
        self.assertIsNone(forward.parent)
        self.assertEqual(forward.via, "dualproxy")
        self.assertEqual(forward.x_forwarded_for, ())
        self.assertFalse(forward.anonymous)
        self.assertIn("Cookie", forward.anonymous_headers)
        self.assertIsNone(forward.auth_file)
        self.assertEqual(forward.auth_realm, "dualproxy")
        self.assertEqual(set(config.modes), {"forward", "reverse", "socks"})

    def test_everything(self):
        """
        Every key given is converted: networks to network objects (host
        bits cleared), integer timeouts to floats, arrays to tuples.
        """
        users = self.mktemp()
        with open(users, "w"):
            pass
        config = fromDict(
            {
                "mode": "forward",
                "listen": ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1"],
                "access_log": "json",
                "filters": ["a", "b"],
                "timeouts": {"connect": 1, "client_idle": 2.5, "upstream_idle": 3, "upstream_read": 4},
                "upstream": {"max_idle_per_host": 0},
                "forward": {
                    "allow_clients": ["192.168.1.7/24", "2001:db8::/32", "10.0.0.1"],
                    "allow_destinations": ["10.0.0.0/8"],
                    "deny_destinations": ["example.com", ".example.org", "203.0.113.0/24", "localhost"],
                    "connect_ports": [443, 8443],
                    "parent": "http://squid.internal:3128",
                    "via": "edge-1",
                    "x_forwarded_for": ["10.0.0.0/8"],
                    "anonymous": True,
                    "anonymous_headers": ["Cookie"],
                    "auth_file": users,
                    "auth_realm": "Staff only",
                },
            }
        )
        self.assertEqual(config.listen, ("tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1"))
        self.assertEqual(config.access_log, "json")
        self.assertEqual(config.filters, ("a", "b"))
        self.assertEqual(config.timeouts, Timeouts(1.0, 2.5, 3.0, 4.0))
        self.assertIsInstance(config.timeouts.connect, float)
        self.assertEqual(config.upstream, UpstreamSettings(0))
        self.assertEqual(
            config.forward,
            ForwardSettings(
                allow_clients=(ip_network("192.168.1.0/24"), ip_network("2001:db8::/32"), ip_network("10.0.0.1/32")),
                allow_destinations=(ip_network("10.0.0.0/8"),),
                deny_destinations=("example.com", ".example.org", "203.0.113.0/24", "localhost"),
                connect_ports=(443, 8443),
                parent=ParentProxy("squid.internal", 3128, None),
                via="edge-1",
                x_forwarded_for=(ip_network("10.0.0.0/8"),),
                anonymous=True,
                anonymous_headers=("Cookie",),
                auth_file=os.path.abspath(users),
                auth_realm="Staff only",
            ),
        )

    def test_parentCredentials(self):
        """
        User and password in the parent URL become a Basic
        Proxy-Authorization value, percent-decoded first.
        """
        table = [
            ("http://alice:s3cret@p:8080", ("p", 8080, b"Basic " + base64.b64encode(b"alice:s3cret"))),
            ("http://a%40b:p%3Aw@p:1/", ("p", 1, b"Basic " + base64.b64encode(b"a@b:p:w"))),
            ("http://bob@p:1", ("p", 1, b"Basic " + base64.b64encode(b"bob:"))),
            ("http://[::1]:3128", ("::1", 3128, None)),
            ("http://Proxy.Example:3128", ("proxy.example", 3128, None)),
        ]
        for url, expected in table:
            self.assertEqual(fromDict({"forward": {"parent": url}}).forward.parent, ParentProxy(*expected), url)

    def test_parentPoolAndRules(self):
        """
        https parents are parsed with their credentials; rules keep their
        destinations lower-cased and in order.
        """
        forward = fromDict({"forward": {
            "parents": ["https://u:p@A.example:3129", "http://b:3128"],
            "parent_rules": [{"destinations": ["*.Example.DE", "10.0.0.0/8"], "direct": True},
                             {"destinations": [".fr"], "parents": ["https://fr:443"]}],
            "parent_selection": "round-robin",
            "parent_retry": 5,
        }}).forward
        self.assertEqual(forward.parents, (
            ParentProxy("a.example", 3129, b"Basic " + base64.b64encode(b"u:p"), True),
            ParentProxy("b", 3128, None, False),
        ))
        self.assertEqual(forward.parent_rules, (
            ParentRule(("*.example.de", "10.0.0.0/8"), (), True),
            ParentRule((".fr",), (ParentProxy("fr", 443, None, True),), False),
        ))
        self.assertEqual((forward.parent_selection, forward.parent_retry), ("round-robin", 5.0))

    def test_extraModeTables(self):
        """
        Tables named after a known mode that is not built in are kept raw
        for that mode; the built-in tables are still validated.
        """
        modes = dict(findModes(), echo=EchoMode())
        config = fromDict({"mode": "echo", "echo": {"greeting": "hi"}, "forward": {"via": "edge"}}, modes=modes)
        self.assertEqual(config.mode, "echo")
        self.assertEqual(dict(config.modes["echo"]), {"greeting": "hi"})
        self.assertEqual(config.forward.via, "edge")
        self.assertRaises(TypeError, operator.setitem, config.modes["echo"], "x", {})
        self.assertRaises(TypeError, operator.setitem, config.modes, "x", {})

    def test_frozen(self):
        config = fromDict({})
        self.assertRaises(AttributeError, setattr, config, "mode", "x")
        self.assertRaises(AttributeError, setattr, config.forward, "via", "x")

    def test_emptyArrays(self):
        """
        Empty arrays are taken literally: no CONNECT ports means no tunnels.
        """
        forward = fromDict({"forward": {"connect_ports": [], "allow_clients": []}}).forward
        self.assertEqual(forward.connect_ports, ())
        self.assertEqual(forward.allow_clients, ())


class LoadFileTests(SynchronousTestCase):
    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_load(self):
        path = self.write(b'mode = "forward"\n[forward]\nconnect_ports = [443]\n')
        self.assertEqual(loadFile(path), {"mode": "forward", "forward": {"connect_ports": [443]}})

    def test_missing(self):
        path = self.mktemp()
        error = self.assertRaises(ConfigError, loadFile, path)
        self.assertEqual(error.key, path)
        self.assertIn("cannot read the file", error.problem)

    def test_directory(self):
        path = self.mktemp()
        os.mkdir(path)
        error = self.assertRaises(ConfigError, loadFile, path)
        self.assertEqual(error.key, path)

    def test_syntaxError(self):
        """
        A TOML syntax error is one line with the position.
        """
        path = self.write(b'mode = "forward"\nlisten = [\n  "tcp:1",\n  tcp:2\n]\n')
        error = self.assertRaises(ConfigError, loadFile, path)
        self.assertEqual(error.key, path)
        self.assertIn("not valid TOML", error.problem)
        self.assertIn("line 4", error.problem)
        self.assertNotIn("\n", str(error))

    def test_notUTF8(self):
        path = self.write(b'via = "\xff"\n')
        error = self.assertRaises(ConfigError, loadFile, path)
        self.assertIn("not valid TOML", error.problem)


class ExampleConfigTests(SynchronousTestCase):
    def test_examplesLoad(self):
        """
        Every example in conf/ loads as it is shipped, and its mode builds
        the service from it (balancer options are the mode's to check).
        """
        paths = sorted(glob.glob(os.path.join(REPO, "conf", "*.toml")))
        self.assertTrue(paths)
        for path in paths:
            config = checked(loadFile(path), base=os.path.dirname(path))
            self.assertIsInstance(config, Config, path)
            service = findModes()[config.mode].makeService(config, loadFilters(config.filters))
            self.assertTrue(list(service), path)


class DnsSettingsTests(SynchronousTestCase):
    def reverse(self, dns):
        return fromDict({"mode": "reverse", "reverse": {"dns": dns}}).reverse.dns

    def test_defaults(self):
        """
        Without a [reverse.dns] table: the system's servers, TTLs kept
        within 5 seconds and 5 minutes.
        """
        self.assertEqual(fromDict({}).reverse.dns, DnsSettings((), 5.0, 300.0))
        self.assertEqual(self.reverse({}), DnsSettings())

    def test_valid(self):
        for dns, expected in [
            ({"servers": ["10.0.0.53"]}, DnsSettings(("10.0.0.53:53",))),
            ({"servers": ["127.0.0.1:5353", " 10.0.0.1:53 "]}, DnsSettings(("127.0.0.1:5353", "10.0.0.1:53"))),
            ({"servers": ["::1", "[fd00::53]", "[fd00::53]:5353"]},
             DnsSettings(("[::1]:53", "[fd00::53]:53", "[fd00::53]:5353"))),
            ({"min_ttl": 1, "max_ttl": 1}, DnsSettings(min_ttl=1.0, max_ttl=1.0)),
            ({"min_ttl": 0.1, "max_ttl": 1}, DnsSettings(min_ttl=0.1, max_ttl=1.0)),
            ({"max_ttl": 3600}, DnsSettings(max_ttl=3600.0)),
        ]:
            self.assertEqual(self.reverse(dns), expected, dns)

    def test_errors(self):
        for dns, key, problem in [
            ({"server": []}, "reverse.dns.server", "unknown key (known: max_ttl, min_ttl, servers)"),
            ({"servers": "10.0.0.53"}, "reverse.dns.servers", "expected an array, got a string"),
            ({"servers": [53]}, "reverse.dns.servers[0]", "expected a string, got an integer"),
            ({"servers": [""]}, "reverse.dns.servers[0]", "must not be empty"),
            ({"servers": ["10.0.0.1", "ns.example.com"]}, "reverse.dns.servers[1]",
             "'ns.example.com': expected an IP address with an optional :port"),
            ({"servers": ["ns.example.com:53"]}, "reverse.dns.servers[0]", "expected an IP address"),
            ({"servers": ["10.0.0.1:0"]}, "reverse.dns.servers[0]", "'10.0.0.1:0': port '0' is not in 1-65535"),
            ({"servers": ["10.0.0.1:65536"]}, "reverse.dns.servers[0]", "port '65536' is not in 1-65535"),
            ({"servers": ["10.0.0.1:x"]}, "reverse.dns.servers[0]", "port 'x' is not in 1-65535"),
            ({"servers": ["10.0.0.1:"]}, "reverse.dns.servers[0]", "port '' is not in 1-65535"),
            ({"servers": ["10.0.0.1:²"]}, "reverse.dns.servers[0]", "is not in 1-65535"),
            ({"servers": ["[::1"]}, "reverse.dns.servers[0]", "expected an IP address"),
            ({"servers": ["[::1]53"]}, "reverse.dns.servers[0]", "expected an IP address"),
            ({"servers": ["[10.0.0.1]:x"]}, "reverse.dns.servers[0]", "port 'x' is not in 1-65535"),
            ({"min_ttl": 0}, "reverse.dns.min_ttl", "must be a positive number of seconds, got 0"),
            ({"max_ttl": "60"}, "reverse.dns.max_ttl", "expected a number of seconds, got a string"),
            ({"min_ttl": 600}, "reverse.dns.min_ttl", "min_ttl (600) must not exceed max_ttl (300)"),
            ({"max_ttl": 1}, "reverse.dns.max_ttl", "min_ttl (5) must not exceed max_ttl (1)"),
        ]:
            error = self.assertRaises(ConfigError, self.reverse, dns)
            self.assertEqual((error.key, problem in error.problem), (key, True), f"{dns!r}: {error}")
        error = self.assertRaises(ConfigError, fromDict, {"reverse": {"dns": []}})
        self.assertEqual(str(error), "reverse.dns: expected a table, got an array")


class RedisSettingsTests(SynchronousTestCase):
    def test_offWithoutATable(self):
        self.assertIsNone(fromDict({}, findModes()).redis)

    def test_defaultsAndValues(self):
        self.assertEqual(fromDict({"redis": {}}, findModes()).redis, RedisSettings())
        settings = fromDict({"redis": {"endpoint": "unix:/run/redis.sock", "timeout": 0.2, "database": 2,
                                       "username": "proxy", "password": "pw", "prefix": "edge:"}}, findModes()).redis
        self.assertEqual(settings, RedisSettings("unix:/run/redis.sock", 0.2, 2, "proxy", "pw", "edge:"))

    def test_errorsNameTheKey(self):
        for table, key in (({"endpoint": "nonsense:x"}, "redis.endpoint"), ({"timeout": -1}, "redis.timeout"),
                           ({"database": -1}, "redis.database"), ({"host": "x"}, "redis.host")):
            with self.assertRaises(ConfigError) as caught:
                fromDict({"redis": table}, findModes())
            self.assertEqual(caught.exception.key, key, table)
