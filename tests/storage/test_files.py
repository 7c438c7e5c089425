"""Storage files (the upload's `source`): looked up unread, opened as streams, with connections."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from local_http import LocalServer, folder_handler

from memories_provider.storage.credentials import transport_params_for, validate_transport_params
from memories_provider.storage.files import open_storage_file, stat_storage_file
from memories_provider.storage.uris import redact_uri

DATA = b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000


@pytest.fixture
def local_video(tmp_path):
    path = tmp_path / "clip one.mp4"
    path.write_bytes(DATA)
    return path


def test_local_path_and_file_uri(local_video):
    for uri in (str(local_video), local_video.as_uri()):
        info = stat_storage_file(uri)
        assert (info.name, info.size) == ("clip one.mp4", len(DATA))
        with open_storage_file(uri) as fh:
            assert fh.read() == DATA


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "", "non-empty"),
        (lambda d: str(d / "missing.mp4"), "does not exist"),
        (lambda d: str(d), "folder"),
        (lambda d: str(d / "empty.mp4"), "empty"),
    ],
)
def test_bad_local_sources_name_the_parameter(tmp_path, make, message):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=message) as info:
        stat_storage_file(make(tmp_path))
    assert "`source`" in str(info.value)


def test_compressed_looking_names_are_read_byte_for_byte(tmp_path):
    path = tmp_path / "clip.mp4.gz"
    path.write_bytes(DATA)  # not gzip data: smart-open would fail or decompress if compression were on
    with open_storage_file(path.as_uri()) as fh:
        assert fh.read() == DATA


def test_s3_source_through_an_aws_connection(moto_s3_server, s3_bucket):
    moto_s3_server.client().put_object(Bucket=s3_bucket, Key="in/clip.mp4.gz", Body=DATA)
    uri = f"s3://{s3_bucket}/in/clip.mp4.gz"
    info = stat_storage_file(uri, conn_id=moto_s3_server.conn_id)
    assert (info.name, info.size) == ("clip.mp4.gz", len(DATA))
    with open_storage_file(uri, conn_id=moto_s3_server.conn_id) as fh:
        assert fh.read() == DATA
    with pytest.raises(ValueError, match="does not exist"):
        stat_storage_file(f"s3://{s3_bucket}/in/none.mp4", conn_id=moto_s3_server.conn_id)


def test_sftp_source_through_an_ssh_connection(sshd):
    path = sshd.root / "clip.mp4"
    path.write_bytes(DATA)
    uri = sshd.uri(str(path))
    assert stat_storage_file(uri, conn_id=sshd.conn_id).size == len(DATA)
    with open_storage_file(uri, conn_id=sshd.conn_id) as fh:
        assert fh.read() == DATA
    with pytest.raises(ValueError, match="does not exist"):
        stat_storage_file(sshd.uri(str(sshd.root / "none.mp4")), conn_id=sshd.conn_id)


def test_a_looked_up_file_opens_with_its_settings_and_never_shows_them(sshd):
    path = sshd.root / "clip.mp4"
    path.write_bytes(DATA)
    info = stat_storage_file(sshd.uri(str(path)), conn_id=sshd.conn_id)
    with info.open() as fh:
        assert fh.read() == DATA
    assert info.transport_params and sshd.key_file not in repr(info) and "transport_params" not in repr(info)


def test_azure_source_through_a_wasb_connection(azurite, azure_container):
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    client.get_blob_client(azure_container, "clip.mp4").upload_blob(DATA)
    uri = f"azure://{azure_container}/clip.mp4"
    assert stat_storage_file(uri, conn_id=azurite.conn_id).size == len(DATA)
    with open_storage_file(uri, conn_id=azurite.conn_id) as fh:
        assert fh.read() == DATA


@pytest.fixture
def http_folder(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(DATA)
    with LocalServer(folder_handler(tmp_path)) as server:
        yield server.url


def test_http_source_is_sized_with_head(http_folder):
    assert stat_storage_file(f"{http_folder}/clip.mp4").size == len(DATA)
    with open_storage_file(f"{http_folder}/clip.mp4") as fh:
        assert fh.read() == DATA
    with pytest.raises(ValueError, match="HTTP 404"):
        stat_storage_file(f"{http_folder}/none.mp4")


class PresignedHandler(BaseHTTPRequestHandler):
    """Serves DATA for GET like a presigned S3/GCS URL: HEAD is answered ``head_status``."""

    head_status = 403
    get_status: int | None = None  # answer every GET with this status instead
    honour_range = True
    seen: list[tuple[str, str | None]]  # (method, Range header) of each request

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_HEAD(self):
        self.seen.append(("HEAD", self.headers.get("Range")))
        self.send_response(self.head_status)
        if self.head_status == 200:  # a server that gives no length
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_GET(self):
        self.seen.append(("GET", self.headers.get("Range")))
        if self.get_status is not None:
            self.send_response(self.get_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.headers.get("Range") == "bytes=0-0" and self.honour_range:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-0/{len(DATA)}")
            self.send_header("Content-Length", "1")
            self.end_headers()
            self.wfile.write(DATA[:1])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)


@pytest.fixture
def presigned():
    """``serve(**handler_attributes) -> (base_url, seen)``: a server on 127.0.0.1 that refuses HEAD."""
    with contextlib.ExitStack() as servers:

        def serve(**attributes):
            seen: list[tuple[str, str | None]] = []
            handler = type("Handler", (PresignedHandler,), {**attributes, "seen": seen})
            server = servers.enter_context(LocalServer(handler))
            return server.url, seen

        yield serve


@pytest.mark.parametrize("head_status", [403, 405, 200])
def test_http_source_refusing_head_is_sized_with_a_one_byte_get(presigned, head_status):
    base, seen = presigned(head_status=head_status)
    uri = f"{base}/clip.mp4?X-Amz-Signature=s3cr3t"
    assert stat_storage_file(uri).size == len(DATA)
    assert seen == [("HEAD", None), ("GET", "bytes=0-0")]
    with open_storage_file(uri) as fh:
        assert fh.read() == DATA


def test_http_source_ignoring_range_is_sized_from_its_content_length(presigned):
    base, seen = presigned(honour_range=False)
    assert stat_storage_file(f"{base}/clip.mp4").size == len(DATA)
    assert seen == [("HEAD", None), ("GET", "bytes=0-0")]


@pytest.mark.parametrize(
    ("get_status", "message"), [(403, "HEAD answered HTTP 403 and a ranged GET HTTP 403"), (404, "HTTP 404")]
)
def test_http_source_refusing_head_and_get_is_named_without_its_token(presigned, get_status, message):
    base, _ = presigned(get_status=get_status)
    with pytest.raises(ValueError, match=message) as info:
        stat_storage_file(f"{base}/clip.mp4?X-Amz-Signature=s3cr3t")
    assert "`source`" in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://u:p4ss@host:8443/v/clip.mp4?X-Amz-Signature=tok#f", "https://***@host:8443/v/clip.mp4?***"),
        ("https://host/clip.mp4?sig=tok", "https://host/clip.mp4?***"),
        ("https://host/clip.mp4", "https://host/clip.mp4"),
        ("sftp://me:pw@host/in/clip.mp4", "sftp://me:***@host/in/clip.mp4"),
        ("sftp://me@host/in/clip.mp4", "sftp://me@host/in/clip.mp4"),  # a login name, no secret
        ("sftp://me:p@ss:w@host:22/o/", "sftp://me:***@host:22/o/"),  # '@' inside the password
        ("https://ghp_T0KEN@host/clip.mp4", "https://***@host/clip.mp4"),  # a token as user name
        ("azure://c/b.mp4?sv=1&sig=tok", "azure://c/b.mp4?***"),
        ("s3://bucket/in/clip.mp4", "s3://bucket/in/clip.mp4"),
        # An AWS secret key often holds '/': smart-open still reads it as credentials, urlsplit as a path.
        ("s3://AKIAEXAMPLE:wJalr/XUtn+FEMI@bucket/in/clip.mp4", "s3://***@bucket/in/clip.mp4"),
        ("s3://AKIAEXAMPLE:wJalr/XUtnFEMI@bucket/c.mp4?versionId=v", "s3://***@bucket/c.mp4?***"),
        ("s3://bucket/in/a:b@c.mp4", "s3://bucket/in/a:b@c.mp4"),  # '@' in a key is no user-info
        # smart-open keeps '?' and '#' in an S3 or GCS key (on Azure '#'): shown as the key they are part of.
        ("s3://bucket/in/take#2.mp4", "s3://bucket/in/take#2.mp4"),
        ("s3://k:s3cr3t@bucket/what?.mp4", "s3://***@bucket/what?.mp4"),
        ("gs://bucket/a?b#c.mp4", "gs://bucket/a?b#c.mp4"),
        ("azure://c/take#2.mp4", "azure://c/take#2.mp4"),
        ("ftp://alice:pw@files.example/x.mp4", "ftp://***@files.example/x.mp4"),
        # A password with '/', '?' or '#' left unencoded: urlsplit ends the host there.
        ("sftp://bob:p/w0rd@host/x.mp4", "sftp://bob:***@host/x.mp4"),
        ("https://u:p?w0rd@host/x.mp4", "https://***@host/x.mp4"),
        ("ftp://u:p#w0rd@host/x.mp4?t=1", "ftp://***@host/x.mp4?***"),
        ("sftp://host:22/in/a@b.mp4", "sftp://host:22/in/a@b.mp4"),  # a port, then '@' in the path
        ("https://host:8443/a?b=c@d", "https://host:8443/a?***"),
        ("/data/what?.mp4", "/data/what?.mp4"),
        ("file:///data/what?.mp4", "file:///data/what?.mp4"),
    ],
)
def test_redact_uri_masks_credentials_and_tokens(uri, shown):
    assert redact_uri(uri) == shown


def test_unknown_transport_params_are_refused_by_name():
    with pytest.raises(ValueError, match="`transport_params` key 'min_part_sise'"):
        validate_transport_params("s3://b/k.mp4", {"min_part_sise": 5})
    with pytest.raises(ValueError, match="`transport_params` key 'client'"):
        validate_transport_params("/tmp/x.mp4", {"client": object()})
    assert validate_transport_params("s3://b/k.mp4", {"min_part_size": 5}) == {"min_part_size": 5}


def test_unsupported_scheme_is_refused():
    with pytest.raises(ValueError, match="unsupported URI scheme 'ftp'"):
        stat_storage_file("ftp://host/clip.mp4")


def test_connection_of_an_uninstalled_provider_is_named(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GCP", json.dumps({"conn_type": "google_cloud_platform"}))
    try:
        import airflow.providers.google  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="`source_conn_id`='gcp' needs the Airflow provider"):
            transport_params_for(
                "gs://b/k.mp4", conn_id="gcp", transport_params=None, conn_param="source_conn_id"
            )
    else:
        pytest.skip("the google provider is installed here")


def test_users_transport_params_win_over_the_connection(moto_s3_server):
    sentinel = object()
    params = transport_params_for(
        "s3://b/k.mp4",
        conn_id=moto_s3_server.conn_id,
        transport_params={"client": sentinel, "min_part_size": 7},
    )
    assert params == {"client": sentinel, "min_part_size": 7}


@pytest.mark.parametrize("spelling", ["clip.mp4", "./in/clip.mp4", "~/clip-that-is-not-there.mp4"])
def test_a_relative_or_home_source_that_does_not_exist_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    # Before: "`source` 'clip.mp4' does not exist" — relative to what, on which machine, unsaid.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = os.path.abspath(os.path.expanduser(spelling))
    with pytest.raises(ValueError) as info:
        stat_storage_file(spelling)
    assert (
        str(info.value) == f"`source` {spelling!r} does not exist (looked for at {expected!r} on this worker)"
    )
    assert expected.startswith(str(tmp_path))


# ---------------------------------------------------------------------------- version marks
# What each storage tells of a file's version in the answer that sizes it: the upload records it,
# and a retry compares it, to tell a file replaced by another of the same size.

OTHER = bytes(reversed(DATA))  # the same size, other bytes
assert len(OTHER) == len(DATA) and OTHER != DATA


def test_a_local_file_is_versioned_by_mtime_and_inode(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(DATA)
    first = stat_storage_file(str(path))
    inode = f"inode@{socket.gethostname()}"  # compared only with what this machine read
    assert set(first.version) == {"mtime_ns", inode}
    assert stat_storage_file(path.as_uri()).version == first.version  # untouched: the same marks
    fresh = tmp_path / "fresh.mp4"
    fresh.write_bytes(OTHER)
    os.replace(fresh, path)  # how a new version usually lands: written beside it, renamed over it
    second = stat_storage_file(str(path))
    assert second.size == first.size and second.version[inode] != first.version[inode]
    os.utime(path, ns=(int(first.version["mtime_ns"]) + 10**9,) * 2)  # rewritten in place a second later
    assert stat_storage_file(str(path)).version["mtime_ns"] != second.version["mtime_ns"]


def test_an_s3_object_is_versioned_by_etag_and_version_id(moto_s3_server, s3_bucket):
    client = moto_s3_server.client()
    uri = f"s3://{s3_bucket}/in/clip.mp4"
    client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=DATA)
    first = stat_storage_file(uri, conn_id=moto_s3_server.conn_id)
    assert set(first.version) == {"etag"}  # an unversioned bucket has no VersionId ("null" is none)
    assert stat_storage_file(uri, conn_id=moto_s3_server.conn_id).version == first.version
    client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=OTHER)
    second = stat_storage_file(uri, conn_id=moto_s3_server.conn_id)
    assert second.size == first.size and second.version["etag"] != first.version["etag"]
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=OTHER)
        versioned = stat_storage_file(uri, conn_id=moto_s3_server.conn_id)
        assert versioned.version["etag"] == second.version["etag"]  # the same bytes again
        assert versioned.version["version_id"] not in ("", "null")  # a new version all the same
    finally:
        for version in client.list_object_versions(Bucket=s3_bucket).get("Versions", []):
            client.delete_object(Bucket=s3_bucket, Key=version["Key"], VersionId=version["VersionId"])


def test_a_gcs_blob_is_versioned_by_its_generation(gcs_server, gcs_bucket):
    blob = gcs_server.client().bucket(gcs_bucket).blob("clip.mp4")
    blob.upload_from_string(DATA)
    uri = f"gs://{gcs_bucket}/clip.mp4"
    first = stat_storage_file(uri)
    assert set(first.version) == {"generation"}
    assert stat_storage_file(uri).version == first.version
    blob.upload_from_string(OTHER)
    second = stat_storage_file(uri)
    assert second.size == first.size and second.version != first.version


def test_an_azure_blob_is_versioned_by_its_etag(azurite, azure_container):
    from azure.storage.blob import BlobServiceClient

    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        azure_container, "clip.mp4"
    )
    blob.upload_blob(DATA)
    uri = f"azure://{azure_container}/clip.mp4"
    first = stat_storage_file(uri, conn_id=azurite.conn_id)
    assert set(first.version) == {"etag"}
    assert stat_storage_file(uri, conn_id=azurite.conn_id).version == first.version
    blob.upload_blob(OTHER, overwrite=True)
    second = stat_storage_file(uri, conn_id=azurite.conn_id)
    assert second.size == first.size and second.version != first.version


def test_an_sftp_file_is_versioned_by_its_mtime_in_whole_seconds(sshd):
    path = sshd.root / "versioned.mp4"
    path.write_bytes(DATA)
    uri = sshd.uri(str(path))
    first = stat_storage_file(uri, conn_id=sshd.conn_id)
    assert set(first.version) == {"mtime"}  # SFTP v3 gives no inode and no finer time
    path.write_bytes(OTHER)
    later = int(first.version["mtime"]) + 5
    os.utime(path, (later, later))  # replaced 5 s later (within the same second it goes unseen)
    second = stat_storage_file(uri, conn_id=sshd.conn_id)
    assert second.size == first.size and second.version == {"mtime": str(later)}


def test_an_http_file_is_versioned_by_etag_and_last_modified(tmp_path):
    class Tagged(BaseHTTPRequestHandler):
        etag = '"v1"'

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.send_header("ETag", Tagged.etag)
            self.send_header("Last-Modified", "Mon, 30 Nov 2026 12:00:00 GMT")
            self.end_headers()

    with LocalServer(Tagged) as server:
        uri = f"{server.url}/clip.mp4"
        first = stat_storage_file(uri)
        assert first.version == {"etag": '"v1"', "last_modified": "Mon, 30 Nov 2026 12:00:00 GMT"}
        Tagged.etag = '"v2"'
        assert stat_storage_file(uri).version["etag"] == '"v2"'
    # A plain file server gives Last-Modified (whole seconds) and no ETag.
    (tmp_path / "clip.mp4").write_bytes(DATA)
    with LocalServer(folder_handler(tmp_path)) as server:
        assert set(stat_storage_file(f"{server.url}/clip.mp4").version) == {"last_modified"}


def test_an_s3_source_pinned_to_a_version_is_sized_and_versioned_as_that_version(moto_s3_server, s3_bucket):
    # transport_params={"version_id": ...} makes smart-open read that version; HeadObject asked for
    # the latest one, whose size (sent as the upload's length) and marks are another file's.
    client = moto_s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        pinned = client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=DATA)["VersionId"]
        client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=DATA + b"newer")
        uri = f"s3://{s3_bucket}/in/clip.mp4"
        info = stat_storage_file(uri, conn_id=moto_s3_server.conn_id, transport_params={"version_id": pinned})
        assert info.size == len(DATA) and info.version["version_id"] == pinned
        with info.open() as fh:
            assert fh.read() == DATA
    finally:
        for version in client.list_object_versions(Bucket=s3_bucket).get("Versions", []):
            client.delete_object(Bucket=s3_bucket, Key=version["Key"], VersionId=version["VersionId"])
