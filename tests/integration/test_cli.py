"""
C{twistd dualproxy} run as a user runs it, in a child process: its help, its
one-line start-up errors, and a third-party mode found as a plugin.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Tuple

from twisted.trial.unittest import SynchronousTestCase

from dualproxy import tap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = "from twisted.scripts.twistd import run; run()"
DEADLINE = 30.0

THIRD_PARTY_MODE = '''
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.plugin import IPlugin
from zope.interface import implementer

from dualproxy.interfaces import IProxyMode
from dualproxy.settings import values


class Greeting(Protocol):
    def connectionMade(self):
        self.transport.write(self.factory.greeting.encode() + b"\\n")
        self.transport.loseConnection()


@implementer(IPlugin, IProxyMode)
class EchoTestMode:
    name = "echo-test"
    description = "greets every connection"
    defaultListen = ("tcp:0:interface=127.0.0.1",)

    def parseSettings(self, table, base):
        return values.parsed(table, "echo-test.", {"greeting": values.nonEmptyString}).get("greeting", "hello")

    def checkSettings(self, settings, config):
        pass

    def makeService(self, config, filters):
        factory = Factory.forProtocol(Greeting)
        factory.greeting = config.modes["echo-test"]
        return StreamServerEndpointService(serverFromString(reactor, config.listen[0]), factory)


echoTest = EchoTestMode()
'''


def environment(*paths: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(paths + (REPO,))
    return env


def freePort() -> int:
    """
    A port nothing listens on right now, for a child that cannot report the
    one it was given.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twistd(*args: str, paths: Tuple[str, ...] = ()) -> Tuple[int, str, str]:
    """
    Run C{twistd -n dualproxy ARGS} to completion.
    """
    result = subprocess.run(
        [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "dualproxy", *args],
        cwd=REPO,
        env=environment(*paths),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    return result.returncode, result.stdout, result.stderr


class CommandLineTests(SynchronousTestCase):
    def configFile(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_help(self):
        """
        C{--help} documents every option.
        """
        code, out, err = twistd("--help")
        self.assertEqual(code, 0, err)
        options = [name for name in tap.Options().longOpt if name.endswith("=")]
        self.assertIn("backend=", options)
        for option in options:
            self.assertIn("--" + option, out)

    def test_badConfigs(self):
        """
        A bad config file or option stops start-up with one line naming the
        key and no traceback.
        """
        directory = os.path.abspath(os.path.dirname(self.mktemp()))
        missing = os.path.join(directory, "missing.toml")
        table = [
            (["--config", self.configFile("colour = 1\n")], "dualproxy: colour: unknown key ("),
            (
                ["--config", self.configFile("[forward]\nallow_clients = ['127.0.0.1', 'lan']\n")],
                "dualproxy: forward.allow_clients[1]: 'lan' is not an IP network",
            ),
            (["--config", missing], f"dualproxy: {missing}: cannot read the file (No such file or directory)"),
            (["--config", directory], f"dualproxy: {directory}: cannot read the file ("),
            (
                ["--config", self.configFile("listen = ['xyz']\n")],
                "dualproxy: listen[0]: bad endpoint 'xyz': Unknown endpoint type: 'xyz'",
            ),
            (["--config", self.configFile("listen = [\n")], "dualproxy: "),
            (["--listen", "tcp:port"], "dualproxy: listen[0]: bad endpoint 'tcp:port': "),
            (["--allow-client", "lan"], "dualproxy: forward.allow_clients[0]: 'lan' is not an IP network"),
        ]
        for args, start in table:
            code, out, err = twistd(*args)
            self.assertNotEqual(code, 0, (args, err))
            self.assertNotIn("Traceback", out + err)
            lines = err.splitlines()
            self.assertEqual(len(lines), 1, (args, err))
            self.assertTrue(lines[0].startswith(start), (args, err))


class ThirdPartyModeTests(SynchronousTestCase):
    def setUp(self):
        self.dropins = os.path.abspath(self.mktemp())
        plugins = os.path.join(self.dropins, "twisted", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "thirdparty_mode.py"), "w") as f:
            f.write(textwrap.dedent(THIRD_PARTY_MODE))

    def test_unknownModeListsThirdParty(self):
        """
        The known modes listed for a wrong C{--mode} include those from
        every dropin on the path.
        """
        code, out, err = twistd("--mode", "nope", paths=(self.dropins,))
        self.assertEqual(code, 1, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(err.splitlines(), ["dualproxy: unknown mode 'nope' (known: echo-test, forward, reverse, socks)"])

    def test_thirdPartySettingsChecked(self):
        """
        A third-party mode's table is checked by the mode, and its mistakes
        stop start-up with the same one line as a built-in table's.
        """
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write('mode = "echo-test"\n\n["echo-test"]\ngreeting = 1\n')
        code, out, err = twistd("--config", config, paths=(self.dropins,))
        self.assertEqual(code, 1, err)
        self.assertEqual(err.splitlines(), ["dualproxy: echo-test.greeting: expected a string, got an integer"])

    def test_runsThirdPartyMode(self):
        """
        C{--mode echo-test} runs the third-party mode's service with the
        config, including its own table.
        """
        port = freePort()
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write('mode = "echo-test"\n\n["echo-test"]\ngreeting = "third-party mode"\n')
        log = open(os.path.abspath(self.mktemp()), "w+")
        self.addCleanup(log.close)
        child = subprocess.Popen(
            [
                sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "--logfile=-",
                "dualproxy", "--config", config, "--listen", f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=self.dropins,
            env=environment(self.dropins),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop():
            child.kill()
            child.wait(DEADLINE)

        self.addCleanup(stop)
        self.assertEqual(self.greeting(child, port, log), b"third-party mode\n")

    def greeting(self, child: subprocess.Popen, port: int, log) -> bytes:
        """
        Connect to the child until it answers, then read everything it says.
        """
        deadline = time.monotonic() + DEADLINE
        while True:
            if child.poll() is not None:
                log.seek(0)
                self.fail(f"twistd exited with {child.returncode}: {log.read()}")
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            except OSError:
                if time.monotonic() > deadline:
                    log.seek(0)
                    self.fail(f"twistd never listened on {port}: {log.read()}")
                time.sleep(0.05)
                continue
            with connection:
                data = b""
                while True:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return data
                    data += chunk
