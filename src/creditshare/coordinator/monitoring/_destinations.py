"""Where a webhook may point: public addresses, and private ones the operator allowed.

The coordinator POSTs to a URL a bank chose. Left open, that lets any bank make the
coordinator's host call its own loopback services, the cloud metadata endpoint or the
chain's internal network (server-side request forgery). So a destination is checked
when the webhook is set and again before every call (DNS may have changed meanwhile):
every address its host resolves to must be global, or inside a network the operator
listed in ``webhook_allowed_networks`` (a bank's endpoint on the chain's intranet).
Redirects are never followed, so a public endpoint cannot bounce a call inward.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from creditshare.errors import InvalidInputError

__all__ = ["Network", "check_destination"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidInputError(f"webhook url's host {host[:80]!r} does not resolve") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_destination(url: str, allowed: Sequence[Network]) -> None:
    """InvalidInputError unless every address ``url``'s host resolves to may be called."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for address in _addresses(host, port):
        mapped = getattr(address, "ipv4_mapped", None)
        checked = mapped if mapped is not None else address
        if checked.is_global or any(checked in network for network in allowed):
            continue
        raise InvalidInputError(
            f"webhook url's host {host[:80]!r} is {checked}, a loopback, private, link-local "
            "or reserved address; the chain operator can allow its network "
            "(webhook_allowed_networks)"
        )
