"""Each S3 part's CRC32, kept as the part is written and handed to botocore, so it does not reread the part.

Since botocore 1.36 (``request_checksum_calculation="when_supported"``, its default) every
``UploadPart`` carries a CRC32 of the part. botocore computes it with the standard ``zlib``
(~2 GB/s) over the part read back from its body: in 1 MiB copies for an ``x-amz-checksum-crc32``
header (plain HTTP), or while sending for an ``aws-chunked`` trailer (HTTPS), which also frames
every chunk in a new copy. A quarter to half a CPU-second per GiB, a tenth of a download to S3.

The hook here runs between botocore's choice of the checksum and its computation
(``before-call.s3.UploadPart``) and sets the header itself, from the CRC32 the
:class:`~memories_provider.storage.part_buffer.PartBuffer` kept while the bytes were written (in
the cache, with zlib-ng's vectorised CRC: ``pip install airflow-provider-memories[s3]``; the
standard ``zlib`` otherwise), or from any ``getbuffer()`` body in place. botocore sees the header
set and skips its own pass. A trailer becomes that header: the request is then the one botocore
sends over plain HTTP, and over HTTPS still unsigned (``UNSIGNED-PAYLOAD``: TLS and a checksum
header, botocore's own rule), with the part as a plain body. Nothing is done when botocore would
send no CRC32 (checksums ``when_required``, another algorithm chosen) or when the body is not an
in-memory buffer.

A :class:`~memories_provider.storage.part_buffer.PartBuffer` read from its start is also handed
over as its own ``bytearray`` (:meth:`~memories_provider.storage.part_buffer.PartBuffer.as_body`):
botocore then hashes it for a SigV4 signature (plain HTTP) in one call and urllib3 sends it in one
``sendall``, where a file-like body is read back in copies, 1 MiB for the hash and 16 KiB a send,
each a Python call (about a fifth of a CPU-second per GiB).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from typing import Any

_crc32: Callable[[Any, int], int]
try:  # ~20 GB/s with SIMD; the standard zlib's is ~2 GB/s
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - the [s3] extra installs zlib-ng
    _crc32 = zlib.crc32

_EVENT = "before-call.s3.UploadPart"
_HANDLER_ID = "memories-provider-part-crc32"
_HEADER = "x-amz-checksum-crc32"


def crc32(data: Any, value: int = 0) -> int:
    """The CRC32 of ``data`` (any bytes-like object), continuing from ``value`` (as ``zlib.crc32``)."""
    return _crc32(data, value) & 0xFFFFFFFF


def as_header(crc: int) -> str:
    """A CRC32 as S3's ``x-amz-checksum-crc32`` carries it: base64 of its 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def precompute_part_checksums(client: Any) -> Any:
    """Register the in-place CRC32 on ``client`` (a boto3 S3 client) and return it, with the
    bookkeeping of :func:`crc32_upload_args`.

    Idempotent: the handlers are registered once per client, whatever the number of calls.
    """
    client.meta.events.register(_EVENT, _fill_part_crc32, unique_id=_HANDLER_ID)
    _PartCrcs.of(client)
    return client


def crc32_upload_args(client: Any) -> dict[str, str]:
    """Arguments for ``CreateMultipartUpload`` that declare the CRC32 the parts carry, as boto3's
    own ``upload_fileobj`` does, when ``client`` sends one with each part (botocore's default);
    ``{}`` otherwise (a part without a checksum would fail such an upload's completion).

    Declared, the object gets the composite CRC32 of its parts, the checksums each part already
    carries. Undeclared, S3 (and moto) compute a full-object CRC64NVME of the object when it is
    completed: moto reads the whole object again for it, in Python, about 2 CPU-s per GiB. The
    completion then names each part's CRC32 (S3 refuses it otherwise): :func:`precompute_part_checksums`
    keeps the one each part was sent with, and adds them.
    """
    if getattr(client.meta.config, "request_checksum_calculation", None) != "when_supported":
        return {}
    return {"ChecksumAlgorithm": "CRC32"}


