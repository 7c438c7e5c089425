"""Storage clients built for a transfer: Azure's from wasb connections, as WasbHook builds them, and
S3's default one (no network: clients are only built)."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

from memories_provider.storage.credentials import transport_params_for

URI = "azure://videos/in/clip.mp4"


class ClientSecretCredential:
    """Stands in for azure.identity's (not installed here): records what it was built with."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:  # makes it a token credential to the SDK
        raise AssertionError("no token is requested while building a client")


@pytest.fixture
def azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("azure.identity")
    module.ClientSecretCredential = ClientSecretCredential  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.identity", module)


def wasb(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_WASB_TEST", json.dumps({"conn_type": "wasb", **fields}))
    return "wasb_test"


def client_for(conn_id: str) -> Any:
    return transport_params_for(URI, conn_id=conn_id, transport_params=None)["client"]


@pytest.mark.parametrize(
    ("fields", "account_url"),
    [
        ({"host": "https://acct.blob.core.windows.net"}, "https://acct.blob.core.windows.net"),
        ({"host": "acct.blob.core.windows.net"}, "https://acct.blob.core.windows.net"),
        (
            {"extra": {"account_url": "https://acct.blob.core.windows.net/"}},
            "https://acct.blob.core.windows.net",
        ),
        ({"extra": {"account_name": "acct"}}, "https://acct.blob.core.windows.net"),
    ],
)
def test_service_principal_uses_a_client_secret_credential(
    monkeypatch: pytest.MonkeyPatch, azure_identity: None, fields: dict, account_url: str
) -> None:
    extra = {"tenant_id": "tenant-1", "client_secret_auth_config": {"authority": "login.example"}}
    extra.update(fields.pop("extra", {}))
    conn_id = wasb(monkeypatch, login="client-id", password="client-secret", extra=extra, **fields)
    client = client_for(conn_id)
    assert client.url.rstrip("/") == account_url
    assert isinstance(client.credential, ClientSecretCredential)
    assert client.credential.kwargs == {
        "tenant_id": "tenant-1",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "authority": "login.example",
    }


def test_without_tenant_id_the_password_is_still_the_account_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "a2V5" * 22  # base64, as account keys are
    client = client_for(wasb(monkeypatch, login="acct", password=key))
    assert client.url.rstrip("/") == "https://acct.blob.core.windows.net"
    assert (client.credential.account_name, client.credential.account_key) == ("acct", key)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"login": "client-id", "password": "pw-value"}, "host or in extra 'account_url' or 'account_name'"),
        ({"host": "acct.blob.core.windows.net", "login": "client-id"}, "password the client secret"),
    ],
)
def test_incomplete_service_principal_is_named(
    monkeypatch: pytest.MonkeyPatch, azure_identity: None, fields: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        client_for(wasb(monkeypatch, extra={"tenant_id": "tenant-1"}, **fields))
    assert "'wasb_test'" in str(info.value) and "pw-value" not in str(info.value)


def test_service_principal_without_azure_identity_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # import fails as if not installed
    conn_id = wasb(
        monkeypatch, host="acct.blob.core.windows.net", login="c", password="s", extra={"tenant_id": "t"}
    )
    with pytest.raises(ValueError, match="needs azure-identity: pip install azure-identity"):
        client_for(conn_id)


def test_without_a_connection_one_s3_client_is_built_as_smart_open_would() -> None:
    """Built once, so the checks, reads and writes of a transfer share it; the user's
    ``client_kwargs["S3.Client"]`` apply (as smart-open applies them to the client it builds)."""
    settings = {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1"}
    params = transport_params_for(
        "s3://bucket/in/clip.mp4", conn_id=None, transport_params={"client_kwargs": {"S3.Client": settings}}
    )
    client = params["client"]
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.max_pool_connections == 64
    assert client.meta.config.retries["mode"] == "adaptive"
    assert params["client_kwargs"] == {"S3.Client": settings}  # still given to smart-open


def test_the_s3_client_built_keeps_smart_opens_own_settings() -> None:
    """``_s3_default_client`` repeats smart-open's (private) client settings: this fails when an
    upgrade of smart-open changes them, so that the copy follows."""
    from types import SimpleNamespace

    from smart_open.s3 import _initialize_boto3

    settings = {"region_name": "eu-west-1", "aws_access_key_id": "a", "aws_secret_access_key": "b"}
    theirs: Any = SimpleNamespace()
    _initialize_boto3(theirs, None, {"S3.Client": settings}, "bucket", "key")
    ours = transport_params_for(
        "s3://bucket/key", conn_id=None, transport_params={"client_kwargs": {"S3.Client": settings}}
    )["client"]
    for client in (theirs._client.client, ours):
        assert client.meta.region_name == "eu-west-1"
    mine, smart = ours.meta.config, theirs._client.client.meta.config
    for name in ("max_pool_connections", "tcp_keepalive", "retries", "connect_timeout", "read_timeout"):
        assert getattr(mine, name) == getattr(smart, name), name


def test_an_s3_client_given_is_the_one_used() -> None:
    import boto3

    given = boto3.client("s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    params = transport_params_for("s3://bucket/k.mp4", conn_id=None, transport_params={"client": given})
    assert params["client"] is given
