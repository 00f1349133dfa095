"""
Configuration: a TOML file (or the command line merged into its dict) turned
into frozen settings, rejecting every mistake before anything starts.

This module parses the tables every mode shares and hands each mode's table
to that mode's C{parseSettings}; nothing here reads a file the settings name
(L{dualproxy.prestart} does, before start-up).  Each error names the dotted
key it is about, so that a typo stops start-up with one line the user can act
on instead of a proxy that silently ignores it.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional

from .plugins import findModes
from .settings import tables, values
from .settings.model import (
    AcmeSettings,
    AdminSettings,
    CacheSettings,
    Config,
    LimitSettings,
    RedisSettings,
    TLSSettings,
    Timeouts,
    UpstreamSettings,
)
from .settings.values import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


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
        raise ConfigError(path, f"not valid TOML: {values.oneLine(str(e))}")


def fromDict(data: Mapping[str, Any], modes: Optional[Mapping[str, Any]] = None, base: str = ".") -> Config:
    """
    Validate a config dict (as L{loadFile} returns it) into a L{Config}.

    @param modes: the mode plugins by name (default: the installed ones);
        each parses the top-level table named after it, present or not.
    @param base: the directory relative paths in the file are relative to:
        the file's own, so an example works from wherever it is started.
    @raise ConfigError: naming the first key that is wrong.
    """
    if modes is None:
        modes = findModes()
    values.checkKeys(data, "", list(SHARED) + sorted(set(modes) - set(SHARED)))
    kwargs = {name: parse(name, data[name], base) for name, parse in SHARED.items() if name in data}
    settings = {}
    for name, mode in modes.items():
        if name in SHARED:
            continue
        table = values.table(name, data.get(name, {}))
        parse = getattr(mode, "parseSettings", None)
        settings[name] = parse(table, base) if parse is not None else MappingProxyType(dict(table))
    return Config(modes=MappingProxyType(settings), **kwargs)


def _accessLog(key: str, value: Any) -> str:
    return values.oneOf(key, value, ACCESS_LOG_FORMATS)


def _timeouts(table: Mapping[str, Any]) -> Timeouts:
    return Timeouts(**values.parsed(table, "timeouts.", {item.name: values.seconds for item in fields(Timeouts)}))


def _upstream(table: Mapping[str, Any]) -> UpstreamSettings:
    return UpstreamSettings(**values.parsed(table, "upstream.", {"max_idle_per_host": values.count}))


def _limits(table: Mapping[str, Any]) -> LimitSettings:
    mayBeZero = ("max_body", "max_connections", "max_connections_per_client")
    return LimitSettings(**values.parsed(table, "limits.", {
        item.name: values.count if item.name in mayBeZero else values.positive for item in fields(LimitSettings)
    }))


def _admin(table: Mapping[str, Any], base: str) -> AdminSettings:
    return AdminSettings(**values.parsed(table, "admin.", {
        "listen": values.endpoint,
        "auth_file": lambda key, value: values.path(key, value, base),
        "realm": values.realm,
    }))


def _redis(table: Mapping[str, Any]) -> RedisSettings:
    return RedisSettings(**values.parsed(table, "redis.", {
        "endpoint": values.clientEndpoint,
        "timeout": values.seconds,
        "database": values.count,
        "username": values.nonEmptyString,
        "password": values.nonEmptyString,
        "prefix": values.nonEmptyString,
    }))


def _cache(table: Mapping[str, Any], base: str) -> CacheSettings:
    """
    C{store}, C{name}, C{lock_timeout} and C{purge_from} are dualproxy's;
    any other key is an option of the store.
    """
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "store": values.nonEmptyString,
        "name": values.nonEmptyString,
        "lock_timeout": values.seconds,
        "purge_from": values.arrayOf(values.network),
    }
    options = {name: value for name, value in table.items() if name not in parsers}
    if isinstance(options.get("path"), str) and options["path"]:
        options["path"] = values.path("cache.path", options["path"], base)
    settings = values.parsed({name: value for name, value in table.items() if name in parsers}, "cache.", parsers)
    return CacheSettings(store_options=MappingProxyType(options), **settings)


def _acme(table: Mapping[str, Any], base: str) -> AcmeSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "directory": values.acmeDirectory,
        "storage": lambda key, value: values.path(key, value, base),
        "contact": values.arrayOf(values.acmeContact),
        "domains": values.arrayOf(values.acmeDomain),
        "ca": lambda key, value: values.path(key, value, base),
        "challenge": lambda key, value: values.oneOf(key, value, ("http-01", "tls-alpn-01")),
        "on_demand": values.boolean,
        "on_demand_limit": values.positive,
    }
    if "directory" not in table:
        raise ConfigError("tls.acme.directory", "missing (the CA's ACME directory URL, "
                                                "e.g. https://acme-v02.api.letsencrypt.org/directory)")
    settings = values.parsed(table, "tls.acme.", parsers)
    settings.setdefault("storage", values.path("tls.acme.storage", "acme", base))
    if not settings.get("on_demand"):
        for index, name in enumerate(settings.get("domains", ())):
            if name.startswith("*."):
                raise ConfigError(f"tls.acme.domains[{index}]", f"{name!r}: a wildcard certificate needs the DNS-01 "
                                  "challenge, which dualproxy does not answer; name each host, or set "
                                  "on_demand to order one per name at its first handshake")
    return AcmeSettings(**settings)


def _tls(table: Mapping[str, Any], base: str) -> TLSSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "listen": values.arrayOf(values.endpoint),
        "certificates": values.arrayOf(lambda key, value: tables.certificate(key, value, base)),
        "min_version": values.string,
        "ciphers": values.nonEmptyString,
        "http2": values.boolean,
        "client_ca": lambda key, value: values.path(key, value, base),
        "client_certificate_optional": values.boolean,
        "client_subject_header": values.fieldName,
        "hsts": values.headerValue,
        "redirect_http": values.boolean,
        "acme": lambda key, value: _acme(values.table(key, value), base),
    }
    settings = TLSSettings(**values.parsed(table, "tls.", parsers))
    if settings.min_version not in ("TLSv1.2", "TLSv1.3"):
        raise ConfigError("tls.min_version", f"{settings.min_version!r} is not TLSv1.2 or TLSv1.3")
    if settings.listen and not settings.certificates and settings.acme is None:
        raise ConfigError("tls.certificates", "TLS listeners need at least one certificate (or a [tls.acme] table)")
    if settings.acme is not None and not settings.listen:
        raise ConfigError("tls.acme", "certificates over ACME are for TLS listeners: set tls.listen")
    return settings


#: The top-level keys and tables every mode shares, each with its parser
#: C{(key, value, base)}; the other top-level tables are the modes'.
SHARED: Dict[str, Callable[[str, Any, str], Any]] = {
    "mode": lambda key, value, base: values.nonEmptyString(key, value),
    "listen": lambda key, value, base: values.arrayOf(values.endpoint)(key, value),
    "access_log": lambda key, value, base: _accessLog(key, value),
    "access_log_file": values.path,
    "filters": lambda key, value, base: values.arrayOf(values.nonEmptyString)(key, value),
    "timeouts": lambda key, value, base: _timeouts(values.table(key, value)),
    "upstream": lambda key, value, base: _upstream(values.table(key, value)),
    "limits": lambda key, value, base: _limits(values.table(key, value)),
    "tls": lambda key, value, base: _tls(values.table(key, value), base),
    "cache": lambda key, value, base: _cache(values.table(key, value), base),
    "admin": lambda key, value, base: _admin(values.table(key, value), base),
    "redis": lambda key, value, base: _redis(values.table(key, value)),
    "proxy_protocol": lambda key, value, base: values.arrayOf(values.network)(key, value),
}
