"""Talking to origin registries.

Nouns: ``client`` (UpstreamClient: auth, redirects, retries), ``auth`` (challenges, tokens),
``blobs`` (fetching a blob into a cache fill, with parallel ranges and resume), ``socketbody``
(a big plain-HTTP body read by a thread off the socket, once aiohttp parsed its head),
``tlsbody`` (a big HTTPS body asked again on a blocking connection of that thread's own),
``tls`` (OriginTLS: one SSL context per upstream's CA and client certificate), ``proxy``
(Proxies: which HTTP proxy each origin request goes through), ``config``.
Core package: imports ``imgaccel.cache``, ``imgaccel.oci`` and ``imgaccel.errors`` only.
"""

from imgaccel.upstream.client import Answer, UpstreamClient
from imgaccel.upstream.config import UpstreamClientSettings, UpstreamSettings
from imgaccel.upstream.tls import OriginTLS

__all__ = ["Answer", "OriginTLS", "UpstreamClient", "UpstreamClientSettings", "UpstreamSettings"]