class _PartCrcs:
    """The CRC32 each part of a CRC32 multipart upload was sent with, by ``(UploadId, PartNumber)``,
    until the upload is completed or aborted; registered on one client."""

    def __init__(self) -> None:
        self.uploads: set[str] = set()  # created with ChecksumAlgorithm=CRC32
        self.parts: dict[tuple[str, int], str] = {}

    @classmethod
    def of(cls, client: Any) -> _PartCrcs:
        found = getattr(client, "_memories_part_crc32s", None)
        if isinstance(found, cls):
            return found
        crcs = cls()
        client._memories_part_crc32s = crcs
        events = client.meta.events
        events.register(
            "before-call.s3.CreateMultipartUpload", crcs.creating, unique_id=f"{_HANDLER_ID}-creating"
        )
        events.register(
            "after-call.s3.CreateMultipartUpload", crcs.created, unique_id=f"{_HANDLER_ID}-created"
        )
        events.register("before-call.s3.UploadPart", crcs.sending, unique_id=f"{_HANDLER_ID}-note")
        events.register("after-call.s3.UploadPart", crcs.sent, unique_id=f"{_HANDLER_ID}-sent")
        events.register(
            "before-parameter-build.s3.CompleteMultipartUpload",
            crcs.completing,
            unique_id=f"{_HANDLER_ID}-complete",
        )
        events.register(
            "before-parameter-build.s3.AbortMultipartUpload", crcs.aborting, unique_id=f"{_HANDLER_ID}-abort"
        )
        return crcs

    def creating(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        algorithm = params["headers"].get("x-amz-checksum-algorithm", "")
        context["memories_crc32_upload"] = str(algorithm).upper() == "CRC32"

    def created(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if (
            http_response.status_code < 300
            and context.get("memories_crc32_upload")
            and parsed.get("UploadId")
        ):
            self.uploads.add(parsed["UploadId"])

    def sending(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        query = params.get("query_string") or {}
        upload, number = query.get("uploadId"), query.get("partNumber")
        if upload in self.uploads and number is not None:
            # The headers botocore sends: its own CRC32 header is added after this handler.
            context["memories_part"] = (upload, int(number), params["headers"])

    def sent(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        noted = context.get("memories_part")
        if noted is None or http_response.status_code >= 300:
            return
        upload, number, headers = noted
        value = parsed.get("ChecksumCRC32") or headers.get(_HEADER)
        if value:
            self.parts[(upload, number)] = value if isinstance(value, str) else value.decode("ascii")

    def completing(self, params: dict[str, Any], **_: Any) -> None:
        upload = params.get("UploadId")
        if upload not in self.uploads:
            return
        self.uploads.discard(upload)
        known = {number: crc for (up, number), crc in self.parts.items() if up == upload}
        for number in known:
            del self.parts[(upload, number)]
        for part in (params.get("MultipartUpload") or {}).get("Parts") or []:
            crc = known.get(part.get("PartNumber"))
            if crc is not None:
                part.setdefault("ChecksumCRC32", crc)

    def aborting(self, params: dict[str, Any], **_: Any) -> None:
        upload = params.get("UploadId")
        self.uploads.discard(upload)
        for key in [key for key in self.parts if key[0] == upload]:
            del self.parts[key]


def _fill_part_crc32(params: dict[str, Any], **_: Any) -> None:
    """botocore ``before-call`` handler: ``params`` is the serialized request dict."""
    checksum = params.get("context", {}).get("checksum", {})
    algorithm = checksum.get("request_algorithm")
    if not isinstance(algorithm, dict) or algorithm.get("algorithm") != "crc32":
        return
    headers, body = params["headers"], params.get("body")
    getbuffer = getattr(body, "getbuffer", None)
    if algorithm.get("in") not in ("header", "trailer") or _HEADER in headers or getbuffer is None:
        return
    # Where botocore itself puts it over plain HTTP (or with an ``s3`` signature): a header.
    checksum["request_algorithm"] = {**algorithm, "in": "header", "name": _HEADER}
    # botocore checksums the body from its current position to its end (and seeks back).
    position = body.tell()  # type: ignore[union-attr]
    running = getattr(body, "crc32", None)  # PartBuffer's, kept up to date as the part was written
    if position == 0 and running is not None:
        headers[_HEADER] = as_header(running())
        whole = body.as_body()  # type: ignore[union-attr]
        if whole is not None:
            params["body"] = whole
            # What botocore asks for any file-like body of a PUT (``add_expect_header``), which
            # the bytearray no longer is: the part is held back until the store agrees, so a part
            # it refuses (an expired token, an aborted upload) is answered before it is sent.
            headers["Expect"] = "100-continue"
        return
    with getbuffer() as content, content[position:] as rest:
        headers[_HEADER] = as_header(crc32(rest))
