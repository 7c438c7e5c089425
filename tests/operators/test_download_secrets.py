"""Storage credentials in a destination URI never show: logs, XCom, errors (the issue's fourth case).

Downloads go to the local sshd over SFTP with ``sftp://<user>:<password>@...`` (the key file
authenticates; the password is the canary). Airflow's secret masker is kept out of the way (the
URI's secrets are registered with it, see ``mask_credentials``, but this text must be clean by
itself), so what is checked is the provider's own redaction.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import redact
from connections import use_emulator_conn
from leaks import error_leaks, leaks

from memories_provider.client.protocol import ERROR_BODY_QUOTE, ERROR_MESSAGE_QUOTE
from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.storage import credentials

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


@pytest.fixture
def password() -> str:
    return f"HUNTER2pw-{secrets.token_hex(6)}"  # fresh: the masker's registrations outlive a test


@pytest.fixture
def no_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "mask_credentials", lambda uri, params=None: None)


def sftp_operator(sshd: Any, destination: str, **kwargs: Any) -> MemoriesDownloadOperator:
    keys = {"key_filename": sshd.key_file, "look_for_keys": False, "allow_agent": False}
    return MemoriesDownloadOperator(
        task_id="download", destination=destination, transport_params={"connect_kwargs": keys}, **kwargs
    )


def sftp_run(sshd: Any, destination: str, **kwargs: Any) -> dict[str, Any]:
    return sftp_operator(sshd, destination, **kwargs).execute(context={})


def test_a_password_in_an_sftp_destination_is_in_no_log_and_no_xcom(
    emu: Any, sshd: Any, password: str, no_masker: None, caplog: Any, capsys: Any
) -> None:
    # INFO, as on a worker: smart-open logs its arguments (URI included) at DEBUG, which only
    # Airflow's masker (fed by mask_credentials, tested below) can clean.
    caplog.set_level(logging.INFO)
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    base = f"sftp://{sshd.user}:{password}@127.0.0.1:{sshd.port}"
    folder = sshd.root / "secret-out"
    folder.mkdir()
    op = sftp_operator(sshd, f"{base}{folder}/", asset_id=asset["asset_id"])
    result = op.execute(context={})
    # A folder's file is named after its source (issue 13's identity scheme).
    name = f"{asset['asset_id']}.clip.mp4"
    assert (folder / name).read_bytes() == VIDEO
    assert result["uri"] == f"sftp://{sshd.user}:***@127.0.0.1:{sshd.port}{folder}/{name}"
    if importlib.util.find_spec("airflow.providers.openlineage") is not None:
        [output] = op.get_openlineage_facets_on_complete(None).outputs
        assert (output.namespace, output.name) == (f"sftp://127.0.0.1:{sshd.port}", f"{folder}/{name}")

    # Again, into the folder and to the file itself: both skips are logged with the URI too, and
    # a skip's XCom URI is masked like a download's.
    for destination in (f"{base}{folder}/", f"{base}{folder}/{name}"):
        again = sftp_run(sshd, destination, asset_id=asset["asset_id"])
        assert again["skipped"] is True and password not in str(again)
        assert again["uri"] == result["uri"]

    logs = caplog.text + "".join(capsys.readouterr())
    assert "Downloading asset" in logs and f"{sshd.user}:***@127.0.0.1" in logs
    assert password not in logs


def test_a_size_conflict_error_does_not_quote_the_password(
    emu: Any, sshd: Any, password: str, no_masker: None
) -> None:
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    target = sshd.root / "conflict.mp4"
    target.write_bytes(b"not the same size")
    with pytest.raises(Exception, match="already exists") as info:
        sftp_run(
            sshd, f"sftp://{sshd.user}:{password}@127.0.0.1:{sshd.port}{target}", asset_id=asset["asset_id"]
        )
    assert password not in str(info.value)


def test_the_password_is_registered_with_airflows_masker_before_anything_is_opened(
    emu: Any, sshd: Any, password: str
) -> None:
    # For what libraries log on their own (smart-open logs its arguments at DEBUG).
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    sftp_run(
        sshd,
        f"sftp://{sshd.user}:{password}@127.0.0.1:{sshd.port}{sshd.root}/m.mp4",
        asset_id=asset["asset_id"],
    )
    assert redact(password) != password
    token, plain = f"tok-{secrets.token_hex(8)}", f"plain-{secrets.token_hex(8)}"
    plain_before = redact(plain)  # (other tests may have registered short secrets of their own)
    credentials.mask_credentials(f"https://host/x.mp4?X-Amz-Signature={token}&format={plain}")
    assert token not in redact(f"sig {token}")
    assert redact(plain) == plain_before  # only values named like credentials
    # An AWS secret key holding '/' (smart-open reads it as credentials; urlsplit would cut it there)
    secret = f"wJalr/{secrets.token_hex(8)}"
    credentials.mask_credentials(f"s3://AKIAEXAMPLE:{secret}@bucket/in/clip.mp4")
    assert secret not in redact(f"key {secret}")


def test_an_sftp_password_or_passphrase_in_connect_kwargs_is_registered_with_the_masker() -> None:
    # smart-open logs its arguments, transport_params included, at DEBUG: paramiko's own
    # connect_kwargs carry a password or a key file's passphrase as often as the URI does.
    password, passphrase = f"ckPASS-{secrets.token_hex(8)}", f"ckPHRASE-{secrets.token_hex(8)}"
    connect = {"password": password, "passphrase": passphrase, "look_for_keys": False}
    uri = "sftp://bob@127.0.0.1:2222/in/clip.mp4"
    credentials.transport_params_for(uri, conn_id=None, transport_params={"connect_kwargs": connect})
    assert redact(f"connect_kwargs {password} {passphrase}") == "connect_kwargs *** ***"


@pytest.mark.parametrize("operator", ["upload", "download"])
def test_an_unsupported_scheme_error_does_not_quote_the_password(operator: str, password: str) -> None:
    uri = f"ftp://alice:{password}@files.example/x.mp4"
    if operator == "upload":
        op: Any = MemoriesUploadOperator(task_id="up", source=uri)
    else:
        op = MemoriesDownloadOperator(task_id="down", destination=uri, video_no="VI000000000000000001")
    with pytest.raises(ValueError, match="scheme 'ftp'") as info:
        op.execute(context={"ti": None})
    assert password not in str(info.value)


# ------------------------------------------------ the download's own checks (issue 13) never show a secret

KEY = "sk-canary-op-4Rt7Yu2Io9"


@pytest.fixture
def echoing(memories_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The emulator echoing requests (key included) in its errors, ``memories_default`` on ``KEY``."""
    memories_emulator.control.configure(api_keys=[KEY], echo_requests=True)
    use_emulator_conn(monkeypatch, memories_emulator, password=KEY, max_retries=1)
    return memories_emulator


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("code_0429", {"auth_at": ERROR_MESSAGE_QUOTE - 5, "retry_after": 0.01}),
        ("http_500", {"auth_at": ERROR_BODY_QUOTE - 5}),
        ("http_401", {"auth_at": 60}),
        ("json_error", {"content_type": "application/octet-stream", "msg": f"no; Authorization: {KEY}"}),
        ("html_page", {}),
    ],
)
def test_a_failed_download_against_an_echoing_service_shows_no_key(
    echoing: Any, fault: str, params: dict[str, Any], tmp_path: Any, caplog: Any, capsys: Any
) -> None:
    # Each fault on every try (one retry allowed): the task fails, its error and the retry
    # warnings hold no piece of the key, and nothing is left at the destination.
    caplog.set_level(logging.DEBUG)
    asset = echoing.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    echoing.control.inject_fault("v2_download", fault, count=2, **params)
    with pytest.raises(Exception) as info:
        MemoriesDownloadOperator(
            task_id="download", asset_id=asset["asset_id"], destination=f"{tmp_path}/out/"
        ).execute(context={})
    assert error_leaks(info.value, KEY) == [], str(info.value)
    assert leaks(caplog.text + "".join(capsys.readouterr()), KEY) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    assert echoing.control.count("v2_download") >= 1


