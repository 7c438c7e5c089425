"""Real storage services for the storage and operator tests: moto S3, GCS, a local sshd (SFTP), Azurite.

Each service is session-scoped, bound to 127.0.0.1 on a free port, and exposed through an
Airflow connection set in the environment (``AIRFLOW_CONN_...``), exactly as users configure
it. A missing service skips locally and fails under CI (``in_ci``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE = REPO_ROOT / ".services" / "node_modules" / ".bin" / "azurite-blob"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# Same rule as the function-scoped ``in_ci`` fixture, readable from session-scoped fixtures.
_IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> None:
    if _IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Block until something accepts on ``port`` (a readiness probe, not a timing guess)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- memories emulator


# ---------------------------------------------------------------------------- S3 (moto)


@dataclass
class MotoS3:
    """A moto S3 endpoint and the Airflow ``aws`` connection pointing at it."""

    endpoint_url: str
    conn_id: str

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[MotoS3]:
    """moto's ThreadedMotoServer on 127.0.0.1 and ``AIRFLOW_CONN_MOTO_S3`` for it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    os.environ["AIRFLOW_CONN_MOTO_S3"] = json.dumps(conn)
    try:
        yield MotoS3(endpoint_url=endpoint, conn_id="moto_s3")
    finally:
        os.environ.pop("AIRFLOW_CONN_MOTO_S3", None)
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3_server: MotoS3, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty bucket per test."""
    name = "dl-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{os.getpid() % 1000}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)[:60].strip("-")
    client = moto_s3_server.client()
    client.create_bucket(Bucket=name)
    yield name
    for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=obj["Key"])
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_if_match_on_completion(moto_s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """moto's CompleteMultipartUpload, made to honour ``If-Match`` as S3 does; yields the If-Match
    values it was sent.

    moto 5.2.5 checks ``If-Match`` on PutObject but ignores it on CompleteMultipartUpload (only
    ``If-None-Match: *`` is checked there). S3 answers ``412 PreconditionFailed`` when the key's
    ETag is another, ``404 NoSuchKey`` when no object has the key: the same answers are given here,
    before moto completes the upload; the client, the request and what our code sent are all real.
    """
    from moto.s3.exceptions import MissingKey, PreconditionFailed
    from moto.s3.responses import S3Response

    real_post = S3Response._key_response_post
    seen: list[str] = []

    def post(
        self: Any, request: Any, body: bytes, bucket_name: str, query: dict[str, Any], key_name: str
    ) -> Any:
        wanted = self.headers.get("If-Match")
        if query.get("uploadId") and wanted is not None:
            seen.append(wanted)
            existing = self.backend.get_object(bucket_name, key_name)
            if existing is None:
                raise MissingKey(key=key_name)
            if wanted.strip('"') != existing.etag.strip('"'):
                raise PreconditionFailed("If-Match")
        return real_post(self, request, body, bucket_name, query, key_name)

    monkeypatch.setattr(S3Response, "_key_response_post", post)
    yield seen


# ---------------------------------------------------------------------------- SFTP (sshd)


@dataclass
class Sshd:
    """A local sshd (key auth) and the Airflow ``ssh`` connection pointing at it."""

    port: int
    user: str
    key_file: str
    conn_id: str
    root: Path  # a folder on this machine, reachable over SFTP at the same absolute path

    def uri(self, path: str) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A throw-away sshd on 127.0.0.1 accepting one generated key for the current user."""
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        _missing("sshd/ssh-keygen not installed")
    import getpass

    base = tmp_path_factory.mktemp("sshd")
    host_key = base / "host_ed25519"
    user_key = base / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = base / "authorized_keys"
    authorized.write_text((base / "user_ed25519.pub").read_text())
    authorized.chmod(0o600)
    port = _free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {base / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "StrictModes no",
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege-separation directory sshd insists on
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, proc)
    except RuntimeError as err:
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        _stop(proc)
        _missing(f"sshd did not start: {err}: {stderr[-500:]}")
    user = getpass.getuser()
    conn = {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": port,
        "login": user,
        "extra": {"key_file": str(user_key), "no_host_key_check": True},
    }
    os.environ["AIRFLOW_CONN_SFTP_TEST"] = json.dumps(conn)
    root = Path(tempfile.mkdtemp(prefix="sftp-root-"))
    try:
        yield Sshd(port=port, user=user, key_file=str(user_key), conn_id="sftp_test", root=root)
    finally:
        os.environ.pop("AIRFLOW_CONN_SFTP_TEST", None)
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- Azure (Azurite)


