"""A destination that cannot be written fails the task before any request to the service.

Downloads are billed: each bad destination below must give a clear error naming it, and the
emulator's request log must show no download (and no other call) for the task.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from downloads import run_download as run

VIDEO = os.urandom(64 * 1024 + 1)


@pytest.fixture(params=["video_no", "asset_id"])
def ids(request: pytest.FixtureRequest, emu: Any, upload_video: Any) -> dict[str, str]:
    if request.param == "video_no":
        return {"video_no": upload_video(VIDEO)}
    return {"asset_id": emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")["asset_id"]}


def fails_before_any_request(emu: Any, match: str, **kwargs: Any) -> ValueError:
    before = emu.control.request_log()
    with pytest.raises(ValueError, match=match) as info:
        run(**kwargs)
    assert emu.control.request_log() == before  # no download, not even get_metadata
    return info.value


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- local


def test_existing_folder_without_trailing_slash(emu: Any, ids: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    error = fails_before_any_request(
        emu,
        "is an existing folder: name a file in it .a download may instead end it with '/'",
        destination=str(tmp_path / "out"),
        **ids,
    )
    assert str(tmp_path / "out") in str(error)
    assert list((tmp_path / "out").iterdir()) == []


def test_parent_that_cannot_be_created(emu: Any, ids: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"x")
    destination = str(tmp_path / "a-file" / "sub" / "v.mp4")
    error = fails_before_any_request(emu, "cannot be created", destination=destination, **ids)
    assert destination in str(error)


def test_folder_destination_that_is_a_file(emu: Any, ids: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"x")
    fails_before_any_request(emu, "is an existing file", destination=str(tmp_path / "a-file") + "/", **ids)


def test_a_file_uri_with_two_slashes(emu: Any, ids: dict[str, str], tmp_path: Path) -> None:
    # 'file://out/a.mp4' meant out/a.mp4; its 'out' is a host, and the file went to /a.mp4.
    fails_before_any_request(emu, "names the host 'out'", destination="file://out/memories-hz-a.mp4", **ids)
    assert not os.path.exists("/memories-hz-a.mp4")


def test_a_file_uri_whose_path_a_hash_would_end(emu: Any, ids: dict[str, str], tmp_path: Path) -> None:
    # Written to <tmp>/take (the URI's path ends at '#'), and reported as written to take#2.mp4.
    fails_before_any_request(
        emu, "holds '#', which ends the path", destination=f"file://{tmp_path}/take#2.mp4", **ids
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("destination", ["C:\\out\\", "D:/out/clip.mp4", "out\\clip.mp4", "\\\\nas\\out\\"])
def test_windows_path_is_refused(
    emu: Any, ids: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, destination: str
) -> None:
    # Before, the download went through and wrote a file named 'C:\out\' (or 'out\clip.mp4')
    # in the worker's working folder.
    monkeypatch.chdir(tmp_path)
    error = fails_before_any_request(
        emu, "`destination` .* is a Windows path", destination=destination, **ids
    )
    assert "POSIX" in str(error)
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files, even to root (immutable attribute) when chmod is not enough."""
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.touch()
    except PermissionError:
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    probe.unlink()
    folder.chmod(0o755)
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.skip("cannot make a folder unwritable here (root without chattr)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["locked/v.mp4", "locked/", "locked/deeper/v.mp4"])
def test_parent_without_write_permission(emu: Any, ids: dict[str, str], tmp_path: Path, where: str) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    destination = str(tmp_path / where) + ("/" if where.endswith("/") else "")
    with _unwritable(locked):
        error = fails_before_any_request(emu, "cannot", destination=destination, **ids)
    assert destination.rstrip("/") in str(error)
    assert list(locked.iterdir()) == []


# ---------------------------------------------------------------------------- SFTP


def test_unreachable_sftp_host(emu: Any, ids: dict[str, str], sshd: Any) -> None:
    destination = f"sftp://{sshd.user}@127.0.0.1:{_unused_port()}{sshd.root}/v.mp4"
    error = fails_before_any_request(
        emu, "cannot be written over SFTP", destination=destination, destination_conn_id=sshd.conn_id, **ids
    )
    assert "127.0.0.1:" in str(error)


@pytest.fixture
def wrong_key_conn(sshd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ssh connection to the test sshd with a key it does not know."""
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    conn = {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "login": sshd.user,
        "extra": {"key_file": str(key), "no_host_key_check": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_STRANGER", json.dumps(conn))
    return "sftp_stranger"


def test_sftp_credentials_refused(emu: Any, ids: dict[str, str], sshd: Any, wrong_key_conn: str) -> None:
    destination = f"sftp://127.0.0.1{sshd.root}/refused.mp4"
    fails_before_any_request(
        emu,
        r"cannot be written over SFTP.*Authentication",
        destination=destination,
        destination_conn_id=wrong_key_conn,
        **ids,
    )
    assert not (sshd.root / "refused.mp4").exists()


def test_sftp_folder_missing(emu: Any, ids: dict[str, str], sshd: Any) -> None:
    destination = sshd.uri(str(sshd.root / "no-such-folder" / "v.mp4"))
    fails_before_any_request(
        emu, "cannot be written over SFTP", destination=destination, destination_conn_id=sshd.conn_id, **ids
    )


def test_sftp_existing_folder_without_trailing_slash(emu: Any, ids: dict[str, str], sshd: Any) -> None:
    folder = sshd.root / "a-folder"
    folder.mkdir(exist_ok=True)
    fails_before_any_request(
        emu,
        "is an existing folder",
        destination=sshd.uri(str(folder)),
        destination_conn_id=sshd.conn_id,
        **ids,
    )
    assert list(folder.iterdir()) == []  # the probe is gone


def test_sftp_password_never_shown(emu: Any, ids: dict[str, str], sshd: Any) -> None:
    destination = f"sftp://{sshd.user}:hunter2-secret@127.0.0.1:{_unused_port()}/tmp/v.mp4"
    error = fails_before_any_request(emu, "cannot be written over SFTP", destination=destination, **ids)
    assert "hunter2-secret" not in str(error)


# ---------------------------------------------------------------------------- object stores


@pytest.mark.parametrize("where", ["v.mp4", "out/"])
def test_missing_s3_bucket(emu: Any, ids: dict[str, str], moto_s3_server: Any, where: str) -> None:
    destination = f"s3://no-such-bucket-{os.getpid()}/{where}"
    error = fails_before_any_request(
        emu,
        "the bucket 'no-such-bucket-.*' does not exist",
        destination=destination,
        destination_conn_id=moto_s3_server.conn_id,
        **ids,
    )
    assert destination in str(error)


@pytest.mark.parametrize("where", ["v.mp4", "out/"])
def test_missing_gcs_bucket(emu: Any, ids: dict[str, str], gcs_server: Any, where: str) -> None:
    destination = f"gs://no-such-bucket-{os.getpid()}/{where}"
    fails_before_any_request(
        emu, "the bucket 'no-such-bucket-.*' does not exist", destination=destination, **ids
    )


def test_missing_azure_container(emu: Any, ids: dict[str, str], azurite: Any) -> None:
    destination = "azure://no-such-container/v.mp4"
    fails_before_any_request(
        emu,
        "the container 'no-such-container' does not exist",
        destination=destination,
        destination_conn_id=azurite.conn_id,
        **ids,
    )


def test_s3_probe_leaves_no_upload_behind(
    emu: Any, ids: dict[str, str], moto_s3_server: Any, s3_bucket: str
) -> None:
    client = moto_s3_server.client()
    result = run(destination=f"s3://{s3_bucket}/out/", destination_conn_id=moto_s3_server.conn_id, **ids)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [result["uri"].split(f"{s3_bucket}/", 1)[1]]


def test_azure_write_only_sas_is_not_refused(
    emu: Any, azurite: Any, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SAS that may write but not read the container: the check cannot read its properties, and
    must not take that for "cannot be written"."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from tests.services import AZURITE_ACCOUNT, AZURITE_KEY

    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        azure_container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    conn = {"conn_type": "wasb", "extra": {"sas_token": f"{azurite.blob_endpoint}?{sas}"}}
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_WRITE_ONLY", json.dumps(conn))
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    result = run(
        asset_id=asset["asset_id"],
        destination=f"azure://{azure_container}/in/",
        destination_conn_id="azure_write_only",
        overwrite=True,  # nothing to look up: the write itself is the test
    )
    key = result["uri"].split(f"{azure_container}/", 1)[1]
    assert azurite.service().get_blob_client(azure_container, key).download_blob().readall() == VIDEO


def test_a_file_name_too_long_for_its_temporary_file_and_record(
    emu: Any, ids: dict[str, str], tmp_path: Path
) -> None:
    """The name itself fits 255 bytes, but ``.<name>.<random>.part`` and the record's own temporary
    file would not: refused before the (billed) request, not with ENAMETOOLONG once it is sent."""
    longest = 255 - len("..memories.json.0123456789ab.part") - 1
    for name in ("é" * 111 + ".mp4", "a" * (longest - 3) + ".mp4"):  # 226 and 222 bytes
        destination = str(tmp_path / name)
        error = fails_before_any_request(emu, "at most 221 bytes fit", destination=destination, **ids)
        assert "file name is" in str(error)
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / ("a" * (longest - 4) + ".mp4")  # 221 bytes: written, recorded, then skipped
    assert run(destination=str(target), **ids)["skipped"] is False
    assert run(destination=str(target), **ids)["skipped"] is True
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".memories.json")]) == 1
