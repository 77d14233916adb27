"""TLS client contexts for remote receivers: verified against a CA bundle, optionally mutual."""

from __future__ import annotations

import ssl

from wellhead.errors import ConfigError


def client_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """Certificate and host name checked (the system CAs unless `ca_file`), TLS 1.2 or newer.

    A missing or unreadable file is a configuration error, raised here at start-up.
    """
    if key_file and not cert_file:
        raise ConfigError("a TLS key_file needs its cert_file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (ca_file, cert_file, key_file) if f)
        raise ConfigError(f"audit TLS files ({files}) cannot be loaded: {exc}") from None
    return context
