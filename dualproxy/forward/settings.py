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
from ..settings.model import Config, ForwardSettings, ParentProxy
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
    }
    settings = ForwardSettings(**values.parsed(table, "forward.", parsers))
    if settings.rate_limit is not None and settings.rate_limit.key == "user" and settings.auth_file is None:
        raise ConfigError("forward.rate_limit.key", '"user" needs forward.auth_file (proxy authentication)')
    return settings


def checkForward(settings: ForwardSettings, config: Config) -> None:
    """
    The pre-start checks: the password file loads, the CA bundle and the
    pages' directories exist.
    """
    if settings.auth_file is not None:
        prestart.passwordFile("forward.auth_file", settings.auth_file)
    if settings.tls_ca is not None:
        prestart.existingFile("forward.tls_ca", settings.tls_ca)
    prestart.routeDirectories("forward.routes", settings.routes)


def _parent(key: str, value: Any) -> ParentProxy:
    usage = "expected http://[user:password@]host:port"
    text, url = values.url(key, value, usage)
    port = url.port
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
