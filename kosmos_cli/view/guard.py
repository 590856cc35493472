"""Which requests the viewer answers at all, and the headers every answer carries to keep the page to itself.

Only a request line in origin form (`GET /path HTTP/1.1`, never a whole URL) is answered, and only when its Host
names this server (`host_allowed`): on a loopback address a loopback IP or `localhost`, with the port served; on
another address that address (a web page elsewhere cannot reach it by DNS rebinding).
"""

from __future__ import annotations

import ipaddress

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


def refused(target: str, host: str, bound: str, port: int) -> tuple[int, bytes] | None:
    """Why a request for `target` with the Host header `host` is not answered by the server on `bound`:`port`
    (a status and a body), or None when it is answered."""
    if not target.startswith("/"):  # a whole URL (as asked of a proxy), or `*`: never this server's
        return 400, b"only a path is asked for here, not a whole URL\n"
    if not host_allowed(host, bound, port):
        return 403, b"unknown host\n"
    return None


def host_allowed(header: str, bound: str, port: int) -> bool:
    """Whether a request's Host header names this server, listening on `bound`:`port`: a loopback IP literal
    (127.0.0.0/8, ::1) or `localhost` on a loopback address; that address on another one (any IP literal on
    0.0.0.0 or ::, where no name is known to be ours). Always with the port served (none only for port 80). A
    name that merely begins like an address (`127.0.0.1.attacker.example`) is not one."""
    header = header.strip().lower()
    given: str | None
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        given = rest[1:] if rest else None
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.IPv6Address(name)
        except ValueError:
            return False
    else:
        name, colon, rest = header.partition(":")
        given = rest if colon else None
        try:
            ip = ipaddress.IPv4Address(name)
        except ValueError:
            ip = None
    if not name:
        return False
    if given is None:
        if port != 80:
            return False
    elif not (given.isascii() and given.isdigit() and len(given) <= 5 and int(given) == port):
        return False
    bound = bound.strip("[]").lower()
    everywhere = bound in ("0.0.0.0", "::")
    if ip is not None:
        if everywhere or (loopback(bound) and ip.is_loopback):
            return True
        try:
            return ip == ipaddress.ip_address(bound)
        except ValueError:
            return False  # listening on a name: the Host names it, not an address
    if name == "localhost":
        return everywhere or loopback(bound)
    return name == bound


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
