"""
The resource tree both modes route with, and the targets at its leaves.
"""
