"""
The C{twistd dualproxy} command: a dropin that names L{dualproxy.tap}.
"""

from twisted.application.service import ServiceMaker

dualproxy = ServiceMaker("dualproxy", "dualproxy.tap", "A forward and reverse HTTP proxy", "dualproxy")
