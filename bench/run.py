"""``make bench``: our transfers and status waits against plain tools, side by side, in one run.

Every figure of ours is a ratio to a baseline measured in the same run, on the same emulator and
the same files, over several rounds (min / median / max), with the CPU time each side spent per
GiB. Writes ``bench/RESULTS.md`` and ``bench/results.png``. ``--smoke`` runs tiny sizes only (used
by the test suite); ``--only``, ``--sizes`` and ``--rounds`` run a part of it, e.g.
``--only download --sizes 64MiB --rounds 3`` (written to ``bench/out/RESULTS-partial.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MIB = 1024**2
GIB = 1024**3
S3_PART = 16 * MIB
GB = 10**9
#: The largest size is the largest file memories.ai accepts ("max 3 GB", read as 3 * 10**9 bytes):
#: the same files serve the download and the upload rows.
SIZES = {"256 MiB": 256 * MIB, "1 GiB": GIB, "3 GB": 3 * GB}
SMOKE_SIZES = {"1 MiB": MIB}
#: The parts of the bench ``--only`` can pick.
PARTS = ("download", "upload", "s3", "status", "ha", "export")


# ------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_file(path: Path, size: int) -> Path:
    """A file of ``size`` real (non-sparse) bytes: a 1 MiB random block repeated."""
    if path.exists() and path.stat().st_size == size:
        return path
    block = os.urandom(MIB)
    with open(path, "wb") as fh:
        for _ in range(size // MIB):
            fh.write(block)
        fh.write(block[: size % MIB])
    return path


def child(script: str, args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / script), json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {args.get('kind', args.get('mode'))} failed:\n{proc.stderr[-3000:]}")
    # The result is the last JSON line: Airflow 2.11 may log to stdout after it (at exit).
    results = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not results:
        raise RuntimeError(f"{script} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dict(json.loads(results[-1]))


def parse_size(text: str) -> tuple[str, int]:
    """``"256 MiB"``, ``"64MiB"``, ``"1GiB"``, ``"3 GB"`` -> (label, bytes)."""
    found = re.fullmatch(r"\s*(\d+)\s*(MiB|GiB|GB)\s*", text)
    if not found:
        raise ValueError(f"--sizes: {text!r} is not a size; use e.g. 64MiB, 1GiB or 3GB")
    number, unit = int(found[1]), found[2]
    return f"{number} {unit}", number * {"MiB": MIB, "GiB": GIB, "GB": GB}[unit]


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``: its wall-clock seconds and the CPU seconds (user, system) it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
    }


def timed(cmd: list[str]) -> float:
    return float(run_measured(cmd)["seconds"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, in ``directory`` (PEM): the certificate is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "moto-cert.pem", directory / "moto-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def moto_server(tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, int]]:
    """moto's S3 in its own process (so it does not share a GIL with what is measured); over HTTPS
    with ``tls`` (certificate, key), as real S3 is reached."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    if tls is not None:
        cmd += ["--ssl-cert", str(tls[0]), "--ssl-key", str(tls[1])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield endpoint, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Every run's seconds (and the median); median CPU seconds; the worst peak and the lowest
    pre-transfer RSS."""
    return {
        "seconds": statistics.median(r["seconds"] for r in results),
        "all_seconds": [r["seconds"] for r in results],
        "user": statistics.median(r.get("user", 0.0) for r in results),
        "sys": statistics.median(r.get("sys", 0.0) for r in results),
        "peak": max(r.get("peak", 0) for r in results),
        "rss_before": min(r.get("rss_before", 0) for r in results) if "rss_before" in results[0] else 0,
        **(
            {"server_cpu": statistics.median(r["server_cpu"] for r in results)}
            if "server_cpu" in results[0]
            else {}
        ),
    }


def round_orders(names: list[str], runs: int, rng: random.Random) -> list[list[str]]:
    """One order of the contenders per round: every rotation of the list and of its reverse (so each
    contender comes right after each other one equally often), shuffled, then repeated."""
    designs: list[list[str]] = []
    for seq in (names, names[::-1]):
        for k in range(len(seq)):
            order = seq[k:] + seq[:k]
            if order not in designs:
                designs.append(order)
    rng.shuffle(designs)
    return [designs[i % len(designs)] for i in range(runs)]


def interleaved(
    runs: int,
    measures: dict[str, Callable[[], dict[str, Any]]],
    settle: Callable[[], None],
    rng: random.Random,
) -> dict[str, dict[str, Any]]:
    """Run the contenders in rounds, in a varied order, ``settle()`` before each run; summarize each.

    Interleaving spreads bursts of load on a shared machine over all contenders; varying the order
    (:func:`round_orders`, seeded) keeps one side from always following the other and so from
    always inheriting the same machine state; settling (flushing dirty pages, removing the last
    output) keeps one run from paying for the previous run's write-back.
    """
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    previous = "-"
    for order in round_orders(list(measures), runs, rng):
        for name in order:
            settle()
            found = measures[name]()
            results[name].append(found)
            server = f", server CPU {found['server_cpu']:.2f} s" if "server_cpu" in found else ""
            log(
                f"  {name}: {found['seconds']:.2f} s, CPU user {found.get('user', 0):.2f} s "
                f"sys {found.get('sys', 0):.2f} s{server} (after {previous})"
            )
            previous = name
    return {name: summarize(found) for name, found in results.items()}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_server_cpu(pid: int, measure: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``measure`` that also reports the CPU seconds server ``pid`` spent during it (a diagnostic)."""

    def measured() -> dict[str, Any]:
        before = process_cpu(pid)
        found = measure()
        return {**found, "server_cpu": process_cpu(pid) - before}

    return measured


def seconds_of(cmd: list[str]) -> Callable[[], dict[str, Any]]:
    return lambda: run_measured(cmd)


# ------------------------------------------------------------------ the benchmarks


class Bench:
    def __init__(
        self,
        out: Path,
        emu: Any,
        runs: int,
        sizes: dict[str, int],
        ns: list[int],
        smoke: bool,
        seed: int = 20,
        parts: tuple[str, ...] = PARTS,
    ) -> None:
        self.out, self.emu, self.runs, self.sizes, self.ns, self.smoke = out, emu, runs, sizes, ns, smoke
        self.rng = random.Random(seed)
        self.seed, self.parts = seed, parts
        self.rows: list[dict[str, Any]] = []
        self.status_rows: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []
        self.cpu_rows: list[dict[str, Any]] = []
        self.ha_rows: list[dict[str, Any]] = []
        self.export_rows: list[dict[str, Any]] = []
        self.env = dict(os.environ)
        self.env["AIRFLOW_CONN_MEMORIES_DEFAULT"] = emu.conn_uri
        self.env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        self.auth = ["-H", f"Authorization: {emu.api_key}"]

    def add(
        self,
        what: str,
        size: int,
        ours: dict[str, Any],
        base: dict[str, Any],
        goal: str,
        factor: float,
        *,
        every_round: bool = False,
        also: bool = True,
        cpu_goal: str = "",
        cpu_limit: float | None = None,
    ) -> None:
        """One throughput row (MB/s min / median / max over the rounds) and its CPU per GiB.

        :param factor: the goal, ours / baseline at the median (``> factor`` when ``factor`` is 1.0,
            i.e. "faster than"; else ``≥``).
        :param every_round: the slowest round of ours must meet ``factor`` against the slowest of
            the baseline too.
        :param also: any further condition of the goal (memory...).
        :param cpu_limit: CPU seconds (user + system) per GiB that ours may spend, if there is a goal.
        """
        a = [size / s / 1e6 for s in ours["all_seconds"]]
        b = [size / s / 1e6 for s in base["all_seconds"]]
        med, low = statistics.median(a) / statistics.median(b), min(a) / min(b)
        ok = (med > factor if factor == 1.0 else med >= factor) and also
        if every_round:
            ok = ok and low >= factor
        row = {
            "what": what,
            "ours": statistics.median(a),
            "ours_min": min(a),
            "ours_max": max(a),
            "baseline": statistics.median(b),
            "base_min": min(b),
            "base_max": max(b),
            "ratio": med,
            "ratio_min": low,
            "unit": "MB/s",
            "goal": goal,
            "ok": ok,
        }
        self.rows.append(row)
        per_gib = GIB / size
        cpu = {
            "what": what,
            "ours_user": ours["user"] * per_gib,
            "ours_sys": ours["sys"] * per_gib,
            "base_user": base["user"] * per_gib,
            "base_sys": base["sys"] * per_gib,
            "goal": cpu_goal,
        }
        total = cpu["ours_user"] + cpu["ours_sys"]
        cpu["ok"] = None if cpu_limit is None else total <= cpu_limit
        self.cpu_rows.append(cpu)
        log(
            f"{what}: ours {row['ours']:.0f} MB/s ({row['ours_min']:.0f}-{row['ours_max']:.0f}), baseline "
            f"{row['baseline']:.0f} MB/s ({row['base_min']:.0f}-{row['base_max']:.0f}): {med:.2f}x "
            f"(slowest rounds {low:.2f}x) -> {'ok' if ok else 'MISSED'}; CPU per GiB ours "
            f"{cpu['ours_user']:.2f} user + {cpu['ours_sys']:.2f} sys, baseline {cpu['base_user']:.2f} + "
            f"{cpu['base_sys']:.2f}" + ("" if cpu["ok"] is None else f" -> {'ok' if cpu['ok'] else 'MISSED'}")
        )

    def drop_uploads(self) -> None:
        """Delete every uploaded video: the emulator keeps their bytes on disk, and five rounds of
        3 GB uploads by two contenders would otherwise fill it."""
        import requests

        by_namespace: dict[str, list[str]] = {}
        for video in self.emu.control.videos():
            by_namespace.setdefault(video["unique_id"], []).append(video["video_no"])
        for unique_id, video_nos in by_namespace.items():
            for start in range(0, len(video_nos), 100):
                resp = requests.post(
                    f"{self.emu.v1_url}/delete_videos",
                    params={"unique_id": unique_id},
                    json=video_nos[start : start + 100],
                    headers={"Authorization": self.emu.api_key},
                    timeout=60,
                )
                resp.raise_for_status()

    def runs_for(self, size: int) -> int:
        """Fewer rounds for the biggest transfers (and moto's slow S3), to stay within 20 minutes."""
        return min(self.runs, 3) if size >= 2 * GIB else self.runs

    # -------------------------------------------------------------- physical limits

    def disk_and_emulator(self, big: Path) -> None:
        target = self.out / "dd.bin"
        count = max(big.stat().st_size // MIB, 1)
        seconds = timed(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", "conv=fdatasync", "status=none"]
        )
        target.unlink()
        self.disk_mbps = count * MIB / seconds / 1e6
        asset = self.emu.control.add_asset(str(big), big.name, "video/mp4")
        url = f"{self.emu.v2_url}/{asset['asset_id']}/download"
        secs = statistics.median(
            timed(["curl", "-sS", "-f", "-o", "/dev/null", *self.auth, url]) for _ in range(self.runs)
        )
        self.emulator_mbps = big.stat().st_size / secs / 1e6
        # The reference the emulator must match: python -m http.server serving the same file.
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(big.parent),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            plain = f"http://127.0.0.1:{port}/{big.name}"
            deadline = time.monotonic() + 30
            while subprocess.run(["curl", "-s", "-o", "/dev/null", "-I", plain]).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("http.server did not start")
                time.sleep(0.2)
            secs = statistics.median(
                timed(["curl", "-sS", "-f", "-o", "/dev/null", plain]) for _ in range(self.runs)
            )
            self.http_server_mbps = big.stat().st_size / secs / 1e6
        finally:
            server.terminate()
            server.wait(timeout=30)
        log(
            f"disk (dd fdatasync) {self.disk_mbps:.0f} MB/s; "
            f"emulator serves {self.emulator_mbps:.0f} MB/s to curl, "
            f"http.server {self.http_server_mbps:.0f} MB/s"
        )

    # -------------------------------------------------------------- local files

    def local(self, label: str, path: Path, warm: Path, warm_asset: str) -> None:
        size = path.stat().st_size
        runs = self.runs_for(size)
        dest = self.out / "download.mp4"

        def settle() -> None:
            dest.unlink(missing_ok=True)
            self.drop_uploads()
            os.sync()

        if "download" in self.parts:
            asset = self.emu.control.add_asset(str(path), path.name, "video/mp4")["asset_id"]
            url = f"{self.emu.v2_url}/{asset}/download"
            # We fsync before the atomic rename (a crash must not leave an empty or partial file under
            # the final name); curl -o does not. The like-for-like "durable" baseline flushes too.
            durable = 'curl -sS -f -o "$1" -H "Authorization: $2" "$3" && sync -d "$1"'
            dl = interleaved(
                runs,
                {
                    "curl": seconds_of(["curl", "-sS", "-f", "-o", str(dest), *self.auth, url]),
                    "curl_sync": seconds_of(["sh", "-c", durable, "sh", str(dest), self.emu.api_key, url]),
                    "ours": lambda: child(
                        "_child.py",
                        {
                            "kind": "ours_download",
                            "warm": [warm_asset, str(self.out / "warm.mp4")],
                            "target": [asset, str(dest)],
                        },
                        self.env,
                    ),
                },
                settle,
                self.rng,
            )
            self.add(f"download to local file, {label}", size, dl["ours"], dl["curl"], "≥ 0.9x curl -o", 0.9)
            self.add(
                f"download to local file, durable, {label}",
                size,
                dl["ours"],
                dl["curl_sync"],
                "≥ 0.9x curl -o + fdatasync, median and slowest round",
                0.9,
                every_round=True,
                cpu_goal="≤ 1.5 CPU-s/GiB (sha256 on)",
                cpu_limit=1.5,
            )
            self.memory.append({"what": "download", "label": label, "size": size, **dl["ours"]})

        if "upload" in self.parts:
            upload_url = f"{self.emu.v1_url}/upload"
            curl_up = [
                "curl",
                "-sS",
                "-f",
                "-o",
                "/dev/null",
                *self.auth,
                "-F",
                f"file=@{path};type=video/mp4",
            ]
            up = interleaved(
                runs,
                {
                    "curl": seconds_of([*curl_up, upload_url]),
                    "ours": lambda: child(
                        "_child.py",
                        {"kind": "ours_upload", "warm": [str(warm)], "target": [str(path)]},
                        self.env,
                    ),
                },
                settle,
                self.rng,
            )
            self.add(
                f"upload from local file, {label}",
                size,
                up["ours"],
                up["curl"],
                "≥ 0.9x curl -F",
                0.9,
                cpu_goal="≤ 1.2 CPU-s/GiB",
                cpu_limit=1.2,
            )
            self.memory.append({"what": "upload", "label": label, "size": size, **up["ours"]})
        dest.unlink(missing_ok=True)

    # -------------------------------------------------------------- S3

    def s3(self, label: str, path: Path, warm: Path, warm_asset: str, *, tls: bool = False) -> None:
        """The S3 rows, against moto over plain HTTP (``tls=False``: the download and upload rows),
        or over HTTPS as real S3 is reached (the download rows). The transport changes what botocore
        hashes: over HTTP SigV4 signs every part's sha256 (both sides pay it), over HTTPS it sends
        ``UNSIGNED-PAYLOAD`` with a CRC32 (and TLS encrypts)."""
        size = path.stat().st_size
        runs = min(self.runs_for(size), 3)
        certificate = self_signed_certificate(self.out) if tls else None
        ca_env = {} if certificate is None else {"AWS_CA_BUNDLE": str(certificate[0])}
        with moto_server(certificate) as (endpoint, moto_pid), _environ(ca_env):
            sys.path.insert(0, str(HERE))
            from _child import s3_client

            over = ", HTTPS" if tls else ""
            client = s3_client(endpoint)
            bucket = "bench"
            client.create_bucket(Bucket=bucket)
            client.upload_file(str(path), bucket, "in/source.mp4")
            client.upload_file(str(warm), bucket, "in/warm.mp4")
            conn = {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
            env = {**self.env, **ca_env, "AIRFLOW_CONN_BENCH_S3": json.dumps(conn)}
            asset = self.emu.control.add_asset(str(path), path.name, "video/mp4")["asset_id"]
            common = {
                "s3_endpoint": endpoint,
                "bucket": bucket,
                "api_key": self.emu.api_key,
                "part_size": S3_PART,
            }
            url = f"{self.emu.v2_url}/{asset}/download"
            warm_url = f"{self.emu.v2_url}/{warm_asset}/download"

            def ours_to_s3(checksum: str | None, name: str) -> dict[str, Any]:
                args = {
                    "kind": "ours_download",
                    "conn_id": "bench_s3",
                    "checksum": checksum,
                    "transport_params": {"min_part_size": S3_PART},
                    "warm": [warm_asset, f"s3://{bucket}/out/warm.mp4"],
                    "target": [asset, f"s3://{bucket}/out/{name}"],
                }
                return child("_child.py", args, env)

            dl = interleaved(
                runs,
                {
                    "base": with_server_cpu(
                        moto_pid,
                        lambda: child(
                            "_child.py",
                            {
                                **common,
                                "kind": "baseline_http_to_s3",
                                "warm": [warm_url, "w"],
                                "target": [url, "base.mp4"],
                            },
                            env,
                        ),
                    ),
                    "ours": with_server_cpu(moto_pid, lambda: ours_to_s3("sha256", "ours.mp4")),
                    # Like for like: the baseline computes no sha256 of the whole video.
                    "ours_no_sha256": with_server_cpu(moto_pid, lambda: ours_to_s3(None, "ours-nosum.mp4")),
                },
                os.sync,
                self.rng,
            )
            base_dl, ours_dl = dl["base"], dl["ours"]
            growth = ours_dl["peak"] - ours_dl["rss_before"]
            base_cpu = (base_dl["user"] + base_dl["sys"]) * GIB / size
            self.add(
                f"download to S3 (moto{over}), {label}",
                size,
                ours_dl,
                base_dl,
                "≥ 0.9x boto3 upload_fileobj(HTTP stream); RSS ≤ part + 50 MiB",
                0.9,
                also=growth <= S3_PART + 50 * MIB,
                cpu_goal="≤ 1.2x boto3 upload_fileobj",
                cpu_limit=1.2 * base_cpu,
            )
            self.add(
                f"download to S3 (moto{over}), {label}, checksum=None",
                size,
                dl["ours_no_sha256"],
                base_dl,
                "(like for like: no sha256 on either side)",
                0.9,
                cpu_goal="≤ 1.2x boto3 upload_fileobj",
                cpu_limit=1.2 * base_cpu,
            )
            self.memory.append({"what": f"download to S3{over}", "label": label, "size": size, **ours_dl})
            if tls:
                return

            upload_url = f"{self.emu.v1_url}/upload"
            tmp = str(self.out / "s3-temp.mp4")
            up = interleaved(
                runs,
                {
                    "base": lambda: child(
                        "_child.py",
                        {
                            **common,
                            "kind": "baseline_s3_then_curl",
                            "warm": ["in/warm.mp4", tmp, upload_url],
                            "target": ["in/source.mp4", tmp, upload_url],
                        },
                        env,
                    ),
                    "ours": lambda: child(
                        "_child.py",
                        {
                            "kind": "ours_upload",
                            "conn_id": "bench_s3",
                            "warm": [f"s3://{bucket}/in/warm.mp4"],
                            "target": [f"s3://{bucket}/in/source.mp4"],
                        },
                        env,
                    ),
                },
                lambda: (self.drop_uploads(), os.sync()),
                self.rng,
            )
            Path(tmp).unlink(missing_ok=True)
            base_up, ours_up = up["base"], up["ours"]
            self.add(
                f"upload from S3 (moto), {label}",
                size,
                ours_up,
                base_up,
                "faster than S3→temp file→curl; no temp file",
                1.0,
            )
            self.memory.append({"what": "upload from S3", "label": label, "size": size, **ours_up})

    # -------------------------------------------------------------- status waits

    def status(self) -> None:
        import requests

        session = requests.Session()
        interval = 0.3 if self.smoke else 2.0
        duration = 3 * interval
        video_nos: list[str] = []
        for n in self.ns:
            self.emu.control.configure(rate_limits=False)
            while len(video_nos) < n:
                body = session.post(
                    f"{self.emu.v1_url}/upload",
                    headers={"Authorization": self.emu.api_key},
                    files={"file": ("v.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")},
                    timeout=30,
                ).json()
                video_nos.append(str(body["data"]["videoNo"]))
                self.emu.control.set_status(video_nos[-1], "UNPARSE")  # held: every wait runs to its end
            self.emu.control.configure(rate_limits=True)
            ids = video_nos[:n]
            args = {
                "video_nos": ids,
                "interval": interval,
                "duration": duration,
                "api_key": self.emu.api_key,
                "v1_url": self.emu.v1_url,
                "v2_url": self.emu.v2_url,
            }
            before = self._codes()
            ours = child("_status.py", {**args, "mode": "shared"}, self.env)
            ours_codes = self._codes(since=before)
            before = self._codes()
            child("_status.py", {**args, "mode": "per_video", "duration": interval * 1.5}, self.env)
            base_codes = self._codes(since=before)
            ticks = math.ceil(duration / interval)
            base_ticks = 2
            row = {
                "n": n,
                "ours_per_tick": ours_codes["total"] / ticks,
                "ours_429": ours_codes["0429"],
                "ours_cpu_per_tick": ours["cpu"] / ticks,
                "base_per_tick": base_codes["total"] / base_ticks,
                "base_429": base_codes["0429"],
                "limit": math.ceil(n / 100),
            }
            self.status_rows.append(row)
            log(
                f"status waits N={n}: ours {row['ours_per_tick']:.1f} req/interval "
                f"({row['ours_429']} x 0429), "
                f"per-video {row['base_per_tick']:.0f} req/interval ({row['base_429']} x 0429)"
            )

    def ha_triggerers(self, k: int, n: int) -> None:
        """K triggerer processes share one account's 5 status requests/s, N waits between them.

        The videos stay ``UNPARSE`` while the triggerers warm up (every poller polling, paced by
        the service's answers), then all parse at once; reported: the share of status calls that
        drew ``0429`` and the time from the parse to the last wait ending, against the minimum the
        limit allows, ceil(N/100) requests at 5/s.
        """
        import requests

        session = requests.Session()
        interval = 1.0  # shorter than a round: the triggerers poll back to back, all they can
        self.emu.control.configure(rate_limits=False)
        video_nos: list[str] = []
        while len(video_nos) < n:
            body = session.post(
                f"{self.emu.v1_url}/upload",
                headers={"Authorization": self.emu.api_key},
                files={"file": ("v.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")},
                timeout=30,
            ).json()
            video_nos.append(str(body["data"]["videoNo"]))
        self.emu.control.set_statuses(video_nos, "UNPARSE")
        self.emu.control.configure(rate_limits=True)
        share = math.ceil(n / k)
        before = self._codes()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "_status.py"),
                    json.dumps(
                        {
                            "mode": "ha",
                            "video_nos": video_nos[i * share : (i + 1) * share],
                            "interval": interval,
                            "duration": 3600,
                        }
                    ),
                ],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(k)
        ]
        # Warm up: every triggerer polling, for as many requests as two passes over all the videos.
        minimum_requests = math.ceil(n / 100)
        deadline = time.monotonic() + 600
        while self._codes(since=before)["total"] < 2 * minimum_requests + 10 * k:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("HA triggerers did not start polling")
            time.sleep(0.5)
        at_parse = self._codes()
        parsed = time.time()
        self.emu.control.set_statuses(video_nos, "PARSE")
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"_status.py ha failed:\n{err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        total, after = self._codes(since=before), self._codes(since=at_parse)
        last_end = max(r["last_end"] for r in results)
        minimum = minimum_requests / 5.0
        from memories_provider.status import BATCH_SIZE

        floor = math.ceil(n / BATCH_SIZE) / 5.0  # the same bound for the ids we send per request
        row = {
            "k": k,
            "n": n,
            "requests": total["total"],
            "share_429": total["0429"] / total["total"],
            "after_requests": after["total"],
            "after_share_429": after["0429"] / max(after["total"], 1),
            "seconds": last_end - parsed,
            "minimum": minimum,
            "floor": floor,
            "batch": BATCH_SIZE,
            "statuses": sorted({s for r in results for s in r["statuses"]}),
            "final_rates": [r["final_rate"] for r in results],
        }
        row["ratio"] = row["seconds"] / minimum
        row["floor_ratio"] = row["seconds"] / floor
        row["ok"] = row["share_429"] <= 0.05 and row["ratio"] <= 1.3 and row["statuses"] == ["success"]
        self.ha_rows.append(row)
        log(
            f"HA triggerers K={k} N={n}: {row['share_429']:.1%} 0429 of {row['requests']} status calls "
            f"({row['after_share_429']:.1%} after the parse); last wait ended {row['seconds']:.1f} s after "
            f"the parse, minimum {minimum:.1f} s ({row['ratio']:.2f}x; {row['floor_ratio']:.2f}x the "
            f"{floor:.1f} s floor of {BATCH_SIZE}-id requests) -> {'ok' if row['ok'] else 'MISSED'}"
        )

    def export(self, n: int, segments: int) -> None:
        """Export the captions and transcripts of N parsed videos, ``segments`` of each per video.

        Emulator rate limits off: the row measures our side (rows/s, CPU, memory), not the
        service's 5 requests/s (2 N requests). Goal: memory flat, ≤ 64 MiB above the pre-export RSS.
        """
        import requests

        session = requests.Session()
        self.emu.control.configure(rate_limits=False, index_segments=segments)
        video_nos: list[str] = []
        for i in range(n):
            body = session.post(
                f"{self.emu.v1_url}/upload",
                headers={"Authorization": self.emu.api_key},
                files={"file": (f"export-{i}.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")},
                timeout=30,
            ).json()
            video_nos.append(str(body["data"]["videoNo"]))
        self.emu.control.set_statuses(video_nos, "PARSE")
        for file_format in ("jsonl", "parquet"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                if file_format == "parquet":
                    continue
            target = self.out / f"export.{file_format}"
            result = child(
                "_export.py",
                {
                    "video_nos": video_nos,
                    "destination": str(target),
                    "warm_destination": str(self.out / f"export-warm.{file_format}"),
                    "format": file_format,
                },
                self.env,
            )
            growth = result["peak"] - result["rss_before"]
            row = {
                "n": n,
                "segments": segments,
                "format": file_format,
                **result,
                "rows_per_s": result["rows"] / result["seconds"],
                "growth": growth,
                "ok": growth <= 64 * MIB and result["rows"] == 2 * n * segments,
            }
            self.export_rows.append(row)
            target.unlink(missing_ok=True)
            log(
                f"export {n} videos x {segments} segments x 2 kinds ({file_format}): {result['rows']} rows, "
                f"{row['rows_per_s']:.0f} rows/s, {result['cpu']:.1f} CPU-s, peak +{growth / MIB:.1f} MiB "
                f"-> {'ok' if row['ok'] else 'MISSED'}"
            )
        self.emu.control.configure(rate_limits=True)

    def _codes(self, since: dict[str, Any] | None = None) -> dict[str, Any]:
        log_ = [r for r in self.emu.control.request_log() if r["endpoint"] in ("list_videos", "get_metadata")]
        start = since["n"] if since else 0
        new = log_[start:]
        return {"n": len(log_), "total": len(new), "0429": sum(1 for r in new if r.get("code") == "0429")}


# ------------------------------------------------------------------ report


def machine() -> dict[str, str]:
    import airflow

    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    load = os.getloadavg()
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "CPU": f"{cpu} x {os.cpu_count()}",
        "RAM": mem,
        "disk": shutil.disk_usage(HERE).total and f"{shutil.disk_usage(HERE).total / 1e9:.0f} GB volume",
        "Python": platform.python_version(),
        "Airflow": airflow.__version__,
        "load average at start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def write_report(
    bench: Bench, out_md: Path, chart: Path | None, info: dict[str, str], elapsed: float
) -> None:
    lines = [
        "# Benchmark results",
        "",
        "Produced by `make bench` (`bench/run.py`); every ratio compares ours with a",
        "baseline measured in the same run, against the same emulator, on the same files, over",
        f"{bench.runs} rounds (3 for files ≥ 2 GiB and for S3); each run after flushing dirty pages, the",
        f"contenders' order varying from round to round (seed {bench.seed}). Total run time "
        f"{elapsed / 60:.1f} min.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    if hasattr(bench, "disk_mbps"):
        lines += [
            f"| disk write (dd, conv=fdatasync) | {bench.disk_mbps:.0f} MB/s |",
            f"| emulator download to curl (/dev/null) | {bench.emulator_mbps:.0f} MB/s |",
            f"| `python -m http.server`, same file, to curl | {bench.http_server_mbps:.0f} MB/s "
            f"(emulator: {bench.emulator_mbps / bench.http_server_mbps:.2f}x) |",
        ]
    lines += [
        "",
        "## Throughput",
        "",
        "MB/s, median (slowest to fastest round). Ratio: ours / baseline at the median, and of the",
        "slowest rounds.",
        "",
        "| what | ours | baseline | ratio | slowest rounds | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in bench.rows:
        lines.append(
            f"| {r['what']} | {r['ours']:.0f} ({r['ours_min']:.0f}-{r['ours_max']:.0f}) "
            f"| {r['baseline']:.0f} ({r['base_min']:.0f}-{r['base_max']:.0f}) | {r['ratio']:.2f}x "
            f"| {r['ratio_min']:.2f}x | {r['goal']} | {'✅' if r['ok'] else '❌'} |"
        )
    lines += [
        "",
        "## CPU per GiB",
        "",
        "CPU seconds per GiB moved (median over the rounds), user + system. Ours: the transferring",
        "process during the transfer (all its threads; sha256 on for downloads). Baseline: the whole",
        "command (curl, `sync`, the boto3 script's transfer).",
        "",
        "| what | ours user | ours sys | ours total | baseline user | baseline sys | baseline total "
        "| goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in bench.cpu_rows:
        met = "" if c["ok"] is None else ("✅" if c["ok"] else "❌")
        lines.append(
            f"| {c['what']} | {c['ours_user']:.2f} | {c['ours_sys']:.2f} "
            f"| {c['ours_user'] + c['ours_sys']:.2f} "
            f"| {c['base_user']:.2f} | {c['base_sys']:.2f} | {c['base_user'] + c['base_sys']:.2f} "
            f"| {c['goal']} | {met} |"
        )
    lines += [
        "",
        "## Peak memory of the transferring process",
        "",
        "RSS just before the transfer, the process's peak (VmHWM), and the growth.",
        "",
        "| transfer | size | RSS before | peak | growth |",
        "|---|---|---|---|---|",
    ]
    for m in bench.memory:
        lines.append(
            f"| {m['what']} | {m['label']} | {m['rss_before'] / MIB:.0f} MiB | {m['peak'] / MIB:.0f} MiB "
            f"| {(m['peak'] - m['rss_before']) / MIB:.1f} MiB |"
        )
    flat = []
    for what in ("download", "upload"):
        rows = [m for m in bench.memory if m["what"] == what]
        if len(rows) >= 2:
            small, large = rows[0], rows[-1]
            ok = large["peak"] - small["peak"] <= 16 * MIB and large["peak"] - large["rss_before"] <= 64 * MIB
            flat.append(
                f"- {what}: peak at {large['label']} is {(large['peak'] - small['peak']) / MIB:+.1f} MiB vs "
                f"{small['label']} (goal ≤ 16 MiB) and "
                f"{(large['peak'] - large['rss_before']) / MIB:.1f} MiB above "
                f"the pre-transfer RSS (goal ≤ 64 MiB): {'flat ✅' if ok else 'not flat ❌'}"
            )
    lines += ["", *flat]
    lines += [
        "",
        "## Status waits",
        "",
        "N videos held `UNPARSE`, emulator rate limits on (5 req/s for status calls). Ours: N",
        "`MemoriesVideoStatusTrigger`s in one event loop (the shared poller). Baseline: one",
        "`get_metadata` poller per video. Requests counted in the emulator's log.",
        "",
        "| N | ours req/interval | limit ⌈N/100⌉ | ours 0429 | ours CPU per tick "
        "| per-video req/interval | per-video 0429 |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in bench.status_rows:
        lines.append(
            f"| {s['n']} | {s['ours_per_tick']:.1f} | {s['limit']} | {s['ours_429']} "
            f"| {s['ours_cpu_per_tick'] * 1000:.0f} ms "
            f"| {s['base_per_tick']:.0f} | {s['base_429']} |"
        )
    lines += [
        "",
        "## HA triggerers",
        "",
        "K triggerer processes (each its own event loop and shared poller) wait for N videos between",
        "them, one account, emulator rate limits on (5 status requests/s). The videos stay `UNPARSE`",
        "while the pollers warm up, then parse at once. Minimum: ⌈N/100⌉ requests at 5/s. Goal:",
        "≤ 5 % `0429` and ≤ 1.3x the minimum. The pollers send up to B ids a request (B in the",
        "table); the floor is the same bound for ⌈N/B⌉ requests, i.e. how well they share the limit.",
        "",
        "| K | N | status calls | 0429 share (after the parse) | parse → last wait ended | minimum "
        "| ratio | B | floor ⌈N/B⌉/5 | ratio to floor | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in bench.ha_rows:
        lines.append(
            f"| {h['k']} | {h['n']} | {h['requests']} | {h['share_429']:.1%} ({h['after_share_429']:.1%}) "
            f"| {h['seconds']:.1f} s | {h['minimum']:.1f} s | {h['ratio']:.2f}x "
            f"| {h.get('batch', 100)} | {h.get('floor', h['minimum']):.1f} s "
            f"| {h.get('floor_ratio', h['ratio']):.2f}x | {'✅' if h['ok'] else '❌'} |"
        )
    if bench.export_rows:
        lines += [
            "",
            "## Export of index outputs",
            "",
            "`MemoriesExportOperator` writing the captions and transcripts of N parsed videos to a local",
            "file (emulator rate limits off: our side, not the service's 5 requests/s). Memory: the",
            "exporting process's peak above its RSS after a one-video warm-up export. Goal: ≤ 64 MiB.",
            "",
            "| videos | segments per kind | format | rows | rows/s | CPU s | file | peak growth | met |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in bench.export_rows:
            lines.append(
                f"| {e['n']} | {e['segments']} | {e['format']} | {e['rows']} | {e['rows_per_s']:.0f} "
                f"| {e['cpu']:.1f} | {e['bytes'] / MIB:.1f} MiB | {e['growth'] / MIB:.1f} MiB "
                f"| {'✅' if e['ok'] else '❌'} |"
            )
    if chart is not None:
        lines += ["", f"![throughput and peak memory]({chart.name})"]
    out_md.write_text("\n".join(lines) + "\n")


def draw_chart(bench: Bench, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    local = [r for r in bench.rows if "local file" in r["what"] and "durable" not in r["what"]]
    durable = {r["what"].replace("durable, ", ""): r for r in bench.rows if "durable" in r["what"]}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [r["what"].replace(" local file", "") for r in local]
    x = range(len(local))

    def spread(rows: list[dict[str, Any]], side: str) -> list[list[float]]:
        """Error bars from the median down to the slowest round and up to the fastest."""
        low, high = ("ours_min", "ours_max") if side == "ours" else ("base_min", "base_max")
        return [[r[side] - r[low] for r in rows], [r[high] - r[side] for r in rows]]

    durable_rows = [durable.get(r["what"]) for r in local]
    ax1.bar(
        [i - 0.27 for i in x],
        [r["ours"] for r in local],
        width=0.27,
        label="ours",
        yerr=spread(local, "ours"),
    )
    ax1.bar(
        [i for i in x],
        [r["baseline"] for r in local],
        width=0.27,
        label="curl (-o / -F)",
        yerr=spread(local, "baseline"),
    )
    # Downloads are fsynced before the rename: their like-for-like baseline is curl -o + fdatasync.
    present = [(i, d) for i, d in zip(x, durable_rows, strict=True) if d is not None]
    ax1.bar(
        [i + 0.27 for i, _ in present],
        [d["baseline"] for _, d in present],
        width=0.27,
        label="curl -o + fdatasync",
        yerr=spread([d for _, d in present], "baseline"),
    )
    ax1.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("MB/s")
    ax1.set_title("Throughput by file size")
    ax1.legend()
    for what in ("download", "upload"):
        rows = [m for m in bench.memory if m["what"] == what]
        ax2.plot(
            [m["size"] / MIB for m in rows], [m["peak"] / MIB for m in rows], marker="o", label=f"{what} peak"
        )
        ax2.plot(
            [m["size"] / MIB for m in rows],
            [m["rss_before"] / MIB for m in rows],
            ls="--",
            label=f"{what} before",
        )
    ax2.set_xlabel("file size (MiB)")
    ax2.set_ylabel("RSS (MiB)")
    ax2.set_ylim(bottom=0)
    ax2.set_title("Peak RSS of the transferring process")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: proves the scripts work")
    parser.add_argument("--runs", "--rounds", dest="runs", type=int, default=5, help="rounds per row")
    parser.add_argument(
        "--sizes",
        default=",".join(SIZES),
        help="comma-separated file sizes, e.g. '256 MiB,1 GiB' or 64MiB (default: " + ", ".join(SIZES) + ")",
    )
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated parts to run, of: " + ", ".join(PARTS)
    )
    parser.add_argument("--seed", type=int, default=20, help="seed of the contenders' order in the rounds")
    parser.add_argument("--status-n", default="1,100,1000,5000")
    parser.add_argument("--ha", default="3x6000", help="K triggerers x N waits for the HA row")
    parser.add_argument("--only-ha", action="store_true", help="run the HA triggerers row alone")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="scratch directory for the files")
    parser.add_argument(
        "--results", type=Path, default=None, help="report path (default: bench/RESULTS.md for a full run)"
    )
    args = parser.parse_args(argv)

    parts = ("ha",) if args.only_ha else tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    sizes = SMOKE_SIZES if args.smoke else dict(parse_size(text) for text in args.sizes.split(","))
    runs = 1 if args.smoke else args.runs
    ns = [1, 10] if args.smoke else [int(n) for n in args.status_n.split(",")]
    full = set(parts) == set(PARTS) and sizes == SIZES and runs == 5
    results = args.results or (HERE / "RESULTS.md" if full or args.smoke else args.out / "RESULTS-partial.md")
    args.out.mkdir(parents=True, exist_ok=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    info = machine()
    started = time.monotonic()

    from memories_provider.emulator.process import emulator_process

    ha_k, ha_n = (2, 300) if args.smoke else (int(x) for x in args.ha.split("x"))
    if args.only_ha:
        with tempfile.TemporaryDirectory(dir=args.out) as emu_dir, emulator_process(data_dir=emu_dir) as emu:
            bench = Bench(args.out, emu, runs, sizes, ns, args.smoke, args.seed, parts)
            bench.ha_triggerers(ha_k, ha_n)
        print(json.dumps(bench.ha_rows))
        return 0

    with tempfile.TemporaryDirectory(dir=args.out) as emu_dir, emulator_process(data_dir=emu_dir) as emu:
        bench = Bench(args.out, emu, runs, sizes, ns, args.smoke, args.seed, parts)
        warm = args.out / "warm.mp4"
        warm.write_bytes(b"\x00\x00\x00\x18ftypmp42warm-up")
        warm_asset = emu.control.add_asset(str(warm), "warm.mp4", "video/mp4")["asset_id"]
        files = {
            label: make_file(args.out / f"file-{label.replace(' ', '')}.mp4", size)
            for label, size in sizes.items()
        }
        if {"download", "upload"} & set(parts):
            bench.disk_and_emulator(
                files[list(files)[-1]] if args.smoke else files.get("1 GiB", files[next(iter(files))])
            )
            for label, path in files.items():
                log(f"local transfers, {label}")
                bench.local(label, path, warm, warm_asset)
        if "s3" in parts:
            s3_label = list(files)[-1] if args.smoke else ("1 GiB" if "1 GiB" in files else next(iter(files)))
            log(f"S3 transfers, {s3_label}")
            bench.s3(s3_label, files[s3_label], warm, warm_asset)
            log(f"S3 transfers over HTTPS, {s3_label}")
            bench.s3(s3_label, files[s3_label], warm, warm_asset, tls=True)
        if "status" in parts:
            bench.status()
        if "ha" in parts:
            log(f"HA triggerers, K={ha_k} N={ha_n}")
            bench.ha_triggerers(ha_k, ha_n)
        if "export" in parts:
            export_n = 20 if args.smoke else 1000
            log(f"export of index outputs, {export_n} videos")
            bench.export(export_n, 5 if args.smoke else 50)
    chart = draw_chart(bench, results.with_name("results.png"))
    write_report(bench, results, chart, info, time.monotonic() - started)
    log(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
