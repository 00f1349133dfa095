"""
Who may use the proxy and how much: ACLs, authentication, rate limits (shared by every mode).
"""
