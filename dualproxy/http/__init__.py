"""
Pure HTTP/1.x rules: messages, parsing, intermediary header rules.
"""
