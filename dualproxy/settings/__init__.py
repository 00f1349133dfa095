"""
Settings: the validated model (L{model}) and the value checks (L{values})
that config parsing and each mode's settings build on.
"""
