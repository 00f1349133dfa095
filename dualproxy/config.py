"""
Configuration: a TOML file (or the command line merged into its dict) turned
into frozen settings, rejecting every mistake before anything starts.

Each error names the dotted key it is about, so that a typo stops start-up
with one line the user can act on instead of a proxy that silently ignores it.
"""

from __future__ import annotations

import base64
import math
import re
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from types import MappingProxyType
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

Network = Union[IPv4Network, IPv6Network]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HOSTNAME = re.compile(r"\.?([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\Z")
_REALM = re.compile(r"[ !#-\[\]-~]+\Z")


class ConfigError(Exception):
    """
    A setting that cannot be used; C{str()} is one line, C{"<key>: <problem>"}.
    """

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


@dataclass(frozen=True)
class Timeouts:
    """
    How long, in seconds, each wait may last before the proxy gives up.
    """

    connect: float = 10.0
    client_idle: float = 60.0
    upstream_idle: float = 60.0
    upstream_read: float = 60.0


@dataclass(frozen=True)
class UpstreamSettings:
    """
    Limits on the connections the proxy opens to origins.
    """

    max_idle_per_host: int = 8


@dataclass(frozen=True)
class ParentProxy:
    """
    A proxy every request is relayed through instead of going direct.
    """

    host: str
    port: int
    authorization: Optional[bytes] = None


@dataclass(frozen=True)
class ForwardSettings:
    """
    Who may use the forward proxy, where they may go and what is revealed.
    """

    allow_clients: Tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    allow_destinations: Tuple[Network, ...] = ()
    deny_destinations: Tuple[str, ...] = ()
    connect_ports: Tuple[int, ...] = (443,)
    parent: Optional[ParentProxy] = None
    via: str = "dualproxy"
    x_forwarded_for: Tuple[Network, ...] = ()
    anonymous: bool = False
    anonymous_headers: Tuple[str, ...] = (
        "From",
        "Referer",
        "User-Agent",
        "Cookie",
        "X-Forwarded-For",
        "Forwarded",
        "X-Real-IP",
        "Client-IP",
    )
    auth_file: Optional[str] = None
    auth_realm: str = "dualproxy"


@dataclass(frozen=True)
class Config:
    """
    Everything dualproxy was told to do, validated.

    @ivar extra: the raw tables named after a mode that is not built in,
        for that mode to interpret.
    """

    mode: str = "forward"
    listen: Tuple[str, ...] = ()
    access_log: str = "combined"
    filters: Tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))


ACCESS_LOG_FORMATS = ("combined", "json", "off")


