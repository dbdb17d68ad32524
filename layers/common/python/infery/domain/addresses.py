"""Which network addresses infery connects to on a client's behalf: a webhook's receiver and the server of audio sent
by URL. Checked when the request arrives and again on every name lookup at connection time."""

from __future__ import annotations

import ipaddress

# IPv6 prefixes that carry an IPv4 address inside (NAT64): an internal one inside is internal.
_NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# Where clouds answer with a machine's credentials (AWS's instance and container metadata live in link-local
# 169.254.0.0/16 and fd00:ec2::/32; Alibaba's in 100.100.100.200): refused even where private addresses are allowed.
_METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::/32"),
    ipaddress.ip_network("100.100.100.200/32"),
)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address.split("%", 1)[0])


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one wraps (mapped, 6to4, NAT64), if any."""
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and any(ip in prefix for prefix in _NAT64_PREFIXES):
        embedded = ipaddress.IPv4Address(ip.packed[-4:])
    return embedded


def is_public_address(address: str) -> bool:
    """Whether a webhook may be sent to this IP address: a global unicast one, also inside IPv6 wrappings of IPv4
    (mapped, 6to4, NAT64), so 169.254.169.254 is refused however it is written."""
    ip = _ip(address)
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return True


def is_metadata_address(address: str) -> bool:
    """Whether the address is link-local or a cloud's metadata service, however it is written."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and is_metadata_address(str(embedded)):
            return True
    return any(ip.version == network.version and ip in network for network in _METADATA_NETWORKS)


def is_allowed_address(address: str, *, allow_private_addresses: bool) -> bool:
    """Whether infery may connect to this IP address for a client: a public one, or (where the deployment allows
    private addresses: the local stack) any but a metadata service's."""
    if allow_private_addresses:
        return not is_metadata_address(address) and not _ip(address).is_multicast
    return is_public_address(address)
