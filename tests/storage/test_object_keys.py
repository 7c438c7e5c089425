"""An object-store URI's bucket, key and version are read as smart-open reads them.

What the provider names (the upload's file name, a download's result), checks (a destination's
rules) and puts in lineage must be the object smart-open then reads or writes: the one reading
(``uris.object_location``) is compared here with smart-open's own ``parse_uri`` of each
transport, over URIs whose keys hold what URL parsers take for something else.
"""

from __future__ import annotations

from typing import Any

import pytest

from memories_provider.lineage import lineage_dataset
from memories_provider.storage.destinations import basename_of, check_destination
from memories_provider.storage.files import storage_file_name
from memories_provider.storage.uris import object_key, object_location, redact_uri

HOSTILE_KEYS = [
    "k.mp4",
    "in/take 1.mp4",
    "in/take%201.mp4",
    "in/a%2Fb.mp4",
    "in/100%.mp4",
    "in/what?.mp4",
    "in/k.mp4?x=1",
    "in/take#2.mp4",
    "in/#.mp4",
    "in/a?b#c.mp4",
    "in/a#b?c.mp4",
    "in/a@b.mp4",
    "in/x@y:z.mp4",
    "in/u:p@h.mp4",
    "in/versionId=x.mp4",
    "in/dir/",
    "/lead.mp4",
    "//two.mp4",
    "",
    "in/a;b=c.mp4",
    "in/%3F.mp4",
    "in/%23.mp4",
]

VERSIONED = [
    "in/k.mp4?versionId=v1",  # alone
    "in/k.mp4?versionId=v1&x=1",  # first
    "in/k.mp4?x=1&versionId=v1&y=2",  # middle
    "in/k.mp4?x=1&versionId=v1",  # last
    "in/k.mp4?versionId=",  # empty
    "in/k#1.mp4?versionId=v1",
    "in/a@b.mp4?versionId=v1",
]


def _smart_open(uri: str) -> tuple[str, str, str | None]:
    from smart_open import azure, gcs, s3

    scheme = uri.partition("://")[0].lower()
    if scheme in s3.SCHEMES:
        parsed: Any = s3.parse_uri(uri)
        return parsed["bucket_id"], parsed["key_id"], parsed["version_id"]
    if scheme in gcs.SCHEMES:
        parsed = gcs.parse_uri(uri)
        return parsed["bucket_id"], parsed["blob_id"], None
    parsed = azure.parse_uri(uri)
    return parsed["container_id"], parsed["blob_id"], None


URIS = (
    [f"{scheme}://bucket/{key}" for scheme in ("s3", "s3a", "gs", "gcs", "azure") for key in HOSTILE_KEYS]
    + [f"s3://bucket/{key}" for key in VERSIONED]
    + [f"gs://bucket/{key}" for key in VERSIONED]  # not a version on GCS: part of the key
    + [
        "s3://AKIAEXAMPLE:secret@bucket/in/k.mp4",
        "s3://AKIAEXAMPLE:se/cr+et@bucket/in/k.mp4",  # a '/' in the secret
        "s3://AKIAEXAMPLE:secret@bucket/in/a@b.mp4?versionId=v1",
        "s3://AKIAEXAMPLE:se?cr#et@bucket/in/k.mp4",  # '?' and '#' in the secret
        "s3://AKIAEXAMPLE:se?cret@bucket/in/k.mp4?versionId=v1",
        "s3://bucket/in/a:b@c.mp4",  # no credentials: '/' before the ':'
        "S3://bucket/in/what?.mp4",
        "GS://bucket/in/what?.mp4",
        "azure://blob.mp4",  # the root container
        "azure://blob.mp4?sig=x",
        "azure://container/in/k.mp4?sig=x",
        "azure://container//k.mp4",
    ]
)


@pytest.mark.parametrize("uri", URIS)
def test_a_key_is_read_as_smart_open_reads_it(uri: str) -> None:
    assert tuple(object_location(uri) or ()) == _smart_open(uri)


@pytest.mark.parametrize("uri", [u for u in URIS if u.startswith(("s3", "S3"))])
def test_the_upload_announces_the_key_smart_open_reads(uri: str) -> None:
    key = _smart_open(uri)[1]
    expected = "" if key.endswith("/") else key.rpartition("/")[2]
    assert storage_file_name(uri) == expected


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("s3://bucket/k.mp4", "k.mp4"),
        ("file:///k.mp4", None),
        ("https://host/k.mp4?a=b", None),
        ("k.mp4", None),
    ],
)
def test_other_schemes_have_no_object_key(uri: str, key: str | None) -> None:
    assert object_key(uri) == key


def test_the_root_container_blob_is_named_by_its_name() -> None:
    # azure://blob.mp4 is the blob 'blob.mp4' of '$root': the download's result, the upload's file
    # name and lineage name it; they said '' (and lineage 'azure://blob.mp4' with no name).
    assert basename_of("azure://blob.mp4") == "blob.mp4"
    assert storage_file_name("azure://blob.mp4") == "blob.mp4"
    assert lineage_dataset("azure://blob.mp4") == ("azure://$root", "blob.mp4")
    assert storage_file_name("azure://container/") == ""  # a folder, refused as a source


@pytest.mark.parametrize("key", VERSIONED)
def test_a_versioned_key_is_named_without_its_version(key: str) -> None:
    uri = f"s3://bucket/{key}"
    assert lineage_dataset(uri) == ("s3://bucket", _smart_open(uri)[1])
    assert redact_uri(uri).startswith("s3://bucket/in/") and "v1" not in redact_uri(uri)


@pytest.mark.parametrize("key", VERSIONED)
def test_a_destination_naming_an_s3_version_is_refused(key: str) -> None:
    # smart-open refuses to write one ('version_id must be None when writing'), which the download
    # met only after its billed request, as an unnamed ValueError.
    with pytest.raises(ValueError, match=r"`destination` .* names an object version \(versionId=\)"):
        check_destination(f"s3://bucket/{key}")
    check_destination(f"gs://bucket/{key.replace('#', '')}")  # a GCS key may hold it
