"""Benchmark: S3 ingress through the ingress cache, against boto3's own download.

moto's S3 server runs on 127.0.0.1 in this process (a thread) and holds one object of
``--mib`` MiB (random bytes). In the same run, alternately (``--rounds`` each, the
median kept):

- boto3's ``download_file`` of the object to a file (its managed transfer: ranged
  GETs on several threads), the baseline of the target;
- boto3's ``get_object`` body streamed to a file (one GET, as the ingress reads it):
  moto answers ranged GETs slowly, so this one is printed too, for a fairer view;
- an ingress of the object into a volume through an empty ingress cache, as the
  orchestrator runs one: HEAD (the access check and the version), one streamed GET
  with ``IfMatch``, sha256 on the fly, the cache's file fsynced and renamed into
  place, then a hard link into the volume;
- the same ingress without the cache (a GET, sha256, the volume's file renamed into
  place), to show what the cache costs.

Then the same ingress again, into another volume, through the last cache: the bytes
it fetches from the source (counted by the transfer; the target is 0). Prints both
throughputs, and ends with the BENCH lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from moto.server import ThreadedMotoServer

from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.transfer.ingress_egress import S3Credentials, ingress
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
BUCKET, KEY = "bench", "data/object.bin"
CREDENTIALS = S3Credentials("bench", "bench", region="us-east-1")
LOOPBACK = IngressPolicy.from_spec(["127.0.0.1"], None)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _stream(client: S3Client, target: Path) -> None:
    body = client.get_object(Bucket=BUCKET, Key=KEY)["Body"]
    with target.open("wb") as handle:
        shutil.copyfileobj(body, handle, MiB)


def main() -> int:
    """Run it and print the figures, ending with the BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="the object's size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="downloads of each kind")
    options = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="fuzz-bench-cache-"))
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = S3Credentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key,
                                    region="us-east-1", endpoint_url=endpoint)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket=BUCKET)
        source = work / "source.bin"
        with source.open("wb") as handle:
            for _ in range(options.mib):
                handle.write(os.urandom(MiB))
        client.upload_file(str(source), BUCKET, KEY)
        size = source.stat().st_size
        source.unlink()
        uri = f"s3://{BUCKET}/{KEY}"
        boto_times, stream_times, plain_times, ingress_times = [], [], [], []
        cache = IngressCache(work / "cache-0", quota=4 * size)
        for round_ in range(options.rounds):
            target = work / f"boto-{round_}.bin"
            boto_times.append(_timed(lambda t=target: client.download_file(  # type: ignore[misc]
                BUCKET, KEY, str(t))))
            target.unlink()
            stream_times.append(_timed(lambda t=target: _stream(client, t)))  # type: ignore[misc]
            target.unlink()
            shutil.rmtree(work / f"cache-{round_}", ignore_errors=True)
            cache = IngressCache(work / f"cache-{round_ + 1}", quota=4 * size)
            volume = work / f"volume-{round_}"
            volume.mkdir()
            result = None

            def cold(v: Path = volume, c: IngressCache = cache) -> None:
                nonlocal result
                result = ingress(uri, "file://object.bin", v, credentials=credentials,
                                 http_policy=LOOPBACK, cache=c)

            ingress_times.append(_timed(cold))
            assert result is not None and result.fetched == size, result
            shutil.rmtree(volume)
            volume.mkdir()
            plain_times.append(_timed(lambda v=volume: ingress(  # type: ignore[misc]
                uri, "file://object.bin", v, credentials=credentials, http_policy=LOOPBACK)))
            shutil.rmtree(volume)
        rerun_volume = work / "rerun"
        rerun_volume.mkdir()
        rerun = ingress(uri, "file://object.bin", rerun_volume, credentials=credentials,
                        http_policy=LOOPBACK, cache=cache)
        assert rerun.size == size and (rerun_volume / "object.bin").stat().st_size == size
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()
    boto_mib_s = size / MiB / statistics.median(boto_times)
    stream_mib_s = size / MiB / statistics.median(stream_times)
    plain_mib_s = size / MiB / statistics.median(plain_times)
    ingress_mib_s = size / MiB / statistics.median(ingress_times)
    print(f"object: {size // MiB} MiB from moto S3 on 127.0.0.1, {options.rounds} rounds each, "
          "medians (the machine is shared: figures taken under load)")
    print(f"boto3 download_file: {boto_mib_s:.0f} MiB/s")
    print(f"boto3 get_object streamed: {stream_mib_s:.0f} MiB/s")
    print(f"ingress through the cache (cold): {ingress_mib_s:.0f} MiB/s")
    print(f"ingress without the cache: {plain_mib_s:.0f} MiB/s")
    print(f"rerun: fetched {rerun.fetched} bytes, cached={rerun.cached}")
    print(f"BENCH ingress_mib_s={ingress_mib_s:.0f} MiB/s boto3={boto_mib_s:.0f} "
          f"boto3_stream={stream_mib_s:.0f} no_cache={plain_mib_s:.0f}")
    print(f"BENCH ingress_ratio_vs_boto3_stream={ingress_mib_s / stream_mib_s:.2f} x")
    print(f"BENCH rerun_bytes_moved={rerun.fetched} B target<=0")
    print(f"BENCH ingress_ratio_vs_boto3={ingress_mib_s / boto_mib_s:.2f} x target>=0.8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
