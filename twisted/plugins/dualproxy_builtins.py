"""
The built-in proxy modes, registered as plugins exactly as a third party's
would be, so that C{--mode} finds them all the same way.
"""

from dualproxy.forward.mode import ForwardMode
from dualproxy.reverse.mode import ReverseMode
from dualproxy.socks.mode import SocksMode

forward = ForwardMode()
reverse = ReverseMode()
socks = SocksMode()
