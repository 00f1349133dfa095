"""
The built-in load-balancing strategies, registered as plugins exactly as a
third party's would be, so that a pool's C{balance} finds them all the same way.
"""

from dualproxy.reverse.balancers import consistentHash, leastBusy, randomTwo, roundRobin

__all__ = ["roundRobin", "leastBusy", "randomTwo", "consistentHash"]
