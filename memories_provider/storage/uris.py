"""Storage URIs: their scheme, and the one way to show them (credentials and tokens masked)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from memories_provider.redaction import MASK

#: Schemes whose user-info starts with a login name (SSH): the name is kept, the password masked.
LOGIN_SCHEMES = frozenset({"sftp", "ssh", "scp"})


def scheme_of(uri: str) -> str:
    """The lower-cased URI scheme, ``""`` for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep or "/" in head:
        return ""
    return head.lower()


def redact_uri(uri: str) -> str:
    """``uri`` fit for logs, XCom, lineage, events and errors: user-info and query string masked.

    ``sftp://alice:pw@host/x.mp4`` shows as ``sftp://alice:***@host/x.mp4`` (``sftp://alice@host``
    is left as it is: a login name), ``https://u:pw@host/x`` and ``https://token@host/x`` as
    ``https://***@host/x``, a presigned ``https://host/x.mp4?X-Amz-Signature=...`` as
    ``https://host/x.mp4?***``. Local paths and ``file://`` URIs are returned as given (a ``?``
    or ``@`` there is part of the name). Every storage URI the provider shows goes through here.
    """
    uri = str(uri)
    if scheme_of(uri) in ("", "file"):
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced "[" in the host: show nothing after the scheme
        return f"{uri.partition('://')[0]}://{MASK}"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        if scheme_of(uri) in LOGIN_SCHEMES and user:
            # A login name, needed to use the URI again: only the password is a secret.
            netloc = f"{user}:{MASK}@{host}" if has_password else netloc
        else:  # elsewhere a lone user-info is often a token (https://<token>@host)
            netloc = f"{MASK}@{host}"
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
