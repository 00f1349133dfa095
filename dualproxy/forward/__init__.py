"""The forward proxy mode: CONNECT, absolute-URI relaying, parents, anonymity."""
