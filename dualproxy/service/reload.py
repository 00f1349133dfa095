"""
Reloading a running proxy in place, on C{SIGHUP} or C{POST /reload}.

The new configuration's tree is built beside the running one, with what a
reload keeps (L{dualproxy.service.root.Lasting}) handed to it; its new
listeners bind, all or none; then the running tree takes its parts over.
Anything wrong leaves the running configuration as it was.
"""

from __future__ import annotations

import signal
from typing import Optional

from twisted.application.service import Service
from twisted.logger import Logger

from ..settings.values import ConfigError
from ..listeners import ListenError

log = Logger()


def reload(service) -> Optional[str]:
    """
    Re-read the configuration and apply it to C{service}, a running
    L{dualproxy.service.root.ProxyService}; None when done, else why not
    (logged too).  Without a configuration to re-read, the TLS certificates
    are.
    """
    from ..tls import TLSConfigError

    if service.configure is None:
        serverTLS = service.listenerGroup.serverTLS
        if serverTLS is None:
            return "nothing to reload: this service was not built from a configuration file"
        try:
            serverTLS.reload()
        except TLSConfigError as e:
            return _reloaded(service, str(e))
        return _reloaded(service, None)
    try:
        mode, config, filters = service.configure()
        if config.mode != service.config.mode:
            raise ConfigError("mode", f"cannot change from {service.config.mode} to {config.mode} on reload")
        successor = mode.makeService(config, filters, service.reactor, service.lasting.successor(config))
        # New listeners bind first: a busy port rejects the whole reload.
        successor.listenerGroup.bindBeside(service.listenerGroup)
    except (ConfigError, TLSConfigError, ListenError, SystemExit, OSError, ValueError) as e:
        return _reloaded(service, str(e) or type(e).__name__)
    service.takeOver(successor)
    return _reloaded(service, None)


def _reloaded(service, error: Optional[str]) -> Optional[str]:
    if error is None:
        service.metrics.reloads["success"] += 1
        log.info("configuration reloaded")
    else:
        service.metrics.reloads["failure"] += 1
        log.error("configuration not reloaded, keeping the running one: {error}", error=error)
    return error


class ReloadOnHangup(Service):
    """
    Reloads the service on SIGHUP (see L{reload}).
    """

    def __init__(self, service):
        self.service = service
        self._previous = None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._signalled)

    def stopService(self):
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _signalled(self, number, frame) -> None:
        self.service.reactor.callFromThread(self.service.reload)
