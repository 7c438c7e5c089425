"""smart-open ``transport_params`` from Airflow connections, and validation of users' own.

smart-open logs and drops ``transport_params`` keys it does not know, so a typo would silently
fall back to default credentials: every key is checked against the scheme's transport here.
Storage providers (amazon, google, sftp) are imported only when a connection of theirs is used.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from memories_provider.redaction import CREDENTIAL_PARAM
from memories_provider.storage.uris import (
    LOGIN_SCHEMES,
    object_location,
    redact_uri,
    scheme_family,
    scheme_of,
    split_userinfo,
    unencoded_userinfo,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

#: transport_params each scheme's smart-open transport accepts (the keyword arguments of its ``open``).
ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "s3": frozenset(
        {
            "version_id",
            "buffer_size",
            "min_part_size",
            "multipart_upload",
            "defer_seek",
            "client",
            "client_kwargs",
            "writebuffer",
            "range_chunk_size",
        }
    ),
    "gs": frozenset({"min_part_size", "client", "get_blob_kwargs", "blob_properties", "blob_open_kwargs"}),
    "azure": frozenset({"client", "blob_kwargs", "buffer_size", "min_part_size", "max_concurrency"}),
    "sftp": frozenset(
        {"host", "user", "password", "port", "connect_kwargs", "prefetch_kwargs", "buffer_size"}
    ),
    "http": frozenset(
        {"kerberos", "user", "password", "cert", "headers", "timeout", "session", "buffer_size"}
    ),
    "file": frozenset(),
}
#: Seconds an HTTP(S) read may stall: smart-open's HTTP transport has no timeout by default.
HTTP_TIMEOUT = 60.0
#: Seconds an SFTP source's read may wait for its answer when the connection sets no ``timeout``:
#: paramiko waits forever by default.
SFTP_TIMEOUT = 60.0


def validate_transport_params(uri: str, transport_params: dict[str, Any] | None) -> dict[str, Any]:
    """Check every key of ``transport_params`` is one the transport of ``uri`` understands.

    :raises ValueError: naming ``transport_params`` and the unknown key.
    """
    if transport_params is None:
        return {}
    if not isinstance(transport_params, dict):
        raise ValueError(f"`transport_params` must be a dict, got {type(transport_params).__name__}")
    family = scheme_family(uri)
    unknown = sorted(set(transport_params) - ALLOWED_KEYS[family])
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_KEYS[family])) or "none"
        raise ValueError(
            f"`transport_params` key {unknown[0]!r} is not understood by smart-open for {family}:// URIs "
            f"(allowed: {allowed})"
        )
    return dict(transport_params)


#: For each storage family: the module its transport cannot work without, and the extra that installs it.
_LIBRARIES: dict[str, tuple[str, str, str]] = {
    "s3": ("boto3", "boto3", "s3"),
    "gs": ("google.cloud.storage", "google-cloud-storage", "gcs"),
    "azure": ("azure.storage.blob", "azure-storage-blob", "azure"),
    "sftp": ("paramiko", "paramiko", "sftp"),
}


def require_library(uri: str, param: str) -> None:
    """Raise ``ValueError`` naming ``param``, the library and the extra to install when the storage
    library ``uri`` needs is missing — before a connection is read or anything is sent.

    Without it, a missing library showed as another problem (no Azure credentials), as smart-open's
    advice (``pip install smart_open[ssh]``), or as a raw ``ModuleNotFoundError``.
    """
    family = scheme_family(uri)
    if family not in _LIBRARIES:
        return
    module, package, extra = _LIBRARIES[family]
    try:
        importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"`{param}` {redact_uri(uri)!r} needs {package} for {scheme_of(uri)}:// URIs, which is not "
            f"installed: pip install 'airflow-provider-memories[{extra}]'"
        ) from None


def transport_params_for(
    uri: str,
    *,
    conn_id: str | None,
    transport_params: dict[str, Any] | None,
    conn_param: str = "conn_id",
) -> dict[str, Any]:
    """smart-open ``transport_params`` to open ``uri``: credentials from ``conn_id``, then the user's.

    The user's ``transport_params`` win over what the connection provides. Without a connection,
    the library's default credential chain applies (e.g. boto3's environment/instance profile).

    :param uri: the storage URI to open.
    :param conn_id: Airflow connection holding credentials (aws, google_cloud_platform, wasb/azure,
        ssh/sftp), or ``None``.
    :param transport_params: extra smart-open parameters; validated per scheme.
    :param conn_param: the operator parameter naming the connection, quoted in errors.
    """
    require_library(uri, conn_param.removesuffix("_conn_id"))
    user = validate_transport_params(uri, transport_params)
    family = scheme_family(uri)
    params: dict[str, Any] = {}
    if conn_id:
        params = _from_connection(uri, family, conn_id, conn_param)
    elif family == "azure" and "client" not in user:
        params = _azure_default_client()
    elif family == "s3" and "client" not in user:
        params = {"client": _s3_default_client(user.get("client_kwargs"))}
    if family == "http":
        params.setdefault("timeout", HTTP_TIMEOUT)
    params.update(user)
    if family == "http" and isinstance(params.get("headers"), Mapping):
        # The user's headers replace smart-open's own {"Accept-Encoding": "identity"}: without it
        # the GET accepts gzip and reads compressed bytes, of another length than the size looked up.
        params["headers"] = {"Accept-Encoding": "identity", **params["headers"]}
    if family != "file":
        mask_credentials(uri, params)
    return params


def mask_credentials(uri: str, params: dict[str, Any] | None = None) -> None:
    """Register the secrets of a storage URI with Airflow's secret masker, before anything is opened.

    The URI's password (``sftp://user:pw@host``), a lone user name outside SSH URIs
    (``https://<token>@host``), its query string, the query values named like
    credentials (presigned signatures and tokens, SAS ``sig``), a ``password`` in ``params`` and
    a ``password`` or ``passphrase`` in its ``connect_kwargs`` (SFTP): whatever a storage library
    then logs or puts in an exception (smart-open logs its arguments at DEBUG) is masked in task
    logs. Airflow registers connection passwords itself when it reads
    them. What the provider shows itself goes through
    :func:`~memories_provider.storage.uris.redact_uri`.
    """
    from airflow.providers.common.compat.sdk import mask_secret

    try:
        userinfo, bare = split_userinfo(uri)
        parts = urlsplit(bare)
    except ValueError:  # not a URI we can split: nothing to find in it
        return
    username, has_password, password_text = (userinfo or "").partition(":")
    password = password_text if has_password else None
    broken = unencoded_userinfo(uri) if userinfo is None else None
    if broken is not None:  # 'gs://u:p/w@b/k': urlsplit ends the host inside the password
        username, password, _ = broken
    query = parts.query
    location = object_location(bare)
    if location is not None and location.version_id is None and scheme_family(bare) in ("s3", "gs"):
        query = ""  # a '?' there is part of the key smart-open reads, not a query string
    secrets = [password, unquote(password or ""), query]
    if username and password is None and parts.scheme.lower() not in LOGIN_SCHEMES:
        secrets.append(username)  # https://<token>@host: a lone user-info is often a token
    # Single values only where the name says credential: masking "video" everywhere would hurt.
    secrets += [value for name, value in parse_qsl(query) if CREDENTIAL_PARAM.search(name)]
    if params:
        # SFTP: a password at the top or in paramiko's connect_kwargs, a key file's passphrase.
        connect = params.get("connect_kwargs")
        connect = connect if isinstance(connect, dict) else {}
        secrets += [params.get("password"), connect.get("password"), connect.get("passphrase")]
    for secret in dict.fromkeys(s for s in secrets if isinstance(s, str) and s):
        mask_secret(secret)


def mask_uri_secrets(value: object) -> None:
    """:func:`mask_credentials` for a value a user gave as a URI (a template field): nothing for a
    local path, a ``file://`` URI or a value that is no string (a ``?`` or ``@`` in a file name is
    part of the name, not a credential)."""
    if isinstance(value, str) and scheme_of(value) not in ("", "file"):
        mask_credentials(value)


def require_connection(conn_id: str, conn_param: str) -> Connection:
    """``conn_id``'s Airflow connection; fail unless it is defined.

    Some hooks (S3Hook) fall back to the environment's default credentials for an unknown
    connection: reading or writing with credentials nobody chose is worse than failing.

    :raises ValueError: naming ``conn_param``.
    """
    from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ValueError(f"`{conn_param}`={conn_id!r} is not a defined Airflow connection") from None


def _from_connection(uri: str, family: str, conn_id: str, conn_param: str) -> dict[str, Any]:
    conn = require_connection(conn_id, conn_param)
    if family == "s3":
        return {"client": _s3_client(conn_id, conn_param)}
    if family == "gs":
        return {"client": _gcs_client(conn_id, conn_param)}
    if family == "azure":
        return {"client": _azure_client(conn)}
    if family == "sftp":
        return _sftp_params(uri, conn)
    if family == "http":
        return {"user": conn.login, "password": conn.password} if conn.login else {}
    raise ValueError(f"`{conn_param}` is not used for local paths; remove it or use a remote URI")


def _missing_provider(conn_param: str, conn_id: str, package: str) -> ValueError:
    return ValueError(
        f"`{conn_param}`={conn_id!r} needs the Airflow provider {package!r}: pip install {package}"
    )


def _s3_client(conn_id: str, conn_param: str) -> Any:
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError:
        raise _missing_provider(conn_param, conn_id, "apache-airflow-providers-amazon") from None
    # One client for the whole transfer: smart-open would otherwise build its own per open().
    return S3Hook(aws_conn_id=conn_id).get_conn()


def _gcs_client(conn_id: str, conn_param: str) -> Any:
    try:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook
    except ImportError:
        raise _missing_provider(conn_param, conn_id, "apache-airflow-providers-google") from None
    return GCSHook(gcp_conn_id=conn_id).get_conn()


def _azure_client(conn: Connection) -> Any:
    """A BlobServiceClient from a ``wasb``/``azure`` connection, without requiring the Azure provider.

    Follows WasbHook's conventions, in its order: extra ``connection_string``; extra ``tenant_id``
    (a service principal: login = client id, password = client secret); extra ``sas_token``;
    password = account key (login = account name); else ``DefaultAzureCredential``.
    """
    from azure.storage.blob import BlobServiceClient

    conn_id, extra = conn.conn_id, conn.extra_dejson

    def pick(name: str) -> Any:
        return extra.get(name) or extra.get(f"extra__wasb__{name}")

    if conn_str := pick("connection_string"):
        return BlobServiceClient.from_connection_string(conn_str)
    if tenant_id := pick("tenant_id"):
        return BlobServiceClient(
            account_url=_service_principal_account_url(conn, pick, conn_id),
            credential=_client_secret_credential(conn, tenant_id, pick("client_secret_auth_config"), conn_id),
        )
    if sas := pick("sas_token"):
        url = sas if sas.startswith("http") else f"https://{conn.login}.blob.core.windows.net?{sas}"
        return BlobServiceClient(account_url=url)
    account_url = conn.host or f"https://{conn.login}.blob.core.windows.net"
    if not account_url.startswith("http"):
        account_url = f"https://{account_url}"
    if conn.password:
        return BlobServiceClient(
            account_url=account_url,
            credential={"account_name": conn.login or "", "account_key": conn.password},
        )
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url=account_url, credential=DefaultAzureCredential())


def _service_principal_account_url(conn: Any, pick: Callable[[str], Any], conn_id: str) -> str:
    # The login is the client id here, so the account must come from host or the extras.
    account = conn.host or pick("account_url") or pick("account_name")
    if not account:
        raise ValueError(
            f"wasb connection {conn_id!r} has extra 'tenant_id' (service principal, login = client id): "
            "give the storage account in its host or in extra 'account_url' or 'account_name'"
        )
    account = str(account).rstrip("/")
    if account.startswith(("http://", "https://")):
        return account
    if "." in account:  # a DNS name without the scheme
        return f"https://{account}"
    return f"https://{account}.blob.core.windows.net"


def _client_secret_credential(conn: Any, tenant_id: str, options: Any, conn_id: str) -> Any:
    if not conn.login or not conn.password:
        raise ValueError(
            f"wasb connection {conn_id!r} has extra 'tenant_id' (service principal): its login must be "
            "the client (application) id and its password the client secret"
        )
    try:
        from azure.identity import ClientSecretCredential
    except ImportError:
        raise ValueError(
            f"wasb connection {conn_id!r} uses a service principal (extra 'tenant_id'), which needs "
            "azure-identity: pip install azure-identity"
        ) from None
    if options is not None and not isinstance(options, dict):
        raise ValueError(
            f"wasb connection {conn_id!r}: extra 'client_secret_auth_config' must be a JSON object"
        )
    return ClientSecretCredential(
        tenant_id=tenant_id, client_id=conn.login, client_secret=conn.password, **(options or {})
    )


def _s3_default_client(client_kwargs: dict[str, Any] | None) -> Any:
    """The client smart-open would build for each open (its settings, then the user's
    ``client_kwargs["S3.Client"]``), built once: whatever uses these params shares it."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ValueError("s3:// URIs need boto3: pip install 'airflow-provider-memories[s3]'") from None
    retries: Any = {"max_attempts": 6, "mode": "adaptive"}
    settings = {
        "config": Config(max_pool_connections=64, tcp_keepalive=True, retries=retries),
        **((client_kwargs or {}).get("S3.Client") or {}),
    }
    return boto3.client("s3", **settings)


