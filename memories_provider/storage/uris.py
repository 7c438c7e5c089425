"""Storage URIs: the one scheme table, a local path's spelling, and the one way to show a URI
(credentials and tokens masked)."""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from memories_provider.redaction import MASK

#: The one scheme table: every scheme the provider reads or writes, and its storage family
#: (``""`` is a plain local path). Probes, credentials and writers all go by the family.
SCHEME_FAMILY: dict[str, str] = {
    "": "file",
    "file": "file",
    "s3": "s3",
    "s3a": "s3",
    "s3n": "s3",
    "gs": "gs",
    "gcs": "gs",
    "azure": "azure",
    "sftp": "sftp",
    "ssh": "sftp",
    "scp": "sftp",
    "http": "http",
    "https": "http",
}


def schemes_of(*families: str) -> frozenset[str]:
    """Every scheme of the given families (``schemes_of("sftp")`` is ``{"sftp", "ssh", "scp"}``)."""
    return frozenset(scheme for scheme, family in SCHEME_FAMILY.items() if family in families)


#: Schemes whose user-info starts with a login name (SSH): the name is kept, the password masked.
LOGIN_SCHEMES = schemes_of("sftp")


def scheme_of(uri: str) -> str:
    """The lower-cased URI scheme, ``""`` for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep or "/" in head:
        return ""
    return head.lower()


def scheme_family(uri: str) -> str:
    """``s3``, ``gs``, ``azure``, ``sftp``, ``http`` or ``file`` for ``uri``.

    :raises ValueError: for any other scheme.
    """
    scheme = scheme_of(uri)
    try:
        return SCHEME_FAMILY[scheme]
    except KeyError:
        raise ValueError(
            f"unsupported URI scheme {scheme!r} in {redact_uri(uri)!r}; use a local path, file://, "
            "s3://, gs://, azure://, sftp:// or http(s)://"
        ) from None


def file_host_problem(uri: str, param: str) -> str | None:
    """Why ``uri``, given as ``param``, is a ``file://`` URI naming a host; else ``None``.

    ``file://out/a.mp4`` (two slashes, meant as ``out/a.mp4``) names the host ``out``: its path
    ``/a.mp4``, at the root of the worker's filesystem, is what would be read or written.
    """
    text = str(uri).strip()
    if scheme_of(text) != "file":
        return None
    host = urlsplit(text).netloc
    if host in ("", "localhost"):
        return None
    return (
        f"`{param}` {text!r} names the host {host!r}, which a file:// URI cannot reach: it would be "
        f"{'read from' if param == 'source' else 'written to'} {local_path(text)!r} on this worker; "
        "write file:///abs/path (three slashes) or a plain path"
    )


def object_uri_problem(uri: str, param: str) -> str | None:
    """Why ``uri``, given as ``param``, is an ``s3://``, ``gs://`` or ``azure://`` URI naming no
    object store location smart-open can use; else ``None``.

    * one ``urlsplit`` cannot split (``s3://[b/k.mp4``: an unbalanced ``[``);
    * one naming no bucket (``s3:///k.mp4``, ``gs://``): the store's library fails on it with its
      own words (an ``IndexError`` for ``gs:///k.mp4``), naming no parameter;
    * a ``gs://`` or ``azure://`` one carrying user-info (``gs://user:password@bucket/key``). Only
      S3 URIs can hold credentials (smart-open reads ``KEY:SECRET@``); GCS and Azure take what
      precedes the ``@`` for part of the bucket (container) name: the object is looked for in a
      bucket that does not exist ("does not exist", for an object that does) and the credentials
      go out in the request's path. A password holding ``/``, ``?`` or ``#`` is split there
      between bucket and key (``gs://u:p/w@b/k`` is the bucket ``u:p``): refused alike.
    """
    text = str(uri).strip()
    family = SCHEME_FAMILY.get(scheme_of(text))
    if family not in LITERAL_KEY_FAMILIES:
        return None
    scheme = scheme_of(text)
    try:
        location = object_location(text)
        netloc = _smart_open_split(text).netloc
    except ValueError as err:
        return f"`{param}` {redact_uri(text)!r} cannot be read as a {scheme}:// URI ({err})"
    assert location is not None
    where = "container" if family == "azure" else "bucket"
    if not netloc or not location.bucket:
        return f"`{param}` {redact_uri(text)!r} names no {where}: write {scheme}://<{where}>/<key>"
    if family != "s3" and ("@" in netloc or unencoded_userinfo(text) is not None):
        return (
            f"`{param}` {redact_uri(text)!r} carries credentials before its {where} ('...@'), which "
            f"{scheme}:// URIs cannot use: they would be read as part of its name; remove them and give "
            f"the credentials in `{param}_conn_id`"
        )
    return None


#: A Windows drive (``C:\\``, ``C:/``) or UNC (``\\\\server``) path: on a POSIX worker it is a
#: relative file name, so reading fails with "does not exist" and writing makes a file called
#: ``C:\\out\\`` in the worker's working folder.
_WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]|\\\\")


def windows_path_problem(uri: str, param: str) -> str | None:
    """Why ``uri``, given as ``param``, is a Windows path a POSIX worker cannot use; else ``None``.

    A drive letter or UNC prefix always is; for a ``destination``, so is any backslash (it would
    become part of a file name, not a folder).
    """
    text = str(uri).strip()
    if scheme_of(text) != "":
        return None
    if _WINDOWS_PATH.match(text) or (param == "destination" and "\\" in text):
        return (
            f"`{param}` {text!r} is a Windows path; the worker runs on a POSIX system, where it names "
            "a file in the worker's working folder: give a path with '/' (e.g. '/data/clip.mp4') or a "
            "URI (file://, s3://, gs://, azure://, sftp://)"
        )
    return None


def local_path(uri: str) -> str | None:
    """The filesystem path of a local path or ``file://`` URI, ``None`` for remote ones."""
    scheme = scheme_of(uri)
    if scheme == "":
        return os.path.abspath(os.path.expanduser(uri))
    if scheme == "file":
        # file:///abs/path and file://localhost/abs/path; percent-encoded as Path.as_uri() writes them
        return os.path.abspath(unquote(urlsplit(uri).path))
    return None


def split_userinfo(uri: str) -> tuple[str | None, str]:
    """``(user-info, uri without it)``; user-info is ``None`` when ``uri`` has none.

    An S3 URI's user-info is found as smart-open finds it: everything before the first ``@`` when
    that holds a ``:`` and no ``/`` before it (an AWS secret key often holds ``/``, ``?`` or
    ``#``, which ``urlsplit`` would take for the start of the path, query or fragment: the URI is
    split as smart-open splits it, see :func:`object_location`). Elsewhere it is the network
    location up to its last ``@``. Local paths and ``file://`` URIs have none.

    :raises ValueError: for a URI ``urlsplit`` cannot split (an unbalanced ``[`` in the host).
    """
    scheme = scheme_of(uri)
    if SCHEME_FAMILY.get(scheme) == "file":
        return None, uri
    if SCHEME_FAMILY.get(scheme) == "s3":
        parts = _smart_open_split(uri)  # no query, no fragment: '?' and '#' stay in the path
        userinfo, location = _s3_userinfo(parts.netloc + parts.path)
        if userinfo is None:
            return None, uri
        netloc, slash, path = location.partition("/")
        return userinfo, urlunsplit((parts.scheme, netloc, slash + path, "", ""))
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return None, uri
    userinfo, _, host = parts.netloc.rpartition("@")
    return userinfo, urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


#: Families whose smart-open transport reads everything after the bucket (container) as the key:
#: ``s3://b/take#2.mp4`` is the key ``take#2.mp4``; on Azure up to a ``?`` (the rest is ignored).
LITERAL_KEY_FAMILIES = frozenset({"s3", "gs", "azure"})

#: Schemes whose ``?`` smart-open keeps in the key (``smart_open.utils.WORKAROUND_SCHEMES``); on
#: Azure it starts a query string, which the blob name ends before.
_QUESTION_MARK_IN_KEY = frozenset({"s3", "s3n", "s3a", "gs", "gcs"})
#: smart-open's stand-in for ``?`` while it splits such a URI (``QUESTION_MARK_PLACEHOLDER``).
_QUESTION_MARK_PLACEHOLDER = "///smart_open.utils.QUESTION_MARK_PLACEHOLDER///"
#: smart-open reads an S3 URI's ``versionId`` query parameter as the object's version.
_S3_VERSION_ID = re.compile(r"(?P<sep>[?&])versionId=(?P<value>[^&]*)")


class ObjectLocation(NamedTuple):
    """Where an ``s3://``, ``gs://`` or ``azure://`` URI points, as smart-open reads it."""

    #: The bucket (container); ``$root`` for an Azure blob of the root container (``azure://blob.mp4``).
    bucket: str
    #: The key (blob name) as written: ``%``, ``?``, ``#`` and ``@`` are part of it.
    key: str
    #: The S3 version the URI names (``?versionId=``, taken out of the key), else ``None``.
    version_id: str | None


def object_location(uri: str) -> ObjectLocation | None:
    """The bucket, key and version of an object-store URI, read by the rules of smart-open's
    ``parse_uri`` for its transport (without importing it: that would load the store's library);
    ``None`` for other schemes. This is the one reading of a key: what is named, shown, checked and
    put in lineage is the object smart-open reads or writes.

    * S3: everything after the bucket, raw (``?``, ``#``, ``%`` and ``@`` included), past the
      credentials it may carry (``KEY:SECRET@bucket``), without a ``versionId`` parameter (where
      it stands in the query: first, middle or last); no ``/`` after the bucket gives an empty key.
    * GCS: everything after the bucket, ``?`` and ``#`` included, leading ``/`` removed.
    * Azure: the path after the container up to a ``?``, leading ``/`` removed; ``azure://blob.mp4``
      (no path) is the blob ``blob.mp4`` of the root container ``$root``.

    :raises ValueError: for a URI ``urlsplit`` cannot split (an unbalanced ``[`` in the host).
    """
    family = SCHEME_FAMILY.get(scheme_of(uri))
    if family not in LITERAL_KEY_FAMILIES:
        return None
    parts = _smart_open_split(uri)
    if family == "gs":
        return ObjectLocation(parts.netloc, parts.path.lstrip("/"), None)
    if family == "azure":
        blob = parts.path.lstrip("/")
        if not blob:  # the root container's
            return ObjectLocation("$root", parts.netloc, None)
        return ObjectLocation(parts.netloc, blob, None)
    _, location = _s3_userinfo(parts.netloc + parts.path)
    bucket, _, key = location.partition("/")
    version_id = None
    match = _S3_VERSION_ID.search(key)
    if match:
        version_id = match.group("value")
        after = key[match.end() :]
        if match.group("sep") == "?" and after.startswith("&"):
            after = "?" + after[1:]
        key = key[: match.start()] + after
    return ObjectLocation(bucket, key, version_id)


def _s3_userinfo(location: str) -> tuple[str | None, str]:
    """``(credentials, the rest)`` of what follows ``s3://`` (split as :func:`_smart_open_split`
    splits it), as smart-open's S3 ``parse_uri`` reads it: everything before the first ``@`` when
    it holds a ``:`` and no ``/`` before that ``:`` (a secret key may hold ``/``)."""
    maybe_auth, at, rest = location.partition("@")
    maybe_id, colon, _ = maybe_auth.partition(":")
    if at and colon and "/" not in maybe_id:
        return maybe_auth, rest
    return None, location


def _smart_open_split(uri: str) -> SplitResult:
    """``uri`` split as ``smart_open.utils.safe_urlsplit`` splits it: no fragment (a ``#`` is part
    of the path), and for S3 and GCS no query either (a ``?`` is part of the path)."""
    parts = urlsplit(uri, allow_fragments=False)
    if parts.scheme not in _QUESTION_MARK_IN_KEY or "?" not in uri or _QUESTION_MARK_PLACEHOLDER in uri:
        return parts
    parts = urlsplit(uri.replace("?", _QUESTION_MARK_PLACEHOLDER), allow_fragments=False)
    path = parts.path.replace(_QUESTION_MARK_PLACEHOLDER, "?")
    return SplitResult(parts.scheme, parts.netloc, path, "", "")


def object_key(uri: str) -> str | None:
    """The key of an ``s3://``, ``gs://`` or ``azure://`` URI as smart-open reads it (see
    :func:`object_location`); ``None`` for other schemes.

    :raises ValueError: as :func:`object_location`.
    """
    location = object_location(uri)
    return None if location is None else location.key


def _key_tail(bare: str) -> str:
    """What follows the bucket in ``bare`` (a URI without user-info), its ``/`` included."""
    return bare.partition("://")[2][len(urlsplit(bare).netloc) :]


def _literal_tail(uri: str) -> str | None:
    """What follows the bucket in ``uri`` as written, to show it, when its key is read literally:
    ``None`` for other schemes and for an S3 URI naming a version (a query string there, masked)."""
    location = object_location(uri)
    if location is None or location.version_id is not None:
        return None
    return _key_tail(split_userinfo(uri)[1])


def unencoded_userinfo(uri: str) -> tuple[str, str, str] | None:
    """``(user, password, what follows the '@')`` when ``uri``'s user-info is ``user:password`` with
    a ``/``, ``?`` or ``#`` left unencoded in the password, where ``urlsplit`` ends the host and would
    show the rest of the password as path, query or fragment; ``None`` otherwise (a port is no
    password).
    """
    _, sep, raw = uri.partition("://")
    head, at, rest = raw.partition("@")
    user, colon, password = head.partition(":")
    if not (sep and at and colon) or re.search(r"[/?#]", user) or not re.search(r"[/?#]", password):
        return None
    if re.match(r"\d*(?:[/?#]|$)", password):  # host:port/path with an '@' further on
        return None
    return user, password, rest


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
    broken = unencoded_userinfo(uri)
    if broken is not None:
        user, _, rest = broken
        shown = redact_uri(f"{scheme_of(uri)}://{rest}").partition("://")[2]
        login = f"{user}:{MASK}@" if scheme_of(uri) in LOGIN_SCHEMES and user else f"{MASK}@"
        return f"{uri.partition('://')[0]}://{login}{shown}"
    try:
        userinfo, bare = split_userinfo(uri)
        parts = urlsplit(bare)
    except ValueError:  # e.g. an unbalanced "[" in the host: show nothing after the scheme
        return f"{uri.partition('://')[0]}://{MASK}"
    netloc = parts.netloc
    if userinfo is not None:
        host = netloc
        user, has_password, _ = userinfo.partition(":")
        if scheme_of(uri) in LOGIN_SCHEMES and user:
            # A login name, needed to use the URI again: only the password is a secret.
            netloc = f"{user}:{MASK}@{host}" if has_password else f"{user}@{host}"
        else:  # elsewhere a lone user-info is often a token (https://<token>@host)
            netloc = f"{MASK}@{host}"
    query = MASK if parts.query else ""
    tail = _literal_tail(bare)
    if tail is not None:
        # The key is shown as it is read, '?' and '#' included (Azure ignores what follows a '?').
        if scheme_of(uri) == "azure" and "?" in tail:
            return f"{parts.scheme}://{netloc}{tail.partition('?')[0]}?{MASK}"
        return f"{parts.scheme}://{netloc}{tail}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
