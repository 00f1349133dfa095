"""
The upstream relay engine both modes share: connections, pooling, streaming.
"""
