"""The part CRC32 we hand botocore is the one it would compute, sent the way it would send it.

Two kinds of check. Against moto over a real socket: a write through ``atomic_writer`` whose every
``UploadPart`` carries the CRC32 of that part's bytes (moto does not verify checksums, so the test
does) and botocore's own CRC pass never runs. Through botocore's request pipeline up to the wire,
for endpoints nothing here serves (a ``before-send`` handler answers instead of the network):
over plain HTTP the headers are botocore's own, byte for byte; over HTTPS the trailer botocore
would stream becomes that same header and the payload stays ``UNSIGNED-PAYLOAD`` (a precomputed
checksum must not switch on SigV4 payload hashing, which would cost more than it saves).
"""

from __future__ import annotations

import io
import socket
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.httpchecksum
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from memories_provider.storage.destinations import atomic_writer
from memories_provider.storage.part_buffer import PartBuffer
from memories_provider.storage.s3_part_checksums import as_header, precompute_part_checksums
from tests.services import MotoS3

MIB = 1024 * 1024
_CHECKSUM_HEADERS = (
    "x-amz-checksum-crc32",
    "x-amz-sdk-checksum-algorithm",
    "X-Amz-Content-SHA256",
    "Content-Encoding",
    "X-Amz-Trailer",
    "Content-Length",
)


def _captured_parts(client: Any) -> list[dict[str, Any]]:
    """Every UploadPart request the client sends: its checksum headers and body bytes."""
    sent: list[dict[str, Any]] = []

    def capture(request: Any, **_: Any) -> None:
        body = request.body
        if hasattr(body, "read"):
            position = body.tell() if hasattr(body, "tell") else 0
            data = body.read()
            body.seek(position)
        else:  # bytes-like
            data = bytes(body)
        headers = {k: request.headers.get(k) for k in _CHECKSUM_HEADERS}
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
        sent.append({"headers": text, "body": data, "kind": type(body).__name__})

    client.meta.events.register("before-send.s3.UploadPart", capture)
    return sent


