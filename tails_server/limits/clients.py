"""Who a client is: the address limits count by, from the socket or from a trusted proxy's headers."""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 16  # proxy headers longer than this are read from the right this far only


def parse_networks(values: Iterable[str]) -> list[Network]:
    """CIDRs (or bare addresses) of proxies whose forwarding headers are believed."""
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


@functools.lru_cache(maxsize=4096)  # parsing took ~3 us, at every connection and upload; a hit takes ~0.1
def client_key(address: str | None) -> str:
    """The unit limits count: an IPv4 address, or an IPv6 /64 (one host's share of a network)."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def forget_one(counts: Counter[str], key: str) -> None:
    """Count one less for `key`, dropping it at zero so the table holds only clients with something open."""
    if counts[key] > 1:
        counts[key] -= 1
    else:
        del counts[key]


class ClientAddress:
    """The client's address: the socket's peer, or what trusted proxies in front of it forwarded."""

    def __init__(self, trusted: list[Network]) -> None:
        self.trusted = trusted

    def is_trusted(self, address: str | None) -> bool:
        """Whether a peer is one of the configured proxies."""
        if not self.trusted or not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted)

    def of(self, request: web.BaseRequest) -> str | None:
        """The address a request came from; forwarding headers count only when a trusted proxy sent them.

        The chain is read from the right (the hop nearest us) past every trusted proxy: the first
        address no trusted proxy vouches for is the client. Anything unparsable ends the walk at
        the last trusted hop, so a client cannot choose its own address by sending the header.
        """
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        address = peer[0] if isinstance(peer, tuple) else None
        if not self.is_trusted(address):
            return address
        for hop in reversed(_forwarded_chain(request.headers)[-MAX_HOPS:]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            address = hop
            if not self.is_trusted(hop):
                break
        return address


def _forwarded_chain(headers) -> list[str]:
    """Addresses from `Forwarded: for=…` (RFC 7239), else from `X-Forwarded-For`, leftmost first."""
    chain: list[str] = []
    for header in headers.getall("Forwarded", ()):
        for element in header.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    chain.append(_strip_node(value.strip().strip('"')))
    if chain:
        return chain
    for header in headers.getall("X-Forwarded-For", ()):
        chain += [part.strip() for part in header.split(",")]
    return chain


def _strip_node(node: str) -> str:
    """`[2001:db8::1]:4711` or `192.0.2.1:80` to the bare address."""
    if node.startswith("["):
        return node[1:].split("]", 1)[0]
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node
