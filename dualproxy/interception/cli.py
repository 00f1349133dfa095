"""
The C{dualproxy-ca} command: make the local CA that TLS interception signs
leaf certificates with.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .authority import createAuthority, fingerprint, loadAuthority


def main(argv: Optional[List[str]] = None) -> int:
    """
    0 on success, 2 for a usage error, 1 when the CA cannot be made; errors
    are one line on standard error.
    """
    parser = argparse.ArgumentParser(prog="dualproxy-ca", description="Manage dualproxy's interception CA.")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="make a new CA in DIRECTORY (ca.pem, and ca-key.pem readable by you only)")
    init.add_argument("directory")
    init.add_argument("--name", default="dualproxy interception CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650, help="how long the CA is valid [default: 3650]")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if arguments.days < 1:
        parser.error("--days must be at least 1")
    try:
        certPath, keyPath = createAuthority(arguments.directory, arguments.name, arguments.days)
    except OSError as e:
        print(f"dualproxy-ca: {e.strerror if e.strerror and not isinstance(e, FileExistsError) else e}",
              file=sys.stderr)
        return 1
    certificate = loadAuthority(certPath, keyPath).chain[0]
    print(f"CA certificate: {certPath} (install it in the clients to be intercepted)")
    print(f"CA key:         {keyPath} (keep it secret: whoever has it can impersonate any site to those clients)")
    print(f"SHA-256 fingerprint: {fingerprint(certificate)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