@pytest.fixture
def botocore_crc_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the chunks botocore ran its own CRC32 over (for a header or a trailer)."""
    sizes: list[int] = []
    original = botocore.httpchecksum.Crc32Checksum.update

    def counted(self: Any, chunk: bytes) -> Any:
        sizes.append(len(chunk))
        return original(self, chunk)

    monkeypatch.setattr(botocore.httpchecksum.Crc32Checksum, "update", counted)
    return sizes


def _header_value(data: bytes) -> str:
    return as_header(zlib.crc32(data) & 0xFFFFFFFF)


def test_every_part_carries_its_crc32_and_botocore_does_not_read_it_again(
    moto_s3_server: MotoS3, s3_bucket: str, botocore_crc_bytes: list[int]
) -> None:
    client = moto_s3_server.client()
    sent = _captured_parts(client)
    payload = bytes(range(256)) * (48 * 1024)  # 12 MiB: parts of 5, 5 and 2 MiB
    uri = f"s3://{s3_bucket}/out/video.mp4"
    params = {"client": client, "min_part_size": 5 * MIB}
    with atomic_writer(uri, transport_params=params) as out:
        for start in range(0, len(payload), 1024 * 1024 - 7):  # chunks that straddle parts
            out.write(memoryview(payload)[start : start + 1024 * 1024 - 7])

    assert [len(part["body"]) for part in sent] == [5 * MIB, 5 * MIB, 2 * MIB]
    assert b"".join(part["body"] for part in sent) == payload
    # Each part is handed over as the buffer's own bytes: signed and sent in one piece, not read
    # back in copies as a file (the last, shorter part too).
    assert [part["kind"] for part in sent] == ["bytearray"] * 3
    for part in sent:
        assert part["headers"]["x-amz-checksum-crc32"] == _header_value(part["body"])
        assert part["headers"]["x-amz-sdk-checksum-algorithm"] == "CRC32"
    assert botocore_crc_bytes == []
    assert client.get_object(Bucket=s3_bucket, Key="out/video.mp4")["Body"].read() == payload


@pytest.mark.parametrize("replace", [True, False])
def test_without_a_client_the_one_built_has_the_client_kwargs_and_the_checksums(
    moto_s3_server: MotoS3, s3_bucket: str, botocore_crc_bytes: list[int], replace: bool
) -> None:
    """No ``client`` given: the one built (as smart-open would) takes ``client_kwargs["S3.Client"]``,
    also for a no-clobber write (which once built a bare ``boto3.client("s3")``)."""
    settings = {
        "endpoint_url": moto_s3_server.endpoint_url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    uri = f"s3://{s3_bucket}/built-{replace}.mp4"
    params = {"client_kwargs": {"S3.Client": settings}}
    with atomic_writer(uri, transport_params=params, replace=replace) as out:
        out.write(b"video" * 1000)
    body = moto_s3_server.client().get_object(Bucket=s3_bucket, Key=f"built-{replace}.mp4")["Body"].read()
    assert body == b"video" * 1000
    assert botocore_crc_bytes == []


def test_a_written_part_reread_from_the_middle_is_checksummed_from_there(
    moto_s3_server: MotoS3, s3_bucket: str, botocore_crc_bytes: list[int]
) -> None:
    """botocore checksums a body from its position: so do we (BytesIO, no running CRC)."""
    client = precompute_part_checksums(moto_s3_server.client())
    sent = _captured_parts(client)
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="k")["UploadId"]
    body = io.BytesIO(b"header" + b"x" * 1000)
    body.seek(6)
    client.upload_part(Bucket=s3_bucket, Key="k", UploadId=upload, PartNumber=1, Body=body)
    client.abort_multipart_upload(Bucket=s3_bucket, Key="k", UploadId=upload)

    assert sent[0]["body"] == b"x" * 1000
    assert sent[0]["headers"]["x-amz-checksum-crc32"] == _header_value(b"x" * 1000)
    assert botocore_crc_bytes == []


# ----------------------------------------------------------------- HTTPS, up to the wire


class _EmptyBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


def _unserved_client(scheme: str = "https", **config: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A client whose requests are answered by a handler, not the network (nothing is listening)."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=f"{scheme}://s3.example.invalid",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(**config) if config else None,
    )
    sent = _captured_parts(client)

    def answer(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, 200, {"ETag": '"etag"'}, _EmptyBody())

    client.meta.events.register("before-send.s3", answer)
    return client, sent


def _upload_part(client: Any, body: Any) -> None:
    client.upload_part(Bucket="bucket", Key="key", UploadId="upload", PartNumber=1, Body=body)


def _part_buffer(data: bytes) -> PartBuffer:
    buffer = PartBuffer()
    buffer.write(data)
    buffer.seek(0)
    return buffer


def test_plain_http_request_is_the_one_botocore_would_send(botocore_crc_bytes: list[int]) -> None:
    data = b"frame" * 200_000
    plain, plain_sent = _unserved_client("http")
    _upload_part(plain, _part_buffer(data))
    assert sum(botocore_crc_bytes) == len(data)  # botocore's own pass, for the reference request
    botocore_crc_bytes.clear()

    ours, ours_sent = _unserved_client("http")
    precompute_part_checksums(ours)
    precompute_part_checksums(ours)  # registering twice is harmless
    _upload_part(ours, _part_buffer(data))

    assert botocore_crc_bytes == []  # none for ours
    assert ours_sent[0]["headers"] == plain_sent[0]["headers"]
    assert ours_sent[0]["headers"]["x-amz-checksum-crc32"] == _header_value(data)
    assert ours_sent[0]["body"] == data


def test_https_trailer_becomes_the_header_and_the_payload_stays_unsigned(
    botocore_crc_bytes: list[int],
) -> None:
    data = b"frame" * 200_000
    plain, plain_sent = _unserved_client("https")
    _upload_part(plain, _part_buffer(data))
    # botocore's own way over TLS: an aws-chunked body with the CRC32 in a trailer.
    assert plain_sent[0]["headers"]["X-Amz-Trailer"] == "x-amz-checksum-crc32"
    assert plain_sent[0]["headers"]["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    botocore_crc_bytes.clear()

    ours, ours_sent = _unserved_client("https")
    precompute_part_checksums(ours)
    _upload_part(ours, _part_buffer(data))
    headers = ours_sent[0]["headers"]
    assert headers["x-amz-checksum-crc32"] == _header_value(data)
    assert headers["x-amz-sdk-checksum-algorithm"] == "CRC32"
    assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"  # no SigV4 hash of the payload
    assert headers["X-Amz-Trailer"] is None and headers["Content-Encoding"] is None
    assert headers["Content-Length"] == str(len(data)) and ours_sent[0]["body"] == data
    assert botocore_crc_bytes == []


def test_a_part_sent_again_after_a_server_error_is_sent_whole() -> None:
    """botocore re-sends a bytes-like body as it is (a file-like one it must seek back)."""
    data = b"frame" * 200_000
    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://s3.example.invalid",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )
    precompute_part_checksums(client)
    sent = _captured_parts(client)
    statuses = iter([500, 200])

    def answer(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, next(statuses), {"ETag": '"etag"'}, _EmptyBody())

    client.meta.events.register("before-send.s3", answer)
    _upload_part(client, _part_buffer(data))
    assert [part["body"] == data for part in sent] == [True, True]
    assert sent[1]["headers"] == sent[0]["headers"]


def test_nothing_is_added_when_botocore_would_send_no_crc32() -> None:
    data = b"frame" * 1000
    when_required, sent = _unserved_client("https", request_checksum_calculation="when_required")
    precompute_part_checksums(when_required)
    _upload_part(when_required, _part_buffer(data))
    assert sent[0]["headers"]["x-amz-checksum-crc32"] is None

    other_algorithm, sent = _unserved_client()
    precompute_part_checksums(other_algorithm)
    body = _part_buffer(data)
    other_algorithm.upload_part(
        Bucket="bucket", Key="key", UploadId="u", PartNumber=1, Body=body, ChecksumAlgorithm="SHA256"
    )
    assert sent[0]["headers"]["x-amz-checksum-crc32"] is None
    assert sent[0]["headers"]["x-amz-sdk-checksum-algorithm"] == "SHA256"


def test_a_body_that_is_not_an_in_memory_buffer_is_left_to_botocore(
    tmp_path: Any, botocore_crc_bytes: list[int]
) -> None:
    path = tmp_path / "part.bin"
    path.write_bytes(b"on disk" * 1000)
    client, sent = _unserved_client()
    precompute_part_checksums(client)
    with path.open("rb") as body:
        _upload_part(client, body)
    assert sum(botocore_crc_bytes) == len(b"on disk" * 1000)
    assert sent[0]["headers"]["X-Amz-Trailer"] == "x-amz-checksum-crc32"  # botocore's trailer, as without us


# ------------------------------------------------------------- the upload declares its CRC32


def _completions(client: Any) -> list[bytes]:
    """The body of every CompleteMultipartUpload the client sends."""
    sent: list[bytes] = []
    client.meta.events.register(
        "before-send.s3.CompleteMultipartUpload", lambda request, **_: sent.append(bytes(request.body))
    )
    return sent


@pytest.mark.parametrize("replace", [True, False])
def test_the_upload_declares_the_parts_crc32_and_completes_with_each(
    moto_s3_server: MotoS3, s3_bucket: str, replace: bool
) -> None:
    """As boto3's upload_fileobj: CreateMultipartUpload names CRC32 and the completion lists each
    part's (S3 refuses a CRC32 upload's completion without them). Undeclared, the store computes
    a full-object CRC64NVME when it completes the upload, reading the whole object again."""
    from boto3.s3.transfer import TransferConfig

    client = moto_s3_server.client()
    completions = _completions(client)
    payload = bytes(range(256)) * (48 * 1024)  # 12 MiB: parts of 5, 5 and 2 MiB
    uri = f"s3://{s3_bucket}/ours-{replace}.mp4"
    with atomic_writer(
        uri, transport_params={"client": client, "min_part_size": 5 * MIB}, replace=replace
    ) as out:
        for start in range(0, len(payload), MIB):
            out.write(payload[start : start + MIB])

    import xml.etree.ElementTree as ET

    listed = {
        part.findtext("{*}PartNumber"): part.findtext("{*}ChecksumCRC32")
        for part in ET.fromstring(completions[-1]).iter("{http://s3.amazonaws.com/doc/2006-03-01/}Part")
    }
    parts = [payload[: 5 * MIB], payload[5 * MIB : 10 * MIB], payload[10 * MIB :]]
    assert listed == {str(number): _header_value(part) for number, part in enumerate(parts, start=1)}
    ours = client.head_object(Bucket=s3_bucket, Key=f"ours-{replace}.mp4", ChecksumMode="ENABLED")
    # The object's checksum is the one boto3's own multipart upload of the same parts gets.
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    client.upload_fileobj(io.BytesIO(payload), s3_bucket, "boto3.mp4", Config=config)
    theirs = client.head_object(Bucket=s3_bucket, Key="boto3.mp4", ChecksumMode="ENABLED")
    assert ours.get("ChecksumCRC32") and ours.get("ChecksumCRC32") == theirs.get("ChecksumCRC32")
    assert client.get_object(Bucket=s3_bucket, Key=f"ours-{replace}.mp4")["Body"].read() == payload
    assert _crcs_kept(client) == (set(), {})  # nothing kept once the upload is complete


def _crcs_kept(client: Any) -> tuple[set[str], dict[Any, str]]:
    from memories_provider.storage.s3_part_checksums import _PartCrcs

    crcs = _PartCrcs.of(client)
    return crcs.uploads, crcs.parts


def test_a_client_that_sends_no_part_checksum_declares_none(moto_s3_server: MotoS3, s3_bucket: str) -> None:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=moto_s3_server.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required"),
    )
    completions = _completions(client)
    payload = b"v" * (6 * MIB)
    with atomic_writer(
        f"s3://{s3_bucket}/plain.mp4", transport_params={"client": client, "min_part_size": 5 * MIB}
    ) as out:
        out.write(payload)
    assert b"ChecksumCRC32" not in completions[-1]
    assert client.get_object(Bucket=s3_bucket, Key="plain.mp4")["Body"].read() == payload


def test_an_upload_given_up_keeps_nothing(moto_s3_server: MotoS3, s3_bucket: str) -> None:
    client = moto_s3_server.client()
    with (
        pytest.raises(RuntimeError, match="stop"),
        atomic_writer(
            f"s3://{s3_bucket}/gone.mp4", transport_params={"client": client, "min_part_size": 5 * MIB}
        ) as out,
    ):
        out.write(b"x" * (6 * MIB))  # one part sent
        raise RuntimeError("stop")
    assert _crcs_kept(client) == (set(), {})
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


_REFUSAL = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>The provided token has expired.</Message></Error>"
)


def _refusing_store(listener: socket.socket, received: list[int]) -> None:
    """One S3 request answered 403 as S3 answers it: before the body when the request says
    'Expect: 100-continue', after reading it otherwise. ``received``: the body bytes it read."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as stream:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += stream.readline()
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
        )
        body = 0
        if headers.get(b"expect", b"").lower() != b"100-continue":
            body = len(stream.read(int(headers[b"content-length"])))
        received.append(body)
        conn.sendall(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n"
            + f"Content-Length: {len(_REFUSAL)}\r\n\r\n".encode()
            + _REFUSAL
        )


def test_a_part_the_store_refuses_is_not_sent_before_its_answer() -> None:
    """botocore sends a file-like S3 body after 'Expect: 100-continue' (every UploadPart it is
    given a buffer for): a part the store refuses (an expired token, an aborted upload) is
    answered before its bytes go out. Handing the part over as a bytearray must keep that."""
    data = b"frame" * 200_000
    received: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)  # a guard against a hang, not a synchronisation
        store = threading.Thread(target=_refusing_store, args=(listener, received))
        store.start()
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 1}),
        )
        precompute_part_checksums(client)
        with pytest.raises(ClientError, match="AccessDenied"):
            _upload_part(client, _part_buffer(data))
        store.join()
    assert received == [0]
