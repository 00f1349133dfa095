-- Makes wrk speak to a forward proxy (from shared/peers/fwd.lua): each request names the origin in absolute form.
-- O is the origin's host:port (default 127.0.0.1:28080), P the path (default /1k.bin).
local origin = os.getenv("O") or "127.0.0.1:28080"
wrk.path = "http://" .. origin .. (os.getenv("P") or "/1k.bin")
wrk.headers["Host"] = origin
