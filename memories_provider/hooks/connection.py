"""The ``memories`` connection: its fields, its form, and how it becomes client settings.

Parsing is kept apart from the hook so it can be checked without Airflow's metadata DB and
so every error names the connection field a user has to fix. Airflow imports this module while
discovering providers (``get_provider_info``): it must stay free of the client stack.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from memories_provider.redaction import MIN_FRAGMENT, NO_SECRETS

DEFAULT_HOST = "https://api.memories.ai"
DEFAULT_V2_HOST = "https://mavi-backend.memories.ai"
V1_PATH = "/serve/api/v1"
V2_PATH = "/serve/api/v2"
#: The real service's domain: its hosts are only ever spoken to over https.
_SERVICE_DOMAIN = "memories.ai"
DEFAULT_TIMEOUT = 60.0
#: The service stores an upload (or fetches the URL) before answering; a timed-out upload is
#: not retried, and an Airflow task retry could then create a second billed video.
DEFAULT_UPLOAD_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_UNIQUE_ID = "default"
#: The connection id the hook, operators, sensor and trigger use unless told otherwise.
DEFAULT_CONN_ID = "memories_default"


#: Airflow's Test button (the 3.x API server, the 2.x REST API) tests a copy of the form under a
#: random 8-character id that it exports as ``AIRFLOW_CONN_<ID>`` for the duration of the test.
_TEST_COPY_ID = re.compile(r"[A-Za-z0-9]{8}")


def is_test_copy(conn_id: str) -> bool:
    """Whether ``conn_id`` is the temporary id Airflow's Test button gave the connection.

    Its ids mix upper and lower case (``PeBmcEub``); ids people choose are lower case.
    """
    return (
        bool(_TEST_COPY_ID.fullmatch(conn_id))
        and conn_id != conn_id.lower()
        and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ
    )


def connection_label(conn_id: str) -> str:
    """``Connection 'id'``, or ``This connection`` under the Test button's temporary id, which
    would mean nothing to the user (so is an 8-character mixed-case id defined in the environment)."""
    return "This connection" if is_test_copy(conn_id) else f"Connection {conn_id!r}"


class MemoriesConnectionConfigError(ValueError):
    """A ``memories`` connection is misconfigured; the message names the connection and the field.

    It never quotes the API key, nor the value of a field validated for the key's sake (a key
    pasted into the wrong field must not be shown either).
    """


@dataclass(frozen=True)
class MemoriesConnectionConfig:
    """Client settings read from a ``memories`` connection.

    :param api_key: the API key (connection field *API key*, i.e. ``password``). Hidden from ``repr``.
    :param base_url: v1 base URL including ``/serve/api/v1``.
    :param v2_base_url: v2 base URL including ``/serve/api/v2``.
    :param timeout: read timeout of each request, in seconds.
    :param upload_timeout: seconds to wait for the answer to an upload (``upload``/``upload_url``)
        once it is sent; the client never waits less than ``timeout``.
    :param max_retries: retries after a failed attempt (see ``RetryPolicy``).
    :param unique_id: default namespace (``unique_id``) for calls that do not name one.
    :param blob_download_api: which endpoint ``bucket``+``blob`` downloads use, ``"v2"`` or ``"v1"``.
    :param ca_bundle: a file (or folder) of PEM certificates to verify https hosts against instead of
        the default store (see :mod:`memories_provider.client.tls`), or ``None``.
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_HOST + V1_PATH
    v2_base_url: str = DEFAULT_V2_HOST + V2_PATH
    timeout: float = DEFAULT_TIMEOUT
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    unique_id: str = DEFAULT_UNIQUE_ID
    blob_download_api: Literal["v1", "v2"] = "v2"
    ca_bundle: str | None = None

    def __repr__(self) -> str:
        return (
            f"MemoriesConnectionConfig(base_url={self.base_url!r}, v2_base_url={self.v2_base_url!r}, "
            f"timeout={self.timeout!r}, upload_timeout={self.upload_timeout!r}, "
            f"max_retries={self.max_retries!r}, unique_id={self.unique_id!r}, "
            f"blob_download_api={self.blob_download_api!r}, ca_bundle={self.ca_bundle!r}, api_key='***')"
        )


