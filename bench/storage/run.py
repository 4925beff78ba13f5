"""Storage benchmark: checkpoint upload/download through cpt_core.storage vs raw boto3 on the same bytes,
and resume time (finding the newest committed task of a run with many tasks).

    .venv/bin/python bench/storage/run.py            # full: 256 MiB checkpoint, 300-task run; writes RESULTS.md
    .venv/bin/python bench/storage/run.py --quick    # smoke: small sizes, prints the table, writes --out if given

The S3 server is moto (ThreadedMotoServer) in a separate process on 127.0.0.1, so the server does not share the
benchmark's GIL. Each measurement alternates ours and the baseline, repeated, and reports medians: the machine
is shared and noisy, so only the ratios side by side mean much.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from cpt_core.storage import Credentials, commit_task, fetch_checkpoint, layout, load_committed, open_store
from cpt_core.storage.s3 import default_transfer_config  # == boto3's defaults: both sides use the same

MiB = 1 << 20
ACCESS, SECRET = "AKIABENCH00000000000", "benchSecretKey0000000000000000000000000"
SERVER = ("import sys; from moto.server import ThreadedMotoServer\n"
          "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start()\n"
          "print(s.get_host_and_port()[1], flush=True); sys.stdin.read(); s.stop()\n")


@dataclass
class Row:
    what: str
    ours_s: float
    base_s: float
    nbytes: int
    note: str = ""
    spread: tuple[float, float] = (0.0, 0.0)  # quartiles of the per-round ratios (same round = same load)

    @property
    def ratio(self) -> float:
        """Throughput ratio ours / baseline (> 1: we are faster)."""
        return self.base_s / self.ours_s


def start_moto() -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, f"http://127.0.0.1:{port}"


def make_checkpoint(path: Path, shard_mib: int, shards: int) -> int:
    """An HF-like checkpoint: safetensors shards, an index, config and tokenizer files."""
    path.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(shards):
        with open(path / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", "wb") as fh:
            for _ in range(shard_mib):
                fh.write(os.urandom(MiB))
        total += shard_mib * MiB
    small = {"config.json": 700, "generation_config.json": 200, "model.safetensors.index.json": 30_000,
             "tokenizer.json": 2 * MiB, "tokenizer_config.json": 4_000, "special_tokens_map.json": 500}
    for name, size in small.items():
        (path / name).write_bytes(os.urandom(size))
        total += size
    return total


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(ours: Callable[[], object], base: Callable[[], object], reset: Callable[[], object],
                 repeats: int) -> tuple[float, float, tuple[float, float]]:
    """Medians of alternating runs (order flipped every round so neither side always runs warm)."""
    a: list[float] = []
    b: list[float] = []
    for r in range(repeats):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            reset()
            (a if side == 0 else b).append(timed(ours if side == 0 else base))
    per_round = sorted(y / x for x, y in zip(a, b, strict=True))
    q = (per_round[0], per_round[-1]) if len(per_round) < 4 else tuple(statistics.quantiles(per_round, n=4)[::2])
    return statistics.median(a), statistics.median(b), q  # type: ignore[return-value]


def bench(quick: bool) -> tuple[list[Row], dict[str, str]]:
    shard_mib, shards, repeats, ntasks = (8, 2, 1, 20) if quick else (64, 4, 9, 300)
    proc, endpoint = start_moto()
    tmp = Path(tempfile.mkdtemp(prefix="cpt-bench-storage-"))
    try:
        cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS,
                              aws_secret_access_key=SECRET, config=cfg)
        client.create_bucket(Bucket="bench")
        src = tmp / "ckpt"
        nbytes = make_checkpoint(src, shard_mib, shards)
        files = sorted(p for p in src.iterdir() if p.is_file())
        store = open_store("s3://bench/run", endpoint=endpoint, region="us-east-1", path_style=True,
                           credentials=Credentials(ACCESS, SECRET))
        ours_cfg = default_transfer_config()
        prefix = layout.task_key(1, "t", layout.CHECKPOINT)

        def wipe() -> None:
            store.delete_prefix("")
            shutil.rmtree(tmp / "down", ignore_errors=True)

        def raw_upload(config: TransferConfig | None) -> Callable[[], None]:
            def run() -> None:
                for p in files:
                    client.upload_file(str(p), "bench", f"raw/{p.name}", Config=config)
            return run

        def raw_download(config: TransferConfig | None) -> Callable[[], None]:
            def run() -> None:
                (tmp / "down").mkdir(exist_ok=True)
                for p in files:
                    client.download_file("bench", f"raw/{p.name}", str(tmp / "down" / p.name), Config=config)
            return run

        rows: list[Row] = []
        o, b, q = side_by_side(lambda: store.upload_dir(src, prefix), raw_upload(ours_cfg), wipe, repeats)
        rows.append(Row("upload_dir vs upload_file", o, b, nbytes, "ours also sha256-hashes every file", q))

        # Downloads: one committed copy of the checkpoint (ours) and the raw keys (baseline) stay in place.
        store.upload_dir(src, prefix)
        store.put_json(layout.task_key(1, "t", layout.EVAL), {"t": 1.0})
        commit_task(store, 1, "t", "h", {})
        raw_upload(ours_cfg)()
        task = load_committed(store)[1]
        clear = lambda: shutil.rmtree(tmp / "down", ignore_errors=True)  # noqa: E731
        o, b, q = side_by_side(lambda: fetch_checkpoint(store, task, tmp / "down"), raw_download(ours_cfg), clear,
                               repeats)
        rows.append(Row("fetch_checkpoint vs download_file", o, b, nbytes, "ours verifies sha256 of every byte", q))
        o, b, q = side_by_side(lambda: store.download_dir(prefix, tmp / "down"), raw_download(ours_cfg), clear,
                               repeats)
        rows.append(Row("download_dir vs download_file", o, b, nbytes, "no verification", q))

        resume = resume_times(store, tmp / "local-run", ntasks)
        info = {"checkpoint": f"{shards} x {shard_mib} MiB shards + 6 small files = {nbytes / MiB:.0f} MiB",
                "repeats": str(repeats), "tasks": str(ntasks), **resume,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} "
                           f"at the end), Python {platform.python_version()}, boto3 {boto3.__version__}"}
        return rows, info
    finally:
        proc.communicate("", timeout=30) if proc.poll() is None else None
        shutil.rmtree(tmp, ignore_errors=True)


def resume_times(s3_store: object, local_root: Path, ntasks: int) -> dict[str, str]:
    """Seconds for load_committed (what a resume reads) on a run with ntasks committed tasks (each: eval.json, rif.json, a small
    checkpoint file), on S3 and on a local directory."""
    out = {}
    for label, store in (("s3", s3_store), ("local", open_store(str(local_root)))):
        store.delete_prefix("")  # type: ignore[attr-defined]
        for i in range(ntasks):
            store.put_json(layout.task_key(i, f"t{i}", layout.EVAL), {"acc": i})  # type: ignore[attr-defined]
            store.put_json(layout.task_key(i, f"t{i}", layout.RIF), {"kept": i})  # type: ignore[attr-defined]
            store.put_bytes(layout.task_key(i, f"t{i}", "checkpoint/model.safetensors"), b"w" * 4096)  # type: ignore
            commit_task(store, i, f"t{i}", f"h{i}", {})  # type: ignore[arg-type]
        t = min(timed(lambda st=store: load_committed(st)) for _ in range(3))  # type: ignore[arg-type]
        assert sorted(load_committed(store)) == list(range(ntasks))  # type: ignore[arg-type]
        out[f"resume_{label}_s"] = f"{t:.3f}"
    return out


def table(rows: list[Row], info: dict[str, str]) -> str:
    lines = ["| measurement | ours s | raw boto3 s | ours MiB/s | raw MiB/s | ratio (ours/raw throughput) "
             "| per-round ratio p25-p75 | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.what} | {r.ours_s:.3f} | {r.base_s:.3f} | {r.nbytes / MiB / r.ours_s:.0f} | "
                     f"{r.nbytes / MiB / r.base_s:.0f} | {r.ratio:.2f}x | {r.spread[0]:.2f}-{r.spread[1]:.2f} "
                     f"| {r.note} |")
    lines.append("")
    lines.append(f"Resume (load_committed, verify=size) on a run with {info['tasks']} committed tasks: "
                 f"S3 {info['resume_s3_s']} s, local {info['resume_local_s']} s.")
    lines.append(f"Checkpoint: {info['checkpoint']}; medians of {info['repeats']} alternating runs; "
                 f"{info['machine']}.")
    return "\n".join(lines)


NOTES = """
Notes
- Goal: >= 0.9x raw boto3 throughput. Both sides use the same TransferConfig (boto3's defaults: 8 MiB parts,
  10 in flight) against the same moto server (a separate process on 127.0.0.1). Ours: `Store.upload_dir`
  (all files in one transfer manager, each file sha256-hashed before its upload so the hash can ride along as
  x-amz-meta-sha256), `fetch_checkpoint` (downloads exactly the manifest's files in parallel, then checks
  size and sha256 of every byte), `Store.download_dir` (parallel, unverified). Raw: `upload_file` /
  `download_file` per file, one after another.