def _azure_default_client() -> dict[str, Any]:
    # smart-open's Azure transport has no default chain: it needs a client.
    import os

    if conn_str := os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        from azure.storage.blob import BlobServiceClient

        return {"client": BlobServiceClient.from_connection_string(conn_str)}
    raise ValueError(
        "azure:// URIs need credentials: pass a connection id (wasb/azure), "
        "transport_params={'client': BlobServiceClient(...)}, or set AZURE_STORAGE_CONNECTION_STRING"
    )


def _sftp_params(uri: str, conn: Connection) -> dict[str, Any]:
    extra = conn.extra_dejson
    parts = urlsplit(uri)
    params: dict[str, Any] = {}
    # What the URI spells out wins; the connection fills the gaps.
    if not parts.username and conn.login:
        params["user"] = conn.login
    if not parts.port and conn.port:
        params["port"] = int(conn.port)
    if not parts.password and conn.password:
        params["password"] = conn.password
    connect: dict[str, Any] = {}
    if key_file := extra.get("key_file"):
        connect["key_filename"] = key_file
    if private_key := extra.get("private_key"):
        connect["pkey"] = _load_private_key(private_key, extra.get("private_key_passphrase"))
    if connect:
        connect["look_for_keys"] = False
        connect["allow_agent"] = False
    if timeout := extra.get("conn_timeout") or extra.get("timeout"):
        connect["timeout"] = float(timeout)
    if connect:
        params["connect_kwargs"] = connect
    return params


def _load_private_key(pem: str, passphrase: str | None) -> Any:
    import paramiko

    for key_class in (paramiko.RSAKey, paramiko.Ed25519Key, paramiko.ECDSAKey):
        try:
            return key_class.from_private_key(io.StringIO(pem), password=passphrase)
        except paramiko.SSHException:
            continue
    raise ValueError("the SSH connection's extra 'private_key' is not a readable RSA, Ed25519 or ECDSA key")