def _shown(value: str) -> str:
    """``value`` quoted for an error, unless it could be a key pasted into the wrong field: a value
    with neither ``://`` nor a ``.`` or ``:`` in what would be its host is not shown."""
    head = re.split(r"[/?#]", value, maxsplit=1)[0]
    if "://" not in value and "." not in head and ":" not in head:
        return "a value that is not one (not shown: it may be a key pasted into the wrong field)"
    return repr(NO_SECRETS.redact(value))


def _shown_setting(value: Any) -> str:
    """A setting's value quoted for an error when it is short; a longer one is not shown: it may
    be the API key pasted into the wrong field, and Airflow's secret masker would not recognise it
    once changed (``blob_download_api`` is lower-cased before it is checked)."""
    text = str(value)
    if len(text) < MIN_FRAGMENT:
        return repr(value)
    return f"a value of {len(text)} characters (not shown: it may be a key pasted into the wrong field)"


def _origin(value: str, *, conn_id: str, field_name: str) -> str:
    # The Host is a standard field; v2_host an extra, named as the other extras are.
    where = "field 'host'" if field_name == "host" else f"extra {field_name!r}"
    example = DEFAULT_HOST if field_name == "host" else DEFAULT_V2_HOST
    value = value.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a port out of range or not a number)
    except ValueError:
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: {where} is not a URL: its port is not a "
            "number from 1 to 65535, or a bracket of an IPv6 address is missing"
        ) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: {where} must be an http(s) URL with a scheme, "
            f"e.g. {example!r}, got {_shown(value)}"
        )
    if "?" in value or "#" in value:
        # The API paths are appended to it: a query would end up in the middle of every URL. Not
        # quoted: a query is where a key pasted in ("?api_key=...") would be.
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: {where} must not contain a query ('?') or a "
            f"fragment ('#'); give only the origin, e.g. {example!r}"
        )
    if "@" in parts.netloc:
        # The API authenticates by the key alone; user-info would only travel into logs and lineage.
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: {where} must not contain 'user:password@' "
            "(put the API key in the password field)"
        )
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() == "http" and (host == _SERVICE_DOMAIN or host.endswith("." + _SERVICE_DOMAIN)):
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: {where} must use https:// for memories.ai "
            "(over http:// the API key would travel unencrypted)"
        )
    # Scheme and host name are case-insensitive: 'HTTPS://API.memories.ai' is the real service too.
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()


def _api_url(origin: str, path: str) -> str:
    # A host may already carry the API path (e.g. copied from the docs); don't append it twice.
    return origin if origin.endswith(path) else origin + path


def _extra(extra: dict[str, Any], name: str) -> Any:
    # Airflow 2 forms stored extras as ``extra__<conn_type>__<name>``; accept both spellings.
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__memories__{name}")
    return None if value in (None, "") else value


def _seconds(extra: dict[str, Any], name: str, default: float, *, conn_id: str) -> float:
    raw = _extra(extra, name)
    problem = f"{connection_label(conn_id)}: extra {name!r} must be a finite number of seconds > 0"
    if isinstance(raw, bool):
        raise MemoriesConnectionConfigError(problem)
    try:
        seconds = default if raw is None else float(raw)
    except (TypeError, ValueError, OverflowError):
        raise MemoriesConnectionConfigError(problem) from None
    # "inf" and "nan" parse as floats; an infinite timeout ends in urllib3's OverflowError.
    if not (math.isfinite(seconds) and seconds > 0):
        raise MemoriesConnectionConfigError(problem)
    return seconds


