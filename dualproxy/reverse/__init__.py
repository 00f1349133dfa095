"""
Reverse mode: route inbound requests to pools of backends.
"""
