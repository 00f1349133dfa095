"""
The step between parsing and starting: the files the settings name exist and
load, the certificates match their keys and OpenSSL accepts the ciphers.

Parsing (L{dualproxy.config}) touches nothing outside the config; this step
reads the disk and OpenSSL, at start-up and again for every reload, and
raises L{ConfigError} keyed like a parsing error.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from .settings.model import CertificateFiles, Config, RouteSettings, TLSSettings
from .settings.values import ConfigError
from .tls import CertificatePair, TLSConfigError, loadPair


def check(config: Config, modes: Mapping[str, Any]) -> None:
    """
    Check C{config}'s shared tables, then each mode's table with the mode's
    own C{checkSettings}.

    @param modes: the mode plugins by name, as L{dualproxy.config.fromDict}
        was given them.
    """
    _tls(config.tls)
    if config.access_log_file is not None and config.access_log != "off":
        appendable("access_log_file", config.access_log_file)
    if config.admin is not None and config.admin.auth_file is not None:
        passwordFile("admin.auth_file", config.admin.auth_file)
    for name, settings in config.modes.items():
        checkSettings = getattr(modes.get(name), "checkSettings", None)
        if checkSettings is not None:
            checkSettings(settings, config)


def _tls(settings: TLSSettings) -> None:
    from OpenSSL import SSL

    try:
        SSL.Context(SSL.TLS_SERVER_METHOD).set_cipher_list(settings.ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ConfigError("tls.ciphers", f"no usable cipher in {settings.ciphers!r}")
    if settings.client_ca is not None:
        existingFile("tls.client_ca", settings.client_ca)
    for index, files in enumerate(settings.certificates):
        certificatePair(f"tls.certificates[{index}]", files)
    if settings.acme is not None:
        if settings.acme.ca is not None:
            existingFile("tls.acme.ca", settings.acme.ca)
        makeableDirectory("tls.acme.storage", settings.acme.storage)


def appendable(key: str, path: str) -> None:
    """
    The file can be opened for appending (and is made if missing), as the
    access log will be.
    """
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        raise ConfigError(key, f"cannot open {path!r} for appending: {e.strerror}")


def makeableDirectory(key: str, path: str) -> None:
    """
    The directory exists and can be written to, or can be made: the
    deepest part of the path that exists is a directory we may write in.
    """
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(key, f"{existing!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(key, f"cannot write in {existing!r}")


def existingFile(key: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(key, f"{path!r} is not a file")


def routeDirectories(key: str, routes: Sequence[RouteSettings]) -> None:
    """
    The static routes' directories exist.
    """
    for index, route in enumerate(routes):
        if route.static is not None and not os.path.isdir(route.static):
            raise ConfigError(f"{key}[{index}].static", f"{route.static!r} is not a directory")


def certificatePair(key: str, files: CertificateFiles) -> CertificatePair:
    try:
        return loadPair(files.cert, files.key)
    except TLSConfigError as e:
        raise ConfigError(key, str(e))


def passwordFile(key: str, path: str) -> None:
    from .policy.auth import PasswordFile

    try:
        PasswordFile.load(path)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r} ({e.strerror or e})")
    except ValueError as e:
        raise ConfigError(key, f"{path}: {e}")
