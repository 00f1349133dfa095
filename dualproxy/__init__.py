"""dualproxy: a forward and reverse HTTP proxy built on Twisted."""

__version__ = "0.1.0"
