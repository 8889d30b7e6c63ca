"""HTTPS served directly: listeners that admit each connection at accept, and a transport over ssl.SSLSocket.

- site.py: listening, accepting, admitting, the handshake timeout, aiohttp's site;
- transport.py: one TLS connection as an asyncio transport, OpenSSL reading and writing the socket.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

from .site import HANDSHAKE_TIMEOUT, TlsServer, TlsSite
from .transport import TlsTransport

__all__ = ["HANDSHAKE_TIMEOUT", "TlsServer", "TlsSite", "TlsTransport", "kernel_tls"]

_ULP = Path("/proc/sys/net/ipv4/tcp_available_ulp")


def kernel_tls() -> str:
    """Whether the kernel encrypts downloads (for /status): never yet, and why.

    Kernel TLS needs ssl.OP_ENABLE_KTLS (Python 3.12+), an OpenSSL that owns the socket (as here)
    and the kernel's TLS module.
    """
    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        return f"not used: Python {sys.version_info.major}.{sys.version_info.minor} has no ssl.OP_ENABLE_KTLS"
    try:
        offered = "tls" in _ULP.read_text().split()
    except OSError:
        offered = False
    if not offered:
        return "not used: the kernel offers no TLS (its tls module is not loaded)"
    return "not used: the kernel offers it, but this version does not turn it on (not yet tested with a kernel that has it)"
