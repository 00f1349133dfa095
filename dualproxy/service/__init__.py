"""
The service tree every mode runs (L{root.ProxyService}), in small parts:
the listeners (L{listeners}), the admin listener (L{admin}), the cache both
modes share (L{cache}), reloading (L{reload}) and draining on stop
(L{drain}).
"""
