"""
The exchange core every capability goes through.
"""
