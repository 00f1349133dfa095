"""
Every extension point of dualproxy.

Built-in modes and filters implement these same interfaces and are found the
same way third-party ones are: as plugins in a ``twisted/plugins/`` dropin,
discovered with :func:`twisted.plugin.getPlugins`.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IExchangeHandler(Interface):
    """
    A mode's handler: what a client channel hands every request to.
    """

    def newContext():
        """
        A fresh L{dualproxy.core.exchange.ExchangeContext} (or a subclass)
        for one exchange: where the mode keeps what it learns about it.
        """

    def connectionMade(channel):
        """
        A client connected on C{channel} (an L{IClientChannel}).
        """

    def connectionLost(channel):
        """
        The client on C{channel} is gone.
        """

    def handle(exchange):
        """
        Answer C{exchange}; raising L{dualproxy.http.message.Refusal}
        answers the client with its error.
        """

    def exchangeDone(exchange):
        """
        C{exchange} is finished (answered, refused or aborted): log it,
        count it, release what it held.
        """


class IClientChannel(Interface):
    """
    One client connection or HTTP/2 stream, as an exchange sees it: it
    frames the response and controls reading from the client.
    """

    handler = Attribute("The L{IExchangeHandler} its exchanges go to.")
    clock = Attribute("An L{twisted.internet.interfaces.IReactorTime}.")
    transport = Attribute("What the response is written to.")
    clientHost = Attribute("The client's address as str, or None.")
    secure = Attribute("Whether the client came over TLS.")

    def pauseReading(reason):
        """
        Stop reading from the client for C{reason}, until every reason is
        withdrawn.
        """

    def resumeReading(reason):
        """
        Withdraw C{reason} to pause.
        """

    def writeInterim(exchange, head):
        """
        Write a 1xx response head, if the client understands one.
        """

    def writeHead(exchange, head):
        """
        Write the final response head, choosing the body's framing.
        """

    def exchangeDone(exchange):
        """
        The response is complete: tell the handler, then read the next
        request or close.
        """

    def clientSubject():
        """
        The subject of the verified client certificate, or None.
        """

    def splice(upstream):
        """
        Turn the connection into a byte tunnel to C{upstream}.
        """


class IClientConnection(Interface):
    """
    One open client connection, as the service tree counts and drains it:
    an HTTP/1.x channel, an HTTP/2 connection or a SOCKS session alike.
    """

    def busy():
        """
        How much the connection is doing that a drain waits for (requests
        being answered, open streams, a tunnel), as an int; a bool counts as
        0 or 1.
        """

    def drain():
        """
        The proxy is stopping: close now if idle, else once what it is
        doing is done.  Whatever is left at C{timeouts.drain} is cut.
        """


class IClientFactory(Interface):
    """
    The protocol factory behind a client listener, as the service tree
    counts, drains and reloads it.
    """

    connections = Attribute("The open L{IClientConnection} providers, a set.")

    def adopt(other):
        """
        A reload keeps this factory's socket: take C{other}'s settings (the
        new configuration's factory of the same kind) for new connections,
        and as far as they can for the open ones.
        """


class IResponseSink(Interface):
    """
    Where a relay or a cache writes a response: the client's exchange, or a
    cache's wrapper around it.
    """

    def writeInterim(head):
        """
        Pass on a 1xx response.
        """

    def writeHead(head):
        """
        Start the response with C{head}.
        """

    def passesBodyThrough():
        """
        Whether body bytes may bypass the sink (splice) unchanged.
        """

    def write(data):
        """
        More of the response body.
        """

    def registerProducer(producer):
        """
        Let the sink slow down the streaming C{producer}.
        """

    def unregisterProducer():
        """
        The producer is done.
        """

    def finish():
        """
        The response is complete.
        """

    def refuse(status, reason, headers=()):
        """
        Answer with an error instead, or cut the response short.
        """


class IRequestBodySink(Interface):
    """
    What takes a request's body from its exchange
    (L{dualproxy.core.exchange.Exchange.setBodySink}).
    """

    def bodyReceived(data):
        """
        More of the request body.
        """

    def bodyEnded():
        """
        The whole request body has arrived.
        """


class IUpstreamListener(Interface):
    """
    What an upstream connection reports one response to.
    """

    def responseInterim(head):
        """
        A 1xx response head.
        """

    def responseHead(head):
        """
        The final response head.
        """

    def bodySpliced(splicer):
        """
        The body now moves by splice, bypassing L{responseBody}.
        """

    def responseBody(data):
        """
        More of the response body.
        """

    def responseEnded():
        """
        The response is complete.
        """

    def responseFailed(refusal):
        """
        The response cannot be had or completed, as the
        L{dualproxy.http.message.Refusal} says.
        """


class IProxyMode(Interface):
    """
    A way of running dualproxy, selected with ``--mode NAME``.
    """

    name = Attribute("The name given to --mode, as str.")
    description = Attribute("One line shown in --help and in mode listings.")
    defaultListen = Attribute(
        "Endpoint strings used when neither the config nor --listen names any."
    )

    def parseSettings(table, base):
        """
        The mode's settings from its top-level table (the one named after
        the mode; empty when the config has none), checked without I/O.

        @param table: the raw mapping from the config file.
        @param base: the directory relative paths are relative to.
        @return: the settings L{makeService} finds in C{config.modes[name]}.
        @raise dualproxy.settings.values.ConfigError: naming the first
            wrong key, dotted from the mode's name.
        """

    def checkSettings(settings, config):
        """
        Before start-up and each reload: check what the settings name
        outside the config (files, certificates) exists and loads.

        @raise dualproxy.settings.values.ConfigError: as L{parseSettings}.
        """

    def makeService(config, filters):
        """
        Build the running proxy.

        @param config: the validated L{dualproxy.settings.model.Config}.
        @param filters: the enabled L{IRequestFilter} providers, in order.
        @return: an L{twisted.application.service.IService}.
        """


class IRequestFilter(Interface):
    """
    A hook run on every proxied request and response, enabled by name with
    the ``filters`` config key.

    Filters see the same L{dualproxy.http.message.RequestHead} and
    L{dualproxy.http.message.ResponseHead} objects the relay forwards, so a
    change they make is what the upstream (or the client) receives.
    """

    name = Attribute("The name used in the config's ``filters`` list, as str.")

    def request(head, client):
        """
        Inspect or rewrite a request before it is relayed.

        @param head: the L{RequestHead} about to be sent upstream (mutable).
        @param client: the client's L{twisted.internet.interfaces.IAddress}.
        @return: L{None} to continue, or a L{dualproxy.http.message.Refusal}
            to answer the client directly without contacting the upstream.
        """

    def response(request, head):
        """
        Inspect or rewrite a response head before it reaches the client.

        @param request: the L{RequestHead} that was relayed.
        @param head: the L{ResponseHead} received from upstream (mutable).
        """


class IBalancerFactory(Interface):
    """
    A load-balancing strategy, named by a reverse-mode pool's C{balance}
    setting; builds one L{IBalancer} per pool.
    """

    name = Attribute("The strategy's name in the config, as str.")

    def __call__(options):
        """
        Build the strategy for one pool.

        @param options: the pool's strategy options (a mapping, e.g.
            C{{"hash": "cookie:session"}}).
        @raise ValueError: naming the option that is wrong.
        @return: an L{IBalancer}.
        """


class IBalancer(Interface):
    """
    One pool's choice of backend for each request.
    """

    def pick(backends, client, headers):
        """
        Choose the backend for a request.

        @param backends: the candidates, never empty: the pool's healthy
            backends not yet tried for this request, in configuration order.
            Each has C{name} (str), C{weight} (int > 0) and C{inFlight}
            (requests it is serving now).
        @param client: the client's address as a string, or L{None}.
        @param headers: the request's L{dualproxy.http.message.Headers}.
        @return: one of C{backends}.
        """


class IPluginResources(Interface):
    """
    What the running proxy lends the stores and limiters it builds, so that
    a plugin backed by a shared server uses the proxy's one connection.
    """

    reactor = Attribute("The reactor the proxy runs on.")
    redis = Attribute(
        "The shared L{dualproxy.redis.client.RedisClient} of the C{[redis]} table (keys go under its C{prefix}), "
        "or None when the config has no such table."
    )


class ICacheStoreFactory(Interface):
    """
    A kind of cache store, named by the config's cache C{store} setting.
    """

    name = Attribute("The store's name in the config (e.g. 'memory', 'disk'), as str.")

    def __call__(options, resources):
        """
        Build a store.

        @param options: the store's settings (a mapping, e.g.
            C{{"max_bytes": 268435456, "path": "/var/cache/dualproxy"}}).
        @param resources: an L{IPluginResources}.
        @raise ValueError: naming the option that is wrong.
        @return: an L{ICacheStore}.
        """


class ICacheStore(Interface):
    """
    Where cached responses live.  Keys are opaque bytes chosen by the cache
    (the URL and the Vary secondary key); values are a head (opaque bytes
    the cache serializes) and a body written in chunks as it streams by.
    """

    maxObjectSize = Attribute("Bodies larger than this (bytes) are not stored.")
    bytesStored = Attribute("Bytes of heads and bodies held now.")
    evictions = Attribute("Entries removed to make room, since start.")

    def open(key):
        """
        Start storing an entry; nothing is visible under C{key} until the
        writer is committed.

        @return: an L{ICacheWriter}.
        """

    def get(key):
        """
        @return: the committed L{ICacheEntry} for C{key}, or L{None}; or,
            from a store that must ask a server, a Deferred firing with
            either (never failing: a store that cannot answer answers
            L{None}).
        """

    def peek(key):
        """
        What L{get} would answer, if it can be had without waiting, else
        L{None}: the cache's fast path for fresh hits.
        """

    def remove(key):
        """
        Forget C{key} (purge, invalidation); no error if absent.  A store
        that must ask a server returns a Deferred that fires once it is
        done, or fails if that cannot be known.
        """


class ICacheWriter(Interface):
    """
    One entry being stored while its response streams to the client.
    """

    def write(data):
        """
        Add body bytes.

        @return: L{False} once the body exceeds the store's object size
            limit: the entry is abandoned and further writes are ignored.
        """

    def commit(head):
        """
        Make the entry visible with C{head} (bytes), replacing any previous
        entry under the same key.
        """

    def abort():
        """
        Drop the entry (the response was cut short or not storable).
        """


class ICacheEntry(Interface):
    """
    A committed entry: its head and its body, readable in chunks.
    """

    head = Attribute("The bytes given to L{ICacheWriter.commit}.")
    size = Attribute("The body's length in bytes.")

    def chunks(start=0, end=None):
        """
        The body bytes from C{start} to C{end} (exclusive), as an iterator
        of byte strings, for streaming an answer (and Range requests).
        """


class IRateLimiterFactory(Interface):
    """
    A kind of rate limiter, named by a C{rate_limit} table's C{limiter}
    setting; builds one L{IRateLimiter} per limited route, pool or proxy.
    """

    name = Attribute("The limiter's name in the config (e.g. 'memory'), as str.")

    def __call__(options, resources):
        """
        Build a limiter.

        @param options: the C{rate_limit} table's settings other than C{key}
            and C{limiter} (a mapping, e.g. C{{"rate": 10, "burst": 20}}).
        @param resources: an L{IRateLimiterResources}.
        @raise ValueError: naming the option that is wrong.
        @return: an L{IRateLimiter}.
        """


class IRateLimiterResources(IPluginResources):
    """
    What a rate limiter's factory is lent: the proxy's resources, and which
    limit it builds, so that buckets in a shared store are kept apart.
    """

    label = Attribute(
        "The limit's label in the metrics, as str: 'route:HOST/PREFIX', 'pool:NAME', 'forward' or 'socks'. "
        "The same for every instance running one configuration, and across reloads."
    )


class IRateLimiter(Interface):
    """
    Token buckets, one per client key: each request takes a token, and a
    client whose bucket is empty waits.  The caller passes the time, so a
    limiter never reads a clock and a shared store sees one timeline.
    """

    def take(key, now):
        """
        Take a token for one request.

        @param key: the client's bucket (an opaque str).
        @param now: the time in seconds (the reactor's).
        @return: C{0.0} if the request may go; otherwise the seconds until
            it may (the C{Retry-After}), and nothing is taken.  A limiter
            that must ask a server returns a Deferred firing with that, or
            failing with L{dualproxy.policy.ratelimit.LimiterUnavailable}
            when it cannot tell and is set to refuse then.
        """

    def stats(now):
        """
        Numbers for metrics, as of C{now}.

        @return: a mapping with at least C{allowed} and C{rejected}
            (requests since start), C{keys} (buckets tracked) and
            C{saturated} (buckets with less than one token); a limiter
            that asks a server adds C{errors} (answers it could not get).
        """
