function FindProxyForURL(url, host) {
    if (isPlainHostName(host) || shExpMatch(host, "*.internal")) {
        return "DIRECT";
    }
    return "PROXY 127.0.0.1:3128";
}
