"""
The C{[forward]} table: who may use the forward proxy, where they may go and
what is revealed; parsed without I/O, its files checked before start-up.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Dict, Mapping
from urllib.parse import unquote

from .. import prestart
from ..settings import tables, values
from ..settings.model import Config, ForwardSettings, InterceptSettings, ParentProxy, ParentRule
from ..settings.values import ConfigError


def parseForward(table: Mapping[str, Any], base: str) -> ForwardSettings:
    """
    @raise ConfigError: naming the first C{forward.} key that is wrong.
    """
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "allow_clients": values.arrayOf(values.network),
        "allow_destinations": values.arrayOf(values.network),
        "deny_destinations": values.arrayOf(values.destination),
        "connect_ports": values.arrayOf(values.port),
        "parent": _parent,
        "parents": values.arrayOf(_parent),
        "parent_rules": values.arrayOf(_parentRule),
        "parent_selection": lambda key, value: values.oneOf(key, value, PARENT_SELECTIONS),
        "parent_retry": values.seconds,
        "parent_ca": lambda key, value: values.path(key, value, base),
        "via": values.pseudonym,
        "x_forwarded_for": values.arrayOf(values.network),
        "anonymous": values.boolean,
        "anonymous_headers": values.arrayOf(values.fieldName),
        "auth_file": lambda key, value: values.path(key, value, base),
        "auth_realm": values.realm,
        # The proxy's own pages (a PAC file, a redirect): static or redirect
        # routes for requests in origin form; there are no pools here.
        "routes": values.arrayOf(lambda key, value: tables.route(key, value, (), base, "forward")),
        "tls_ca": lambda key, value: values.path(key, value, base),
        "cache": values.boolean,
        "rate_limit": lambda key, value: tables.rateLimit(key, value, "forward"),
        "intercept": lambda key, value: _intercept(key, value, base),
    }
    settings = ForwardSettings(**values.parsed(table, "forward.", parsers))
    if settings.parent is not None and "parents" in table:
        raise ConfigError("forward.parents", "give either forward.parent (one URL) or forward.parents, not both")
    if settings.rate_limit is not None and settings.rate_limit.key == "user" and settings.auth_file is None:
        raise ConfigError("forward.rate_limit.key", '"user" needs forward.auth_file (proxy authentication)')
    return settings


def checkForward(settings: ForwardSettings, config: Config) -> None:
    """
    The pre-start checks: the password file loads, the CA bundles and the
    pages' directories exist, the interception CA loads and is safe.
    """
    if settings.auth_file is not None:
        prestart.passwordFile("forward.auth_file", settings.auth_file)
    for key in ("tls_ca", "parent_ca"):
        path = getattr(settings, key)
        if path is not None:
            prestart.existingFile("forward." + key, path)
    prestart.routeDirectories("forward.routes", settings.routes)
    if settings.intercept is not None:
        from ..interception.authority import loadAuthority
        from ..tls import TLSConfigError

        try:
            loadAuthority(settings.intercept.ca_cert, settings.intercept.ca_key)
        except TLSConfigError as e:
            raise ConfigError("forward.intercept", e.problem) from None


#: How a pool of parents is used: the first healthy one in order (Squid's
#: default), or each healthy one in turn.
PARENT_SELECTIONS = ("first", "round-robin")


def _parent(key: str, value: Any) -> ParentProxy:
    usage = "expected http[s]://[user:password@]host:port"
    text, url = values.url(key, value, usage)
    port = url.port
    if url.scheme not in ("http", "https") or not url.hostname or port is None:
        raise ConfigError(key, f"{text!r}: {usage}")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ConfigError(key, f"{text!r}: a parent proxy URL has no path, query or fragment; {usage}")
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"{text!r}: port {port} is not in 1-65535")
    authorization = None
    if url.username is not None:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}"
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    return ParentProxy(url.hostname, port, authorization, url.scheme == "https")


def _parentRule(key: str, value: Any) -> ParentRule:
    """
    One C{[[forward.parent_rules]]} entry: its destinations, and either
    parents or C{direct = true}.
    """
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "destinations": values.arrayOf(values.destination),
        "parents": values.arrayOf(_parent),
        "direct": values.boolean,
    }
    fields = values.parsed(values.table(key, value), key + ".", parsers)
    if not fields.get("destinations"):
        raise ConfigError(key + ".destinations", "a rule needs at least one destination")
    if fields.get("direct", False) == bool(fields.get("parents")):
        raise ConfigError(key, "a rule has either parents = [...] (at least one) or direct = true")
    return ParentRule(**fields)


def _intercept(key: str, value: Any, base: str) -> InterceptSettings:
    table = values.table(key, value)
    for required in ("ca_cert", "ca_key"):
        if required not in table:
            raise ConfigError(f"{key}.{required}", "required: the CA made by dualproxy-ca init")
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "ca_cert": lambda key, value: values.path(key, value, base),
        "ca_key": lambda key, value: values.path(key, value, base),
        "bypass": values.arrayOf(values.destination),
        "clients": values.arrayOf(values.network),
        "ports": values.arrayOf(values.port),
        "http2": values.boolean,
        "certificate_cache": values.positive,
    }
    return InterceptSettings(**values.parsed(table, key + ".", parsers))