- These machines are shared (2 CPUs, load average often above 4): single rounds swing by +-30%. Read the median
  ratio together with the per-round quartiles; ratios from one round compare runs taken under the same load.
- Where the upload ratio dips below 1, the cause is the sha256 pass (about 1.9 GB/s on this CPU) competing for
  the same two cores as the Python S3 server and client. Hashing is pipelined (largest file first, two threads,
  each upload starts as soon as its hash is known), so on a machine with spare cores only the first file's hash
  is on the critical path: about 2 s for a 4 GB shard. A sidecar of hashes written after the uploads would remove
  even that; not done yet.
- Resume time is one LIST of tasks/ plus one GET per manifest (8 in parallel); the manifests embed
  eval/rif/train results, so the operator needs nothing else to fill the status.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--out", help="write the table here (default: bench/storage/RESULTS.md unless --quick)")
    args = ap.parse_args(argv)
    rows, info = bench(args.quick)
    text = table(rows, info)
    print(text)
    out = args.out or (None if args.quick else str(Path(__file__).with_name("RESULTS.md")))
    if out:
        cmd = "bench/storage/run.py" + (" --quick" if args.quick else "")
        Path(out).write_text(f"# Storage benchmark\n\nCommand: `.venv/bin/python {cmd}` "
                             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n{text}\n{NOTES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
