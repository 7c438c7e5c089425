"""One measured transfer, in its own process: prints JSON with seconds, CPU, bytes and RSS figures.

``python bench/_child.py '<json args>'``. Everything heavy is imported, a tiny warm-up transfer
done and the garbage of both collected, before the RSS baseline is read; the peak is the
process's VmHWM (not ``ru_maxrss``, which survives fork+exec and would include the parent's peak).
CPU seconds (user, system: all threads, and any command the transfer ran) count the measured
transfer only.
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from typing import Any


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class _TaskInstance:
    dag_id, task_id, run_id, map_index = "bench", "t", "r", -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def ours_download(args: dict[str, Any], asset_id: str, destination: str) -> int:
    from memories_provider.operators.download import MemoriesDownloadOperator

    result = MemoriesDownloadOperator(
        task_id="t",
        asset_id=asset_id,
        destination=destination,
        overwrite=True,
        destination_conn_id=args.get("conn_id"),
        transport_params=args.get("transport_params"),
        checksum=args.get("checksum", "sha256"),
    ).execute({})
    return int(result["bytes"])


def ours_upload(args: dict[str, Any], source: str) -> int:
    from memories_provider.operators.upload import MemoriesUploadOperator

    MemoriesUploadOperator(
        task_id="t", source=source, source_conn_id=args.get("conn_id"), idempotent=False
    ).execute({"ti": _TaskInstance()})
    return 0


def s3_client(endpoint: str) -> Any:
    """A client of a new boto3 session: as in a task (a fresh process), the S3 model is loaded for
    each transfer; ``boto3.client`` would reuse the warm-up's and hide that cost from the baseline."""
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def baseline_http_to_s3(args: dict[str, Any], url: str, key: str) -> int:
    """boto3 ``upload_fileobj`` reading the HTTP body stream (the usual hand-written way)."""
    import requests
    from boto3.s3.transfer import TransferConfig

    with requests.get(url, headers={"Authorization": args["api_key"]}, stream=True, timeout=600) as resp:
        resp.raise_for_status()
        resp.raw.decode_content = False
        config = TransferConfig(multipart_chunksize=args["part_size"], max_concurrency=1)
        s3_client(args["s3_endpoint"]).upload_fileobj(resp.raw, args["bucket"], key, Config=config)
    return 0


def baseline_s3_then_curl(args: dict[str, Any], key: str, tmp: str, upload_url: str) -> int:
    """Download from S3 to a temporary file, then ``curl -F``: what people do without streaming."""
    from boto3.s3.transfer import TransferConfig

    # One streamed GET (no ranged parallel parts: moto answers each range by reading the whole
    # object, which would make this baseline look far slower than it is against real S3).
    single_get = TransferConfig(multipart_threshold=1 << 40, use_threads=False)
    s3_client(args["s3_endpoint"]).download_file(args["bucket"], key, tmp, Config=single_get)
    subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            "-o",
            "/dev/null",
            "-H",
            f"Authorization: {args['api_key']}",
            "-F",
            f"file=@{tmp};type=video/mp4",
            upload_url,
        ],
        check=True,
    )
    return 0


def main() -> None:
    args = json.loads(sys.argv[1])
    kind = args["kind"]
    funcs = {
        "ours_download": lambda target: ours_download(args, *target),
        "ours_upload": lambda target: ours_upload(args, *target),
        "baseline_http_to_s3": lambda target: baseline_http_to_s3(args, *target),
        "baseline_s3_then_curl": lambda target: baseline_s3_then_curl(args, *target),
    }
    run = funcs[kind]
    run(args["warm"])
    # The full collection the imports left pending (their objects promoted without one: Airflow's
    # are some 250 000) would otherwise land in the measured transfer of whichever side allocates
    # a little more, about 0.15 CPU-s to scan objects the transfer never made.
    gc.collect()
    base = vm_kib("VmRSS") * 1024
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    run(args["target"])
    seconds = time.perf_counter() - start
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]

    def spent(field: str) -> float:
        return float(sum(getattr(a, field) - getattr(b, field) for a, b in zip(after, before, strict=True)))

    print(
        json.dumps(
            {
                "seconds": seconds,
                "user": spent("ru_utime"),
                "sys": spent("ru_stime"),
                # Diagnostics: page faults, context switches (waits, preemptions), blocks written.
                "minflt": spent("ru_minflt"),
                "nvcsw": spent("ru_nvcsw"),
                "nivcsw": spent("ru_nivcsw"),
                "oublock": spent("ru_oublock"),
                "rss_before": base,
                "peak": vm_kib("VmHWM") * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
