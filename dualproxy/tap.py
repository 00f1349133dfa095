"""
The C{twistd dualproxy} command line: options merged over the config file,
validated in full before twistd starts anything.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Dict, List, Tuple

from twisted.application.service import IService
from twisted.python import usage

from . import prestart
from .config import Config, ConfigError, fromDict, loadFile
from .interfaces import IProxyMode, IRequestFilter
from .plugins import choose, findModes, loadFilters
from .twistedcompat import fastDispatch


class Options(usage.Options):
    """
    C{twistd dualproxy} options; each overrides the same setting in the
    C{--config} file, and a repeatable option replaces the file's whole list.
    """

    synopsis = "[--mode NAME] [--config FILE] [options]"
    longdesc = (
        "Run a forward or reverse HTTP proxy. Settings come from the TOML file named by --config; "
        "the options below override it. Any mistake stops start-up with one line naming the setting. "
        "See docs/configuration.md."
    )

    optParameters = [
        ["mode", "m", None, "The proxy mode, a plugin name such as 'forward' [default: forward, or the file's mode]."],
        ["config", "c", None, "A TOML config file; the options given here override its settings."],
        [
            "parent",
            None,
            None,
            "Relay requests through this parent proxy, http[s]://[user:password@]host:port, instead of "
            "forward.parent or forward.parents [default: connect to origins directly].",
        ],
        [
            "workers",
            "w",
            "1",
            "Worker processes sharing the listeners, a number or auto (one per core); a supervisor process starts "
            "them, restarts any that dies and serves the admin listener for all [default: 1, no supervisor].",
        ],
        [
            "access-log",
            None,
            None,
            "Access log format: combined (Combined Log Format), json (one object per line) or off "
            "[default: combined].",
        ],
        [
            "access-log-file",
            None,
            None,
            "Append the access log to this file, buffered, instead of the twistd log [default: the twistd log].",
        ],
    ]

    def __init__(self):
        super().__init__()
        for name in ("listen", "allow-client", "allow-destination", "connect-port", "backend"):
            self[name] = []

    def _append(name: str, doc: str):  # type: ignore[misc]
        def append(self, value: str) -> None:
            self[name].append(value)

        append.__doc__ = doc
        return append

    opt_listen = _append(
        "listen",
        "Listen on this Twisted server endpoint, e.g. tcp:8080:interface=0.0.0.0 or ssl:8443:privateKey=key.pem "
        "(repeat for several) [default: the mode's; tcp:3128:interface=127.0.0.1 in forward mode, "
        "tcp:8080:interface=127.0.0.1 in reverse mode, tcp:1080:interface=127.0.0.1 in socks mode; "
        "TLS listeners are set in the file's [tls] table].",
    )
    opt_allow_client = _append(
        "allow-client",
        "Forward mode: serve clients from this network, e.g. 192.168.1.0/24 (repeat for several) "
        "[default: loopback only, 127.0.0.0/8 and ::1].",
    )
    opt_allow_destination = _append(
        "allow-destination",
        "Forward mode: allow this network although it is loopback, private or link-local, e.g. 10.0.0.0/8 "
        "(repeat for several) [default: none; such destinations are refused].",
    )
    opt_connect_port = _append(
        "connect-port",
        "Forward mode: allow CONNECT tunnels to this port (repeat for several) [default: 443].",
    )
    opt_backend = _append(
        "backend",
        "Reverse mode: balance across this backend, http://host:port (repeat for several); makes a pool named "
        "default, routed from / unless the file has routes [default: the file's pools].",
    )
    del _append

    def parseOptions(self, options=None) -> None:
        # Kept for worker processes, which are started with the same ones.
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        from .workers import workerCount

        try:
            self.workerCount = workerCount(self["workers"])
        except ValueError as e:
            self.fail(f"--workers: {e}")
        try:
            self.mode, self.config, self.filters = self.load()
        except ConfigError as e:
            self.fail(str(e))

    def load(self) -> Tuple[IProxyMode, Config, List[IRequestFilter]]:
        """
        Merge the options over the file and validate the result.

        @return: the mode plugin, the L{Config} and the filters.
        @raise ConfigError: for the first mistake found.
        @raise SystemExit: for an unknown mode, after saying which are known.
        """
        data = loadFile(self["config"]) if self["config"] else {}
        data = self.merge(data)
        modes = findModes()
        base = os.path.dirname(os.path.abspath(self["config"])) if self["config"] else "."
        config = fromDict(data, modes=modes, base=base)
        prestart.check(config, modes)
        try:
            mode = choose(modes, config.mode, "mode", "mode")
        except ConfigError as e:
            self.fail(e.problem)
        if not config.listen:
            config = dataclasses.replace(config, listen=tuple(mode.defaultListen))
        return mode, config, loadFilters(config.filters)

    def merge(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """
        The file's settings with the command line's in their place.
        """
        merged = dict(data)
        for option, key in (("mode", "mode"), ("access-log", "access_log")):
            if self[option] is not None:
                merged[key] = self[option]
        if self["access-log-file"] is not None:
            # Named on the command line: relative to where twistd runs.
            merged["access_log_file"] = os.path.abspath(self["access-log-file"])
        if self["listen"]:
            merged["listen"] = list(self["listen"])
        if self["backend"]:
            section = merged.get("reverse", {})
            if isinstance(section, dict):
                pools = dict(section.get("pools", {}), default={"backends": list(self["backend"])})
                routes = section.get("routes") or [{"prefix": "/", "pool": "default"}]
                merged["reverse"] = dict(section, pools=pools, routes=routes)
        forward = self.forwardOverrides()
        if forward:
            section = merged.get("forward", {})
            # A "forward" that is not a table is left for fromDict to report.
            if isinstance(section, dict):
                merged["forward"] = dict(section, **forward)
                if "parent" in forward:
                    # --parent replaces the file's default pool, whichever key gave it.
                    merged["forward"].pop("parents", None)
        return merged

    def forwardOverrides(self) -> Dict[str, Any]:
        """
        The [forward] settings given on the command line.
        """
        overrides: Dict[str, Any] = {}
        if self["allow-client"]:
            overrides["allow_clients"] = list(self["allow-client"])
        if self["allow-destination"]:
            overrides["allow_destinations"] = list(self["allow-destination"])
        if self["connect-port"]:
            overrides["connect_ports"] = [_port(value) for value in self["connect-port"]]
        if self["parent"] is not None:
            overrides["parent"] = self["parent"]
        return overrides

    def fail(self, message: str) -> None:
        """
        Stop with one line on stderr: twistd would print the whole usage text
        (for L{usage.UsageError}) or a traceback (for anything else).
        """
        sys.stderr.write(f"dualproxy: {message}\n")
        raise SystemExit(1)


def _port(value: str) -> Any:
    """
    A --connect-port value as an integer, for L{fromDict} to range-check.
    """
    if not (value.isascii() and value.strip().isdigit()):
        raise ConfigError("--connect-port", f"{value!r} is not a port number")
    return int(value)


def _withoutWorkers(arguments: List[str]) -> List[str]:
    """
    The options again, minus C{--workers}: what each worker is started with.
    """
    kept = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in ("--workers", "-w"):
            skip = True
        elif not argument.startswith(("--workers=", "-w")):
            kept.append(argument)
    return kept


def makeService(options: Options) -> IService:
    """
    The running proxy for the validated options.
    """
    try:
        # Built with workers too: some settings (a balancer's options) are
        # checked by the mode, and a mistake must stop the start, not loop
        # the workers.
        service = options.mode.makeService(options.config, options.filters)
    except ConfigError as e:
        options.fail(str(e))
    from twisted.internet import reactor

    if options.workerCount > 1:
        from .workers import Supervisor

        return Supervisor(_withoutWorkers(options.arguments), options.config, options.workerCount, reactor)
    fastDispatch(reactor)
    if hasattr(service, "configure"):
        # SIGHUP and the admin listener reload from the same sources.
        service.configure = options.load
    return service