def test_an_unreachable_sftp_destination_names_it_without_the_password(
    emu: Any, sshd: Any, password: str, no_masker: None, tmp_path: Any
) -> None:
    # Issue 13's preflight fails before any request; its error quotes the URI and the SSH error.
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    wrong_key = tmp_path / "not_a_key"
    wrong_key.write_text("not a key")
    keys = {"key_filename": str(wrong_key), "look_for_keys": False, "allow_agent": False}
    uri = f"sftp://{sshd.user}:{password}@127.0.0.1:{sshd.port}{sshd.root}/x.mp4"
    with pytest.raises(ValueError, match="cannot be written over SFTP") as info:
        MemoriesDownloadOperator(
            task_id="download",
            asset_id=asset["asset_id"],
            destination=uri,
            transport_params={"connect_kwargs": keys},
        ).execute(context={})
    assert f"{sshd.user}:***@" in str(info.value)
    assert password not in str(info.value) and error_leaks(info.value, password) == []
    assert emu.control.count("v2_download") == 0


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_an_object_key_holding_a_question_mark_is_not_registered_as_a_secret(scheme: str) -> None:
    # smart-open reads 'in/clip?take-….mp4' as the key; urlsplit took what follows the '?' for a
    # query string, registered with Airflow's masker: every log line naming the object (the
    # provider's own 'Downloading … to s3://b/in/clip?take-….mp4' included) showed '***' for it.
    tail = f"take-{secrets.token_hex(8)}.mp4"
    credentials.mask_credentials(f"{scheme}://bucket/in/clip?{tail}")
    assert redact(f"key in/clip?{tail}") == f"key in/clip?{tail}"
    # A query string where there is one is still masked: an Azure SAS, an S3 URI's versionId.
    sas, version = f"sig-{secrets.token_hex(8)}", f"ver-{secrets.token_hex(8)}"
    credentials.mask_credentials(f"azure://container/in/clip.mp4?{sas}")
    credentials.mask_credentials(f"s3://bucket/in/clip.mp4?versionId={version}")
    assert sas not in redact(f"sas {sas}") and version not in redact(f"v ?versionId={version}")


