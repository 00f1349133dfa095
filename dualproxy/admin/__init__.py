"""
The admin listener: Prometheus metrics, a JSON status document, a live
dashboard and configuration reloads, on an endpoint of its own.
"""