def config_from_connection(
    *,
    conn_id: str,
    password: str | None,
    host: str | None,
    port: int | None,
    extra: dict[str, Any] | None,
    schema: str | None = None,
) -> MemoriesConnectionConfig:
    """Validate a ``memories`` connection's fields and turn them into client settings.

    :param conn_id: the connection id, quoted in errors.
    :param password: the API key.
    :param host: v1 origin with scheme (a path is allowed); empty means ``https://api.memories.ai``.
    :param port: optional port added to ``host``.
    :param extra: the connection's extras (``v2_host``, ``timeout``, ``upload_timeout``,
        ``max_retries``, ``unique_id``, ``blob_download_api``, ``ca_bundle``): a JSON object, or ``None``.
    :param schema: the path of a URI-form connection (``memories://https://:key@host/prefix``), which
        Airflow stores apart from the host (the form hides the field): appended to the host's path.
    :raises MemoriesConnectionConfigError: naming the connection and the field that is wrong.
    """
    # Imported here: get_provider_info imports this module during provider discovery, and the
    # client package brings aiohttp and requests with it.
    from memories_provider.client.protocol import api_key_problem

    # The header's own words pasted along with the key (the API takes the raw key, no "Bearer").
    prefix = re.match(r"\s*(bearer|authorization\s*:)\s", password or "", re.IGNORECASE)
    stripped = (password or "").strip()
    # Quotes copied along with the key (from JSON, a shell line, a .env file) would be sent in the header.
    quoted = len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'`"
    problem = (
        f"starts with {prefix.group(1)!r}: give the raw key ('sk-...') alone"
        if prefix
        else "is wrapped in quotes: give the key without them"
        if quoted
        else api_key_problem(password or "")
    )
    if problem is not None:
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: the API key (field 'password') {problem}"
        )
    api_key = str(password).strip()
    if extra is None:  # the JSON "null"
        extra = {}
    if not isinstance(extra, dict):
        # Airflow passes on whatever JSON the field holds; a list or a string has no named settings.
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: field 'extra' must be a JSON object such as "
            f'{{"unique_id": "team-a"}}, got a JSON {_json_kind(extra)}'
        )

    host = host or DEFAULT_HOST
    if schema and schema.strip("/"):
        # Airflow splits a URI's path off into the schema: "memories://https://:key@proxy/memories"
        # has host "https://proxy" and schema "memories". Without it the prefix was dropped unseen.
        host = f"{host.strip().rstrip('/')}/{schema.strip('/')}"
    origin = _with_port(_origin(host, conn_id=conn_id, field_name="host"), port, conn_id=conn_id)
    _not_the_other_api(origin, conn_id=conn_id, field_name="host", own=V1_PATH)

    v2_origin = _v2_origin(extra, origin, conn_id=conn_id)
    if _extra(extra, "v2_host") is not None:
        _not_the_other_api(v2_origin, conn_id=conn_id, field_name="v2_host", own=V2_PATH)

    timeout = _seconds(extra, "timeout", DEFAULT_TIMEOUT, conn_id=conn_id)
    upload_timeout = _seconds(extra, "upload_timeout", DEFAULT_UPLOAD_TIMEOUT, conn_id=conn_id)

    max_retries = _max_retries(extra, conn_id=conn_id)
    unique_id = _unique_id(extra, conn_id=conn_id)
    api = _blob_download_api(extra, conn_id=conn_id)

    return MemoriesConnectionConfig(
        api_key=api_key,
        base_url=_api_url(origin, V1_PATH),
        v2_base_url=_api_url(v2_origin, V2_PATH),
        timeout=timeout,
        upload_timeout=upload_timeout,
        max_retries=max_retries,
        unique_id=unique_id,
        blob_download_api="v1" if api == "v1" else "v2",
        ca_bundle=_ca_bundle(extra, conn_id=conn_id),
    )


#: For each API path, the real service's host of that API and, for the other one, its host and path.
_OTHER_API = {
    V1_PATH: (
        urlsplit(DEFAULT_HOST).hostname,
        V2_PATH,
        urlsplit(DEFAULT_V2_HOST).hostname,
        "extra 'v2_host'",
    ),
    V2_PATH: (urlsplit(DEFAULT_V2_HOST).hostname, V1_PATH, urlsplit(DEFAULT_HOST).hostname, "field 'host'"),
}


def _not_the_other_api(origin: str, *, conn_id: str, field_name: str, own: str) -> None:
    """Refuse an origin that belongs to the other API version: its base URL (``…/serve/api/v2`` in
    the v1 host, ``…/serve/api/v1`` in ``v2_host``) or the real service's host of the other API.

    Appended to, such a URL gives ``…/serve/api/v1/serve/api/v2``; the real service's v1 host does
    not serve v2 (and the reverse): every call would end in a 404 that names no field.
    """
    own_host, other_path, other_host, other_field = _OTHER_API[own]
    parts = urlsplit(origin)
    where = "field 'host'" if field_name == "host" else f"extra {field_name!r}"
    if parts.path.rstrip("/").endswith(other_path) or (
        parts.hostname == other_host and parts.hostname != own_host
    ):
        version, other_version = ("v1", "v2") if own == V1_PATH else ("v2", "v1")
        example = DEFAULT_HOST if own == V1_PATH else DEFAULT_V2_HOST
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: {where} must be the {version} API's origin, e.g. "
            f"{example!r}; it names the {other_version} API ({other_path} or its host), which "
            f"belongs in {other_field}"
        )


