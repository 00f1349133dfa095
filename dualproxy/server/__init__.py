"""
The client side: HTTP/1.x connections and HTTP/2 streams, each request an exchange.
"""
