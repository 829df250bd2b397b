"""Throughput and latency of `keras-vit serve` over gRPC, with `--enable_batching` on and off.

    python -m benchmarks.serving --clients 1,4,16 --seconds 10

A small ViT (32x32 images, patch 4, width 192, depth 9, 10 classes; random
weights) is exported as a SavedModel and served by `keras-vit serve` in a
subprocess on 127.0.0.1 only, once without batching and once with the
batching parameters below. For each number of concurrent clients, every
client sends one-image `Predict` calls back to back for `--seconds` (at most
`--max_requests` calls in all); the report gives requests per second and the
p50/p99 latency as the clients saw them, as a Markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks.machine import cpu_model

BATCHING = {"max_batch_size": 16, "batch_timeout_micros": 1000, "num_batch_threads": 2, "max_enqueued_batches": 100}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_model(folder: str, image_size: int = 32, depth: int = 9) -> str:
    """Exports the benchmark ViT as <folder>/bench_vit/1; returns the base path."""
    import keras

    import keras_vit
    from keras_vit import export

    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(
        image_size=image_size, patch_size=4, hidden_dim=192, depth=depth, num_heads=12, mlp_dim=384, num_classes=10
    )
    base = os.path.join(folder, "bench_vit")
    export.saved_model(model, os.path.join(base, "1"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return base


def batching_file(folder: str, params: dict[str, int]) -> str:
    """Writes TF Serving's text-format batching parameters."""
    path = os.path.join(folder, "batching.config")
    with open(path, "w") as f:
        f.writelines(f"{key} {{ value: {value} }}\n" for key, value in params.items())
    return path


class Server:
    """`keras-vit serve` in a subprocess on 127.0.0.1; the gRPC port it reports."""

    def __init__(self, base: str, flags: list[str], start_timeout: float = 180):
        command = [sys.executable, "-m", "keras_vit.cli", "serve", f"--model_base_path={base}"]
        command += ["--model_name=bench_vit", "--host=127.0.0.1", "--port=0", "--rest_api_port=0", *flags]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True).start()
        self.port = None
        deadline = time.monotonic() + start_timeout
        while self.port is None and time.monotonic() < deadline:
            try:
                match = re.search(r"gRPC on 127\.0\.0\.1:(\d+)", lines.get(timeout=1))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(f"keras-vit serve exited with {self.process.returncode}") from None
                continue
            self.port = int(match.group(1)) if match else None
        if self.port is None:
            self.close()
            raise RuntimeError("keras-vit serve did not report its gRPC port in time")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure(port: int, clients: int, seconds: float, max_requests: int, image: np.ndarray) -> dict:
    """`clients` threads send one-image Predict calls for `seconds`; throughput and latency percentiles."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bench_vit"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[None]))
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(clients)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    for stub in stubs:  # connect and warm up every channel
        stub.Predict(request, timeout=60)
    budget = threading.Semaphore(max_requests)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        barrier.wait()
        while time.monotonic() < stop_at[0] and budget.acquire(blocking=False):
            started = time.perf_counter()
            try:
                stubs[i].Predict(request, timeout=60)
                latencies[i].append(time.perf_counter() - started)
            except grpc.RpcError:
                errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for channel in channels:
        channel.close()
    done = np.array([x for per_client in latencies for x in per_client]) * 1000
    return {
        "clients": clients,
        "requests": int(done.size),
        "errors": int(sum(errors)),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(done.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(done, 50)), 2) if done.size else None,
        "p99_ms": round(float(np.percentile(done, 99)), 2) if done.size else None,
    }


def run(clients: list[int], seconds: float, max_requests: int, depth: int = 9) -> dict:
    """Measures every client count with batching off, then on; returns settings, CPU and rows."""
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras-vit-serving-bench-") as folder:
        base = export_model(folder, depth=depth)
        configs = [
            ("off", []),
            ("on", ["--enable_batching", f"--batching_parameters_file={batching_file(folder, BATCHING)}"]),
        ]
        for label, flags in configs:
            with Server(base, flags) as server:
                for count in clients:
                    rows.append({"batching": label, **measure(server.port, count, seconds, max_requests, image)})
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "model": f"ViT 32x32, patch 4, width 192, depth {depth}, 12 heads, MLP 384, 10 classes",
        "request": "gRPC Predict, one float32 image per request",
        "seconds_per_level": seconds,
        "max_requests_per_level": max_requests,
        "batching_parameters": BATCHING,
        "rows": rows,
    }


def markdown(report: dict) -> str:
    lines = [
        "| batching | clients | requests/s | p50 ms | p99 ms | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['batching']} | {row['clients']} | {row['requests_per_second']} | {row['p50_ms']} | "
            f"{row['p99_ms']} | {row['requests']} | {row['errors']} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4,16", help="Comma-separated numbers of concurrent clients.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Seconds each level runs.")
    parser.add_argument("--max_requests", type=int, default=20000, help="Most requests per level.")
    parser.add_argument("--depth", type=int, default=9, help="Transformer blocks of the benchmark ViT.")
    parser.add_argument("--json", default=None, help="Also write the report as JSON to this file.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    if not clients or min(clients) < 1 or args.seconds <= 0 or args.max_requests < 1:
        parser.error(f"Give positive --clients, --seconds and --max_requests. Received: {vars(args)}")
    report = run(clients, args.seconds, args.max_requests, args.depth)
    print(f"{report['cpu']} ({report['cores']} cores); {report['model']}; {report['request']}")
    print(f"batching parameters: {report['batching_parameters']}")
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