def _json_kind(value: Any) -> str:
    """The JSON type name of a decoded value (never the value: it could hold the key)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def _with_port(origin: str, port: int | None, *, conn_id: str) -> str:
    """``origin`` with the connection's Port added, unless the host already names one."""
    parts = urlsplit(origin)
    if not port or parts.port is not None:
        return origin
    if not 0 < int(port) <= 65535:
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: field 'port' must be a number from 1 to 65535 (or empty)"
        )
    return parts._replace(netloc=f"{parts.netloc}:{int(port)}").geturl()


def _v2_origin(extra: dict[str, Any], origin: str, *, conn_id: str) -> str:
    """The v2 API's origin: extra ``v2_host``, else the real service's v2 host or the v1 host."""
    v2_host = _extra(extra, "v2_host")
    if v2_host is None:
        # The host may be given as the v1 base URL (copied from the docs): v2 is beside it.
        base = origin.removesuffix(V1_PATH)
        # The real service splits v1 and v2 across two hosts; anything else (a proxy, the
        # emulator) serves both from the v1 host, so don't send v2 calls to the real service.
        return DEFAULT_V2_HOST if base == DEFAULT_HOST else base
    return _origin(str(v2_host), conn_id=conn_id, field_name="v2_host")


def _unique_id(extra: dict[str, Any], *, conn_id: str) -> str:
    """Extra ``unique_id``: a name that is not blank (default :data:`DEFAULT_UNIQUE_ID`)."""
    raw = _extra(extra, "unique_id")
    if raw is None:
        return DEFAULT_UNIQUE_ID
    # The service refuses a blank one on every call; a JSON object would be sent as its repr.
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or not str(raw).strip():
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: extra 'unique_id' must be a name that is not blank, "
            f"e.g. 'team-a' (or empty for {DEFAULT_UNIQUE_ID!r})"
        )
    return str(raw)


def _max_retries(extra: dict[str, Any], *, conn_id: str) -> int:
    """Extra ``max_retries``: a whole number >= 0 (default :data:`DEFAULT_MAX_RETRIES`)."""
    raw = _extra(extra, "max_retries")
    try:
        max_retries = DEFAULT_MAX_RETRIES if raw is None else int(str(raw))
    except ValueError:
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: extra 'max_retries' must be a whole number, "
            f"got {_shown_setting(raw)}"
        ) from None
    if not 0 <= max_retries <= MAX_FORM_RETRIES:
        # The form's bound holds for connections from env vars and secrets backends too: with
        # backoff capped at 60 s, 10**9 retries turn a lasting outage into a task that never ends.
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: extra 'max_retries' must be a whole number from 0 to "
            f"{MAX_FORM_RETRIES}, got {max_retries}"
        )
    return max_retries


def _ca_bundle(extra: dict[str, Any], *, conn_id: str) -> str | None:
    """Extra ``ca_bundle``: the path of a file (or folder) of PEM certificates on this machine."""
    raw = _extra(extra, "ca_bundle")
    if raw is None:
        return None
    label = f"{connection_label(conn_id)}: extra 'ca_bundle'"
    if not isinstance(raw, str) or not raw.strip():
        raise MemoriesConnectionConfigError(
            f"{label} must be the path of a file of PEM certificates, e.g. '/etc/ssl/certs/corp-ca.pem'"
        )
    path = raw.strip()
    if not os.path.exists(path):
        # A path is quoted (the folder to look in); a value without a '/' may be a key pasted there.
        shown = repr(path) if "/" in path or os.sep in path else _shown_setting(path)
        raise MemoriesConnectionConfigError(
            f"{label} names no file or folder on this machine: {shown} (it must be readable "
            "wherever tasks, triggers and the Test button run)"
        )
    return path


def _blob_download_api(extra: dict[str, Any], *, conn_id: str) -> str:
    """Extra ``blob_download_api``: ``v1`` or ``v2`` (default)."""
    api = str(_extra(extra, "blob_download_api") or "v2").strip().lower()
    if api not in ("v1", "v2"):
        raise MemoriesConnectionConfigError(
            f"{connection_label(conn_id)}: extra 'blob_download_api' must be 'v1' or 'v2', "
            f"got {_shown_setting(api)}"
        )
    return api


