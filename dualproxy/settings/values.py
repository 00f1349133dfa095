"""
Checks for one setting's value: each takes the dotted key (named in the
error) and the raw value from the file, and returns the value to use or
raises L{ConfigError}.  No I/O: a mode's settings module builds on these.
"""

from __future__ import annotations

import math
import os
import re
from ipaddress import ip_network
from typing import Any, Callable, Collection, Dict, Mapping, Sequence, Tuple
from urllib.parse import SplitResult, urlsplit

from .model import Network


REALM = re.compile(r"[ !#-\[\]-~]+\Z")


HOSTNAME = re.compile(r"\.?([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\Z")


TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


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


def routeHost(key: str, value: Any) -> str:
    text = nonEmptyString(key, value).lower()
    name = text[2:] if text.startswith("*.") else text
    if text != "*" and not HOSTNAME.match(name.split(":")[0]):
        raise ConfigError(key, f"{text!r} is not a host name, *.domain or *")
    return text


def prefix(key: str, value: Any) -> str:
    text = nonEmptyString(key, value)
    if not text.startswith("/"):
        raise ConfigError(key, f"{text!r} must start with /")
    return text


def redirectStatus(key: str, value: Any) -> int:
    status = integer(key, value)
    if status not in (301, 302, 303, 307, 308):
        raise ConfigError(key, f"{status} is not a redirect status (301, 302, 303, 307, 308)")
    return status


def status(key: str, value: Any) -> int:
    status = integer(key, value)
    if not 100 <= status <= 599:
        raise ConfigError(key, f"{status} is not an HTTP status")
    return status


def positive(key: str, value: Any) -> int:
    return _atLeast(key, value, 1)


def count(key: str, value: Any) -> int:
    return _atLeast(key, value, 0)


def _atLeast(key: str, value: Any, least: int) -> int:
    number = integer(key, value)
    if number < least:
        raise ConfigError(key, f"must be {least} or more, got {number}")
    return number


def headerTable(key: str, value: Any) -> Tuple[Tuple[str, str], ...]:
    return tuple(
        (fieldName(f"{key}.{name}", name), headerValue(f"{key}.{name}", field))
        for name, field in table(key, value).items()
    )


def headerValue(key: str, value: Any) -> str:
    text = string(key, value)
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
        raise ConfigError(key, "control characters are not allowed in a header value")
    return text


def checkKeys(table: Mapping[str, Any], prefix: str, known: Collection[str]) -> None:
    for name in table:
        if name not in known:
            raise ConfigError(f"{prefix}{name}", f"unknown key (known: {', '.join(sorted(known))})")


def parsed(table: Mapping[str, Any], prefix: str, parsers: Mapping[str, Callable[[str, Any], Any]]) -> Dict[str, Any]:
    """
    The keys of C{table}, each checked by its parser: the keyword arguments
    of a settings class whose fields are the parsers' names.

    @raise ConfigError: for a key no parser knows.
    """
    checkKeys(table, prefix, parsers)
    return {name: parse(prefix + name, table[name]) for name, parse in parsers.items() if name in table}


def table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a table, got {kind(value)}")
    return value


def arrayOf(item: Callable[[str, Any], Any]) -> Callable[[str, Any], Tuple[Any, ...]]:
    def parse(key: str, value: Any) -> Tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected an array, got {kind(value)}")
        return tuple(item(f"{key}[{index}]", element) for index, element in enumerate(value))

    return parse


def kind(value: Any) -> str:
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


def string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {kind(value)}")
    return value


def nonEmptyString(key: str, value: Any) -> str:
    if not string(key, value):
        raise ConfigError(key, "must not be empty")
    return value


def oneOf(key: str, value: Any, choices: Sequence[str]) -> str:
    """
    A string that must be one of C{choices}.
    """
    text = string(key, value)
    if text not in choices:
        raise ConfigError(key, f"{text!r} is not one of {', '.join(choices)}")
    return text


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {kind(value)}")
    return value


def integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {kind(value)}")
    return value


def seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number of seconds, got {kind(value)}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, f"must be a positive number of seconds, got {value}")
    return float(value)


def port(key: str, value: Any) -> int:
    port = integer(key, value)
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"port {port} is not in 1-65535")
    return port


def network(key: str, value: Any) -> Network:
    text = string(key, value)
    try:
        return ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IP network")


