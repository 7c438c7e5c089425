"""Lineage names: one function per idea, and never a secret from a storage URI."""

from __future__ import annotations

import pytest

from memories_provider.lineage import lineage_dataset, video_dataset_name


@pytest.mark.parametrize(
    ("uri", "dataset"),
    [
        ("/data/a.mp4", ("file", "/data/a.mp4")),
        ("file:///data/a.mp4", ("file", "/data/a.mp4")),
        ("s3://key:secret@bucket/in/a.mp4", ("s3://bucket", "in/a.mp4")),
        ("s3://AKIAEXAMPLE:wJalr/XUtnFEMI@bucket/in/a.mp4", ("s3://bucket", "in/a.mp4")),  # '/' in a secret
        ("s3://bucket/in/a:b@c.mp4", ("s3://bucket", "in/a:b@c.mp4")),
        ("gs://bucket/a.mp4", ("gs://bucket", "a.mp4")),
        ("s3://bucket/in/take#2?.mp4", ("s3://bucket", "in/take#2?.mp4")),  # the key, '?' and '#' included
        ("gs://bucket/a#1.mp4", ("gs://bucket", "a#1.mp4")),
        ("sftp://me:pw@host/in/a.mp4", ("sftp://host:22", "/in/a.mp4")),
        ("ssh://host:2222/a.mp4", ("ssh://host:2222", "/a.mp4")),
        ("https://u:tok@host/in/a.mp4?X-Amz-Signature=s3cr3t", ("https://host", "/in/a.mp4")),
    ],
)
def test_storage_uris_become_datasets_without_credentials(uri: str, dataset: tuple[str, str]) -> None:
    assert lineage_dataset(uri) == dataset


def test_video_dataset_name() -> None:
    assert video_dataset_name("default", "VI1") == "video/default/VI1"