#: The form refuses a timeout under a second (the client accepts any > 0, e.g. from an env var).
MIN_FORM_TIMEOUT = 1
#: Most retries the form accepts: with backoff, more would outlast any sensible task.
MAX_FORM_RETRIES = 20

#: Form metadata, shared by provider info (Airflow >= 3.2 reads it declaratively) and the hook's
#: ``get_connection_form_widgets``/``get_ui_field_behaviour`` (what Airflow 2.11 calls). Airflow
#: 3.3's form honours ``minimum``/``maximum`` (number inputs), ``enum`` (a select),
#: ``minLength``/``maxLength`` and ``examples`` (suggestions) — not ``pattern`` or ``format``.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "v2_host": {
        "label": "v2 host",
        "description": "Origin of the v2 API (asset/blob downloads), an http(s) URL such as "
        f"{DEFAULT_V2_HOST}. Empty: that one with the default host, else the host above.",
        "schema": {
            "type": ["string", "null"],
            "format": "uri",
            "pattern": "^https?://[^/@\\s]+",
            "minLength": len("http://x"),
            "examples": [DEFAULT_V2_HOST],
        },
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Read timeout of each request: its answer arrives whole within it (a "
        f"download's body: between reads), at least {MIN_FORM_TIMEOUT} s "
        f"(default {DEFAULT_TIMEOUT:g}).",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT, "minimum": MIN_FORM_TIMEOUT},
    },
    "upload_timeout": {
        "label": "Upload timeout (seconds)",
        "description": "How long to wait for the answer to an upload once it is sent (the service "
        f"stores the video, or fetches the URL, first). Never shorter than the timeout "
        f"(default {DEFAULT_UPLOAD_TIMEOUT:g}).",
        "schema": {
            "type": ["number", "null"],
            "default": DEFAULT_UPLOAD_TIMEOUT,
            "minimum": MIN_FORM_TIMEOUT,
        },
    },
    "max_retries": {
        "label": "Retry limit",
        "description": "Retries of a failed call (connection errors, 5xx, rate limits) with backoff: "
        f"a whole number from 0 to {MAX_FORM_RETRIES} (default {DEFAULT_MAX_RETRIES}).",
        "schema": {
            "type": ["integer", "null"],
            "default": DEFAULT_MAX_RETRIES,
            "minimum": 0,
            "maximum": MAX_FORM_RETRIES,
            "multipleOf": 1,
        },
    },
    "unique_id": {
        "label": "Default unique_id",
        "description": "Namespace used when a task does not pass unique_id.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_UNIQUE_ID, "minLength": 1},
    },
    "blob_download_api": {
        "label": "Blob download API",
        "description": "Endpoint for bucket+blob downloads: v2 (when empty) or v1.",
        # No default: the form would save "v2", and Airflow 3 registers every string extra with
        # the secret masker, which warns "too short (<5 chars)" at the top of every task log.
        "schema": {"type": ["string", "null"], "enum": [None, "v2", "v1"]},
    },
    "ca_bundle": {
        "label": "CA bundle (path)",
        "description": "File of PEM certificates that signed the host's certificate (a corporate "
        "CA, a TLS-inspecting proxy's), on every machine that runs tasks. Empty: REQUESTS_CA_BUNDLE "
        "if set, else the system store and certifi. Verification cannot be turned off.",
        "schema": {"type": ["string", "null"], "minLength": 1, "examples": ["/etc/ssl/certs/corp-ca.pem"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema"],
    "relabeling": {"password": "API key", "host": "Host (v1 API origin)"},
    # Airflow 3.3 shows placeholders of the standard fields only; 2.11 of the extras too.
    "placeholders": {
        "host": DEFAULT_HOST,
        "password": "sk-...",
        "port": "(optional: in the host URL, or empty)",
        "extra": '{"v2_host": "...", "timeout": 60} (or use the fields below)',
        "description": "e.g. memories.ai production account",
        "v2_host": DEFAULT_V2_HOST,
        "timeout": f"{DEFAULT_TIMEOUT:g}",
        "upload_timeout": f"{DEFAULT_UPLOAD_TIMEOUT:g}",
        "max_retries": str(DEFAULT_MAX_RETRIES),
        "unique_id": DEFAULT_UNIQUE_ID,
        "blob_download_api": "v2 or v1",
        "ca_bundle": "/etc/ssl/certs/corp-ca.pem",
    },
}
