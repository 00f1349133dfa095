"""The forward proxy mode: ACLs, authentication and request handling."""
