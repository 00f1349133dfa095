"""
Tests for L{dualproxy.tap}: the command line merged over the config file,
and mistakes reported as one line on stderr.
"""

from __future__ import annotations

import os
import io
import sys
from ipaddress import ip_network

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dualproxy import plugins, tap
from dualproxy.forward.mode import ForwardMode
from dualproxy.proxymode import ProxyMode
from dualproxy.settings.model import ParentProxy
from dualproxy.interfaces import IProxyMode, IRequestFilter


@implementer(IPlugin, IProxyMode)
class FakeMode(ProxyMode):
    """
    A mode that records what it was given; one named forward reads and
    checks its table as the built-in one does.
    """

    description = "a mode that records what it was given"

    def __init__(self, name, defaultListen=("tcp:3128:interface=127.0.0.1",)):
        self.name = name
        self.defaultListen = defaultListen
        self.made = []
        self.settings = ForwardMode() if name == "forward" else ProxyMode()

    def parseSettings(self, table, base):
        return self.settings.parseSettings(table, base)

    def checkSettings(self, settings, config):
        self.settings.checkSettings(settings, config)

    def makeService(self, config, filters):
        self.made.append((config, filters))
        return Service()


@implementer(IPlugin, IRequestFilter)
class FakeFilter:
    def __init__(self, name):
        self.name = name

    def request(self, head, client):
        return None

    def response(self, request, head):
        pass


