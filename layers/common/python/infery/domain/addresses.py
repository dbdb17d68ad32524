"""Which network addresses a webhook may be sent to: checked when a job is created and again at delivery."""

from __future__ import annotations

import ipaddress

# IPv6 prefixes that carry an IPv4 address inside (NAT64): an internal one inside is internal.
_NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def is_public_address(address: str) -> bool:
    """Whether a webhook may be sent to this IP address: a global unicast one, also inside IPv6 wrappings of IPv4
    (mapped, 6to4, NAT64), so 169.254.169.254 is refused however it is written."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in prefix for prefix in _NAT64_PREFIXES):
            embedded = ipaddress.IPv4Address(ip.packed[-4:])
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return True
