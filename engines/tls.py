"""One TLS context for every HTTP client of the process, whose certificate authorities
are read on its first TLS handshake, not when a client is made.

httpx makes a context for each client it builds and reads the CA bundle into it at once
(117 certificates from certifi: 0.7-1.8 MiB resident and 10-20 ms of CPU each), even for
an ``http://`` host that never speaks TLS. The app makes two clients per Ollama server (the
async one and the one that streams replies). This context is httpx's own in every way that
matters: it verifies the certificate and the host name (``PROTOCOL_TLS_CLIENT``: both on
from its creation), and it trusts what httpx would trust, read the way httpx reads it
(``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else certifi's bundle). If reading them fails,
the handshake fails: nothing is ever sent without verification.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
from typing import Any


class LazyCAContext(ssl.SSLContext):
    """An :class:`ssl.SSLContext` that verifies, and loads its CAs before the first
    handshake (``wrap_socket`` for sync clients, ``wrap_bio`` for async ones)."""

    _lock: threading.Lock
    _loaded: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> LazyCAContext:
        ctx = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        ctx._lock = threading.Lock()
        ctx._loaded = False
        return ctx

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # as ssl.create_default_context for a client: verify the peer and its name
        self.verify_mode = ssl.CERT_REQUIRED
        self.check_hostname = True
        if sys.version_info >= (3, 13):  # as create_default_context has since 3.13
            self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and hasattr(self, "keylog_filename"):
            self.keylog_filename = keylog

    def load_authorities(self) -> None:
        """Read the certificate authorities now (once): as httpx does for ``verify=True``."""
        with self._lock:
            if self._loaded:
                return
            if os.environ.get("SSL_CERT_FILE"):
                self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
            self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.load_authorities()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self.load_authorities()
        return super().wrap_bio(*args, **kwargs)


_shared: LazyCAContext | None = None
_shared_lock = threading.Lock()


def client_tls() -> LazyCAContext:
    """The process's one verifying context, for ``verify=`` of every httpx client."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LazyCAContext()
        return _shared