class OptionsTests(SynchronousTestCase):
    def setUp(self):
        self.forward = FakeMode("forward")
        self.echo = FakeMode("echo", ("tcp:7:interface=127.0.0.1",))
        self.filters = {"strip": FakeFilter("strip"), "tag": FakeFilter("tag")}
        self.patch(tap, "findModes", lambda: {"forward": self.forward, "echo": self.echo})
        self.patch(plugins, "findFilters", lambda: self.filters)
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def configFile(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def assertFails(self, args, line: str) -> None:
        """
        Parsing C{args} exits with status 1 after writing exactly C{line}.
        """
        error = self.assertRaises(SystemExit, self.parse, *args)
        self.assertEqual(error.code, 1)
        self.assertEqual(self.stderr.getvalue(), f"dualproxy: {line}\n")

    def test_fakesProvideInterfaces(self):
        self.assertTrue(verifyObject(IProxyMode, self.forward))
        self.assertTrue(verifyObject(IRequestFilter, self.filters["tag"]))

    def test_defaults(self):
        """
        With no options the forward mode runs on its default listener.
        """
        options = self.parse()
        self.assertIs(options.mode, self.forward)
        self.assertEqual(options.config.mode, "forward")
        self.assertEqual(options.config.listen, ("tcp:3128:interface=127.0.0.1",))
        self.assertEqual(options.config.forward.connect_ports, (443,))
        self.assertEqual(options.filters, [])

    def test_modeDefaultListen(self):
        """
        Each mode brings its own default listeners.
        """
        options = self.parse("--mode", "echo")
        self.assertIs(options.mode, self.echo)
        self.assertEqual(options.config.listen, ("tcp:7:interface=127.0.0.1",))

    def test_everyOption(self):
        accessLog = self.mktemp()
        options = self.parse(
            "--listen", "tcp:0",
            "--listen", "tcp:1",
            "--allow-client", "10.0.0.0/8",
            "--allow-client", "::1",
            "--allow-destination", "192.168.0.0/16",
            "--connect-port", "443",
            "--connect-port", "8443",
            "--parent", "http://u:p@parent:3128",
            "--access-log", "json",
            "--access-log-file", accessLog,
        )
        config = options.config
        self.assertEqual(config.listen, ("tcp:0", "tcp:1"))
        self.assertEqual(config.access_log, "json")
        self.assertEqual(config.access_log_file, os.path.abspath(accessLog))
        self.assertEqual(config.forward.allow_clients, (ip_network("10.0.0.0/8"), ip_network("::1/128")))
        self.assertEqual(config.forward.allow_destinations, (ip_network("192.168.0.0/16"),))
        self.assertEqual(config.forward.connect_ports, (443, 8443))
        self.assertEqual(config.forward.parent.host, "parent")
        self.assertIsNotNone(config.forward.parent.authorization)

    def test_fileSettings(self):
        path = self.configFile(
            'mode = "echo"\nlisten = ["tcp:5"]\nfilters = ["tag", "strip"]\n'
            '[forward]\nconnect_ports = [563]\nvia = "edge"\n'
        )
        options = self.parse("--config", path)
        self.assertIs(options.mode, self.echo)
        self.assertEqual(options.config.listen, ("tcp:5",))
        self.assertEqual(options.config.forward.connect_ports, (563,))
        self.assertEqual(options.config.forward.via, "edge")
        self.assertEqual(options.filters, [self.filters["tag"], self.filters["strip"]])

    def test_optionsOverrideFile(self):
        """
        An option replaces the file's value; a repeated option replaces the
        file's whole list; settings not given on the command line stay.
        """
        path = self.configFile(
            'mode = "echo"\nlisten = ["tcp:5", "tcp:6"]\naccess_log = "json"\n'
            "[forward]\n"
            'allow_clients = ["10.0.0.0/8", "172.16.0.0/12"]\n'
            'allow_destinations = ["10.0.0.0/8"]\n'
            "connect_ports = [443, 563]\n"
            'parent = "http://a:1"\n'
            'via = "edge"\n'
        )
        options = self.parse(
            "--config", path,
            "--mode", "forward",
            "--listen", "tcp:7",
            "--access-log", "off",
            "--allow-client", "192.168.0.0/16",
            "--allow-destination", "172.16.0.0/12",
            "--connect-port", "8443",
            "--parent", "http://b:2",
        )
        config = options.config
        self.assertIs(options.mode, self.forward)
        self.assertEqual(config.listen, ("tcp:7",))
        self.assertEqual(config.access_log, "off")
        self.assertEqual(config.forward.allow_clients, (ip_network("192.168.0.0/16"),))
        self.assertEqual(config.forward.allow_destinations, (ip_network("172.16.0.0/12"),))
        self.assertEqual(config.forward.connect_ports, (8443,))
        self.assertEqual(config.forward.parent, ParentProxy("b", 2, None))
        self.assertEqual(config.forward.via, "edge")

    def test_parentReplacesTheFilesPool(self):
        """
        C{--parent} stands for the file's C{parent} or C{parents}, whichever
        gave the default pool: never both, which would be an error.
        """
        path = self.configFile('[forward]\nparents = ["http://a:1", "http://c:3"]\n')
        config = self.parse("--config", path, "--parent", "https://b:2").config
        self.assertEqual((config.forward.parent, config.forward.parents), (ParentProxy("b", 2, None, True), ()))

    def test_errors(self):
        """
        Each mistake, in the options or the file, is one line naming it.
        """
        missing = self.mktemp()
        table = [
            (["--mode", "nope"], "unknown mode 'nope' (known: echo, forward)"),
            (["--allow-client", "lan"], "forward.allow_clients[0]: 'lan' is not an IP network"),
            (["--allow-destination", "x"], "forward.allow_destinations[0]: 'x' is not an IP network"),
            (["--connect-port", "https"], "--connect-port: 'https' is not a port number"),
            (["--connect-port", "70000"], "forward.connect_ports[0]: port 70000 is not in 1-65535"),
            (["--listen", "tcp:0", "--listen", "xyz"], "listen[1]: bad endpoint 'xyz': Unknown endpoint type: 'xyz'"),
            (["--access-log", "xml"], "access_log: 'xml' is not one of combined, json, off"),
            (["--parent", "squid:3128"], "forward.parent: 'squid:3128': expected http[s]://[user:password@]host:port"),
            (["--config", missing], f"{missing}: cannot read the file (No such file or directory)"),
            (
                ["--config", self.configFile("[forward]\nallow_clients = ['127.0.0.1', 'lan']\n")],
                "forward.allow_clients[1]: 'lan' is not an IP network",
            ),
            (
                ["--config", self.configFile("filters = ['tag', 'nope']\n")],
                "filters[1]: unknown filter 'nope' (known: strip, tag)",
            ),
            (["--config", self.configFile("mode = 'nope'\n")], "unknown mode 'nope' (known: echo, forward)"),
            (
                ["--config", self.configFile("forward = 1\n"), "--allow-client", "10.0.0.0/8"],
                "forward: expected a table, got an integer",
            ),
        ]
        for args, line in table:
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertFails(args, line)

    def test_extraTableForMode(self):
        """
        A table named after a known third-party mode reaches that mode.
        """
        path = self.configFile('mode = "echo"\n[echo]\ngreeting = "hi"\n')
        options = self.parse("--config", path)
        self.assertEqual(dict(options.config.modes["echo"]), {"greeting": "hi"})

    def test_makeService(self):
        """
        L{tap.makeService} is the selected mode's service for the config
        and filters.
        """
        path = self.configFile('filters = ["strip"]\n')
        options = self.parse("--config", path, "--mode", "echo")
        dispatched = []
        self.patch(tap, "fastDispatch", dispatched.append)
        service = tap.makeService(options)
        self.assertIsInstance(service, Service)
        self.assertEqual(dispatched, [reactor], "the reactor dispatches without the legacy log context")
        self.assertEqual(self.echo.made, [(options.config, [self.filters["strip"]])])
        self.assertEqual(self.echo.made[0][0].listen, ("tcp:7:interface=127.0.0.1",))
        self.assertEqual(self.forward.made, [])

    def test_helpDocumentsDefaults(self):
        usage = " ".join(str(tap.Options()).split())
        for text in (
            "tcp:3128:interface=127.0.0.1",
            "tcp:8080:interface=127.0.0.1",
            "loopback only",
            "[default: 443]",
            "[default: combined]",
        ):
            self.assertIn(text, usage)