def destination(key: str, value: Any) -> str:
    """
    A destination as L{dualproxy.policy.acl.Destinations} matches it: a host
    name, C{.domain}, C{*.domain} or IP network, lower-cased (names match
    case-insensitively).
    """
    text = string(key, value).strip().lower()
    try:
        ip_network(text, strict=False)
    except ValueError:
        name = text[2:] if text.startswith("*.") else text
        if not HOSTNAME.match(name) or (name.startswith(".") and text.startswith("*.")) or len(name) > 254:
            raise ConfigError(key, f"{text!r} is not a host name, .domain, *.domain or IP network")
    return text


def fieldName(key: str, value: Any) -> str:
    text = string(key, value)
    if not TOKEN.match(text):
        raise ConfigError(key, f"{text!r} is not an HTTP field name")
    return text


def url(key: str, value: Any, usage: str) -> Tuple[str, SplitResult]:
    """
    A URL as written and split, its port checked; C{usage} ends the error.
    """
    text = string(key, value)
    try:
        parsed = urlsplit(text)
        parsed.port  # raises ValueError for a port that is not a number in range
    except ValueError as e:
        raise ConfigError(key, f"{text!r}: {oneLine(str(e))}; {usage}")
    return text, parsed


def upgradeProtocol(key: str, value: Any) -> str:
    text = string(key, value).lower()
    if not TOKEN.match(text.replace("/", "")):
        raise ConfigError(key, f"{text!r} is not an Upgrade protocol name")
    if text.split("/", 1)[0] == "h2c":
        raise ConfigError(key, "h2c is never relayed (a backend's switch would carry requests past routing); "
                               "offer HTTP/2 over TLS instead")
    return text


def path(key: str, value: Any, base: str) -> str:
    """
    A file or directory named in the config, absolute: relative to C{base},
    the config file's directory.  Whether it exists is checked before
    start-up (L{dualproxy.prestart}), not here.
    """
    return os.path.abspath(os.path.join(base, os.path.expanduser(nonEmptyString(key, value))))


def endpoint(key: str, value: Any) -> str:
    """
    A Twisted server endpoint string, parsed (not listened on) to be sure
    it names a known type with valid arguments.
    """
    from twisted.internet.endpoints import serverFromString

    return _endpoint(key, value, serverFromString)


def clientEndpoint(key: str, value: Any) -> str:
    """
    A Twisted client endpoint string (C{tcp:HOST:PORT}, C{unix:PATH}),
    parsed, not connected.
    """
    from twisted.internet.endpoints import clientFromString

    return _endpoint(key, value, clientFromString)


def _endpoint(key: str, value: Any, parse: Callable[[Any, str], Any]) -> str:
    from twisted.internet import reactor

    description = nonEmptyString(key, value)
    try:
        parse(reactor, description)
    except Exception as e:
        raise ConfigError(key, f"bad endpoint {description!r}: {oneLine(str(e)) or type(e).__name__}")
    return description


def pseudonym(key: str, value: Any) -> str:
    text = string(key, value)
    if not TOKEN.match(text):
        raise ConfigError(key, f"{text!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~ only)")
    return text


def realm(key: str, value: Any) -> str:
    text = string(key, value)
    if not REALM.match(text):
        raise ConfigError(key, f"{text!r} must be printable ASCII without quotes or backslashes")
    return text


def oneLine(text: str) -> str:
    return " ".join(text.split())


def acmeDirectory(key: str, value: Any) -> str:
    """
    An ACME directory URL: HTTPS, as RFC 8555 section 6.1 requires.
    """
    text, parsed = url(key, value, "expected the CA's https:// directory URL")
    if parsed.scheme != "https" or not parsed.hostname:
        raise ConfigError(key, f"{text!r} is not an https:// URL (RFC 8555 requires HTTPS)")
    return text


def acmeContact(key: str, value: Any) -> str:
    text = nonEmptyString(key, value)
    if not text.startswith("mailto:") or "@" not in text or any(c in text for c in " ,"):
        raise ConfigError(key, f"{text!r} is not a contact URI such as mailto:ops@example.com")
    return text


def acmeDomain(key: str, value: Any) -> str:
    """
    A name to obtain a certificate for: a DNS name, not an address; or a
    C{*.domain} pattern of names to obtain certificates for on demand (a
    wildcard certificate itself would need DNS-01).
    """
    text = nonEmptyString(key, value).lower().rstrip(".")
    name = text[2:] if text.startswith("*.") else text
    if not HOSTNAME.match(name) or name.startswith(".") or name.replace(".", "").isdigit():
        raise ConfigError(key, f"{text!r} is not a DNS name or *.domain")
    return text
