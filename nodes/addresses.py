"""Server addresses and TLS: the leaf that egress, the transport and the owner's settings
share. It imports nothing from the pack, so those three import each other one way only
(server_settings <- egress <- fal_transport) instead of in a circle.
"""

from __future__ import annotations

import ipaddress
import ssl
from functools import lru_cache
from urllib.parse import urlsplit

# fal's own hosts (and fal-client's backup domains). https only.
FAL_DOMAINS = ("fal.run", "fal.ai", "fal.media", "falrun.com")
# Where fal's result files live (what uploads and endpoints return).
FAL_FILE_DOMAINS = ("fal.media", "fal.run", "fal.ai")
FAL_GCS_HOST, FAL_GCS_PREFIX = "storage.googleapis.com", "/falserverless/"


class EgressRefused(Exception):
    """A request (or a destination) the owner did not allow. The message is one sentence."""


def _on_domain(host: str, domains: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def is_fal_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and _on_domain(parts.hostname or "", FAL_DOMAINS)


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None if not http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower().rstrip("."), \
        port or (443 if parts.scheme == "https" else 80)


def normalize(url: str) -> str:
    """A server URL in one spelling (lower-case scheme and host, trailing '/'), or ''.

    Raises EgressRefused for something that is not an http(s) URL."""
    url = (url or "").strip()
    if not url:
        return ""
    found = origin(url)
    parts = urlsplit(url)
    if found is None or parts.username or parts.password or parts.query or parts.fragment:
        raise EgressRefused(f"'{url[:80]}' is not a server URL (http:// or https://, no "
                            f"user name, query or fragment)")
    scheme, host, port = found
    default = 443 if scheme == "https" else 80
    netloc = (f"[{host}]" if ":" in host else host) + ("" if port == default else f":{port}")
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}/"


def is_private_host(host: str) -> bool:
    """Loopback, private, link-local or unspecified addresses, and localhost names."""
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (address.is_private or address.is_loopback or address.is_link_local or
            address.is_unspecified or address.is_reserved or address.is_multicast)


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The certificate context httpx would build for each client (certifi's CAs), built once."""
    import certifi
    return ssl.create_default_context(cafile=certifi.where())
