"""
The admin listener: status, metrics and reloads of the running proxy.
"""

from __future__ import annotations

from ..admin.site import adminSite
from ..listeners import ListenerService
from ..policy.auth import PasswordFile


def adminListener(service, settings, reactor) -> ListenerService:
    """
    Serve the admin site for C{service} on C{settings.listen}.  A reload
    keeps the running one: its own settings take a restart.

    @param service: the L{dualproxy.service.root.ProxyService} it reports on
        and reloads.
    @param settings: the config's C{[admin]} table.
    """
    passwords = PasswordFile.load(settings.auth_file) if settings.auth_file else None
    return ListenerService(settings.listen, adminSite(service, passwords, settings.realm), reactor)
