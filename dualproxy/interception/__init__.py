"""
TLS interception: a local certificate authority, the leaf certificates it
mints per host, and the TLS server layered inside a CONNECT tunnel.
"""