def loadFile(path: str) -> Dict[str, Any]:
    """
    Read a TOML file into a dict for L{fromDict}.

    @raise ConfigError: keyed by C{path} if the file cannot be read or is
        not valid TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(path, f"cannot read the file ({e.strerror or e})")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(path, f"not valid TOML: {_oneLine(str(e))}")


def fromDict(data: Mapping[str, Any], modes: Optional[Collection[str]] = None) -> Config:
    """
    Validate a config dict (as L{loadFile} returns it) into a L{Config}.

    @param modes: the names of the known modes; a top-level table named
        after one that is not built in is kept raw in L{Config.extra}.
    @raise ConfigError: naming the first key that is wrong.
    """
    builtin = ("mode", "listen", "access_log", "filters", "timeouts", "upstream", "forward")
    extraNames = sorted(set(modes or ()) - set(builtin))
    _checkKeys(data, "", list(builtin) + extraNames)
    extra = {}
    for name in extraNames:
        if name in data:
            extra[name] = MappingProxyType(dict(_table(name, data[name])))
    kwargs: Dict[str, Any] = {}
    if "mode" in data:
        kwargs["mode"] = _nonEmptyString("mode", data["mode"])
    if "listen" in data:
        kwargs["listen"] = _arrayOf(_endpoint)("listen", data["listen"])
    if "access_log" in data:
        value = _string("access_log", data["access_log"])
        if value not in ACCESS_LOG_FORMATS:
            raise ConfigError("access_log", f"{value!r} is not one of {', '.join(ACCESS_LOG_FORMATS)}")
        kwargs["access_log"] = value
    if "filters" in data:
        kwargs["filters"] = _arrayOf(_nonEmptyString)("filters", data["filters"])
    if "timeouts" in data:
        kwargs["timeouts"] = _timeouts(_table("timeouts", data["timeouts"]))
    if "upstream" in data:
        kwargs["upstream"] = _upstream(_table("upstream", data["upstream"]))
    if "forward" in data:
        kwargs["forward"] = _forward(_table("forward", data["forward"]))
    return Config(extra=MappingProxyType(extra), **kwargs)


def _timeouts(table: Mapping[str, Any]) -> Timeouts:
    names = ("connect", "client_idle", "upstream_idle", "upstream_read")
    _checkKeys(table, "timeouts.", names)
    return Timeouts(**{name: _seconds(f"timeouts.{name}", table[name]) for name in names if name in table})


def _upstream(table: Mapping[str, Any]) -> UpstreamSettings:
    _checkKeys(table, "upstream.", ("max_idle_per_host",))
    kwargs = {}
    if "max_idle_per_host" in table:
        value = _integer("upstream.max_idle_per_host", table["max_idle_per_host"])
        if value < 0:
            raise ConfigError("upstream.max_idle_per_host", f"must be 0 or more, got {value}")
        kwargs["max_idle_per_host"] = value
    return UpstreamSettings(**kwargs)


def _forward(table: Mapping[str, Any]) -> ForwardSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "allow_clients": _arrayOf(_network),
        "allow_destinations": _arrayOf(_network),
        "deny_destinations": _arrayOf(_destination),
        "connect_ports": _arrayOf(_port),
        "parent": _parent,
        "via": _pseudonym,
        "x_forwarded_for": _arrayOf(_network),
        "anonymous": _boolean,
        "anonymous_headers": _arrayOf(_fieldName),
        "auth_file": _passwordFile,
        "auth_realm": _realm,
    }
    _checkKeys(table, "forward.", parsers)
    return ForwardSettings(
        **{name: parse(f"forward.{name}", table[name]) for name, parse in parsers.items() if name in table}
    )


# Value checks: each takes the dotted key (for the error) and the raw value.


def _checkKeys(table: Mapping[str, Any], prefix: str, known: Collection[str]) -> None:
    for name in table:
        if name not in known:
            raise ConfigError(f"{prefix}{name}", f"unknown key (known: {', '.join(sorted(known))})")


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a table, got {_kind(value)}")
    return value


def _arrayOf(item: Callable[[str, Any], Any]) -> Callable[[str, Any], Tuple[Any, ...]]:
    def parse(key: str, value: Any) -> Tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected an array, got {_kind(value)}")
        return tuple(item(f"{key}[{index}]", element) for index, element in enumerate(value))

    return parse


def _kind(value: Any) -> str:
    # bool first: True is an int too, but "port = true" is not a port.
    for type_, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        ((list, tuple), "an array"),
        (Mapping, "a table"),
    ):
        if isinstance(value, type_):
            return name
    return f"a {type(value).__name__}"


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_kind(value)}")
    return value


def _nonEmptyString(key: str, value: Any) -> str:
    if not _string(key, value):
        raise ConfigError(key, "must not be empty")
    return value


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_kind(value)}")
    return value


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {_kind(value)}")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number of seconds, got {_kind(value)}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, f"must be a positive number of seconds, got {value}")
    return float(value)


def _port(key: str, value: Any) -> int:
    port = _integer(key, value)
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"port {port} is not in 1-65535")
    return port


def _network(key: str, value: Any) -> Network:
    text = _string(key, value)
    try:
        return ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IP network")


def _destination(key: str, value: Any) -> str:
    text = _string(key, value)
    try:
        ip_network(text, strict=False)
    except ValueError:
        if not _HOSTNAME.match(text) or len(text) > 254:
            raise ConfigError(key, f"{text!r} is not a host name, .domain suffix or IP network")
    return text


def _fieldName(key: str, value: Any) -> str:
    text = _string(key, value)
    if not _TOKEN.match(text):
        raise ConfigError(key, f"{text!r} is not an HTTP field name")
    return text


def _pseudonym(key: str, value: Any) -> str:
    text = _string(key, value)
    if not _TOKEN.match(text):
        raise ConfigError(key, f"{text!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~ only)")
    return text


def _realm(key: str, value: Any) -> str:
    text = _string(key, value)
    if not _REALM.match(text):
        raise ConfigError(key, f"{text!r} must be printable ASCII without quotes or backslashes")
    return text


def _passwordFile(key: str, value: Any) -> str:
    from .forward.auth import PasswordFile

    path = _nonEmptyString(key, value)
    try:
        PasswordFile.load(path)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r} ({e.strerror or e})")
    except ValueError as e:
        raise ConfigError(key, f"{path}: {e}")
    return path


def _parent(key: str, value: Any) -> ParentProxy:
    text = _string(key, value)
    usage = "expected http://[user:password@]host:port"
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        raise ConfigError(key, f"{text!r}: {_oneLine(str(e))}; {usage}")
    if url.scheme != "http" or not url.hostname or port is None:
        raise ConfigError(key, f"{text!r}: {usage}")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ConfigError(key, f"{text!r}: a parent proxy URL has no path, query or fragment; {usage}")
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"{text!r}: port {port} is not in 1-65535")
    authorization = None
    if url.username is not None:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}"
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    return ParentProxy(url.hostname, port, authorization)


def _endpoint(key: str, value: Any) -> str:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    description = _nonEmptyString(key, value)
    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise ConfigError(key, f"bad endpoint {description!r}: {_oneLine(str(e)) or type(e).__name__}")
    return description


def _oneLine(text: str) -> str:
    return " ".join(text.split())
