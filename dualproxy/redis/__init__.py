"""
Talking to Redis, for state several proxy instances share: the RESP codec
(L{protocol}) and the reactor's client (L{client}).
"""