@dataclass
class Azurite:
    """A local Azurite blob endpoint and the Airflow ``wasb`` connection pointing at it."""

    blob_endpoint: str
    connection_string: str
    conn_id: str

    def service(self):  # type: ignore[no-untyped-def]
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """``azurite-blob`` from .services on a free port, in-memory, with ``AIRFLOW_CONN_AZURITE``."""
    if not AZURITE.exists() or not shutil.which("node"):
        _missing(f"{AZURITE} not installed (run .ci/install-services.sh)")
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, proc)
    except RuntimeError as err:
        _stop(proc)
        _missing(f"azurite did not start: {err}")
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    conn_str = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint};"
    )
    conn = {"conn_type": "wasb", "extra": {"connection_string": conn_str}}
    os.environ["AIRFLOW_CONN_AZURITE"] = json.dumps(conn)
    try:
        yield Azurite(blob_endpoint=endpoint, connection_string=conn_str, conn_id="azurite")
    finally:
        os.environ.pop("AIRFLOW_CONN_AZURITE", None)
        _stop(proc)


@pytest.fixture
def azure_container(azurite: Azurite, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh container per test."""
    name = "dl" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    service = azurite.service()
    service.create_container(name)
    yield name
    service.delete_container(name)


# ---------------------------------------------------------------------------- GCS (gcp-storage-emulator)


@dataclass
class FakeGcs:
    """An in-memory GCS emulator; google-cloud-storage finds it through ``STORAGE_EMULATOR_HOST``."""

    endpoint: str

    def client(self):  # type: ignore[no-untyped-def]
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[FakeGcs]:
    """gcp-storage-emulator on 127.0.0.1, in memory. ``STORAGE_EMULATOR_HOST`` points the library's
    default client (what a ``gs://`` URI uses without ``source_conn_id``) at it."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError:
        _missing("gcp-storage-emulator not installed")
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    try:
        yield FakeGcs(endpoint=endpoint)
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        server.stop()


@pytest.fixture
def gcs_bucket(gcs_server: FakeGcs, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh bucket per test."""
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    bucket = gcs_server.client().create_bucket(name)
    yield name
    for blob in bucket.list_blobs():
        blob.delete()
    # The emulator keeps a cancelled resumable upload's session (it does not implement the cancel
    # DELETE) and then refuses to delete the bucket; the server is in memory and per session anyway.
    with contextlib.suppress(Exception):
        bucket.delete()


@dataclass
class GcsPreconditions:
    """What :func:`gcs_preconditions` saw: each resumable-upload request, as ``(method, query)``."""

    uploads: list[tuple[str, dict[str, list[str]]]]


@pytest.fixture
def gcs_preconditions(gcs_server: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsPreconditions]:
    """The emulator's HTTP layer, made to honour ``ifGenerationMatch`` on resumable uploads.

    gcp-storage-emulator ignores the precondition: an upload with ``ifGenerationMatch=0`` over an
    existing object replaces it. GCS evaluates it when it creates the object, at the upload's last
    request, and answers ``412 Precondition Failed`` when the object's generation differs (0: no
    object may have the name). Here every resumable-upload request is recorded, and the last one
    (its ``Content-Range`` states the total) gets that answer when the condition does not hold:
    the request that GCS would refuse is refused, with GCS's status; the client, its transport and
    what our code sent are all real.
    """
    from urllib.parse import parse_qs, urlsplit

    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound

    real_handle = server.Router.handle
    seen = GcsPreconditions(uploads=[])

    def refused(handler: Any, storage: Any, query: dict[str, list[str]]) -> bool:
        wanted = query.get("ifGenerationMatch")
        total = (handler.headers.get("Content-Range") or "").rpartition("/")[2]
        if wanted is None or "upload_id" not in query or total in ("", "*"):
            return False
        obj = storage.get_resumable_file_obj(query["upload_id"][0])
        try:
            generation = int(storage.get_file_obj(obj["bucket"], obj["name"])["generation"])
        except NotFound:
            generation = 0
        return generation != int(wanted[0])

    def handle(self: Any, method: str) -> None:
        handler = self._request_handler
        query = parse_qs(urlsplit(handler.path).query)
        if method in ("POST", "PUT") and query.get("uploadType") == ["resumable"]:
            seen.uploads.append((method, query))
            if refused(handler, handler.storage, query):
                handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
                body = json.dumps(
                    {
                        "error": {
                            "code": 412,
                            "message": "At least one of the pre-conditions you specified did not hold.",
                        }
                    }
                ).encode()
                handler.send_response(412)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                return
        real_handle(self, method)

    monkeypatch.setattr(server.Router, "handle", handle)
    yield seen