@pytest.mark.parametrize("mark", ["?", "#"])
def test_an_s3_secret_key_holding_a_question_mark_or_hash_is_registered_with_the_masker(mark: str) -> None:
    # smart-open splits an S3 URI with '?' and '#' kept in its path, so it reads the credentials
    # 'AKIA…:wJa?lr…' up to the '@' (object_location, compared with its parse_uri, agrees);
    # split_userinfo split it with urlsplit, saw no user-info and registered no password. With
    # a '?' the query string ('lr…@bucket/in/clip.mp4') was registered, until 9737450 dropped
    # the query of S3 keys: then nothing at all of the secret was masked.
    secret = f"wJa{mark}lr{secrets.token_hex(8)}"
    credentials.mask_credentials(f"s3://AKIAEXAMPLE:{secret}@bucket/in/clip.mp4")
    assert redact(f"key {secret}") == "key ***"


@pytest.mark.parametrize("scheme", ["gs", "azure", "sftp"])
def test_a_password_holding_a_slash_question_mark_or_hash_is_registered_with_the_masker(scheme: str) -> None:
    # urlsplit ends the host at the first '/', '?' or '#': 'gs://user:pw/…@b/k' has no '@' in its
    # host, so no password was found (redact_uri shows '***@' for it; the masker got nothing).
    for mark in "/?#":
        password = f"pw{mark}{secrets.token_hex(8)}"
        credentials.mask_credentials(f"{scheme}://user:{password}@place/in/clip.mp4")
        assert redact(f"password {password}") == "password ***"
