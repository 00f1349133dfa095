"""
The targets of routes that lead to no pool: a static directory or a redirect.
"""

from __future__ import annotations

from .static import StaticDirectory
from .targets import Redirect, Target


def pageTarget(settings) -> Target:
    """
    The target of a route to a static directory or a redirect (routes to a
    pool are the reverse mode's).
    """
    headers = dict(addHeaders=settings.add_headers, removeHeaders=settings.remove_headers,
                   allowSubjects=settings.client_subjects)
    if settings.static is not None:
        return StaticDirectory(settings.static, settings.listing, **headers)
    return Redirect(settings.redirect, settings.redirect_status, **headers)
