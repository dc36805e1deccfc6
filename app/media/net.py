"""Network settings aiortc/aioice have no option for (docs/media-design.md "Network").

- `announce(sdp, address)`: MEDIA_ANNOUNCED_ADDRESS. aioice has no "announced IP"; the media
  process rewrites the address of its *host* candidates (and the `c=` lines) in the answer it
  returns, so browsers send to the public address that the router forwards (1:1 NAT or port
  forwarding of the UDP range) to this machine. Connectivity checks still work: aioice answers
  STUN on the socket whatever address the browser used.
- `restrict_udp_ports(loop, lo, hi)`: MEDIA_PORT_MIN/MAX. aioice binds each host candidate with
  `loop.create_datagram_endpoint(local_addr=(address, 0))`; the wrapper installed on this
  process's event loop picks a free port in [lo, hi] instead of port 0.
"""
import ipaddress
import logging
import random
import re

log = logging.getLogger("videoar.media.net")

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host.*)$", re.I)
_CONNECTION = re.compile(r"^c=IN (IP4|IP6) (\S+)$")


def _family(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


def announce(sdp: str, address: str) -> str:
    """Replace the address of every host candidate of the same IP family as `address`
    (and the matching `c=` lines) with `address`."""
    if not address:
        return sdp
    family = _family(address)
    if not family:
        raise ValueError(f"MEDIA_ANNOUNCED_ADDRESS must be an IP address, not {address!r}")
    lines = sdp.split("\r\n")
    for i, line in enumerate(lines):
        match = _CANDIDATE.match(line)
        if match and _family(match.group(2)) == family:
            lines[i] = match.group(1) + address + match.group(3)
            continue
        match = _CONNECTION.match(line)
        if match and _family(match.group(2)) == family:
            lines[i] = f"c=IN {match.group(1)} {address}"
    return "\r\n".join(lines)


def restrict_udp_ports(loop, low: int, high: int) -> None:
    """Make `loop.create_datagram_endpoint(local_addr=(host, 0))` bind in [low, high]."""
    if not low or not high:
        return
    if not 0 < low <= high <= 65535:
        raise ValueError(f"bad MEDIA_PORT_MIN/MAX: {low}-{high}")
    original = loop.create_datagram_endpoint

    async def create_datagram_endpoint(protocol_factory, local_addr=None, *args, **kwargs):
        if local_addr is None or kwargs.get("sock") is not None or local_addr[1] != 0:
            return await original(protocol_factory, local_addr, *args, **kwargs)
        ports = list(range(low, high + 1))
        start = random.randrange(len(ports))
        last_error = None
        for port in ports[start:] + ports[:start]:
            try:
                return await original(protocol_factory, (local_addr[0], port), *args, **kwargs)
            except OSError as exc:
                last_error = exc
        log.error("no free UDP port in %d-%d for %s", low, high, local_addr[0])
        raise OSError(f"no free UDP port in {low}-{high}") from last_error

    loop.create_datagram_endpoint = create_datagram_endpoint
