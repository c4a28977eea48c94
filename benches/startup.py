#!/usr/bin/env python3
"""Idle footprint and startup time of the release binary with the example config.

    python3 benches/startup.py [BINARY] [RUNS]     # default target/release/claimgate, 7 runs

Each run starts claimgate with config/claimgate.yaml (every section as shipped; only the ports
and jwks_uri point at 127.0.0.1, where this script serves a JWKS) and measures:
  - spawn → first JWKS answer: process start, config load, runtime and listeners, first fetch;
  - first JWKS answer → /readyz 200: what the issue bounds (≤ 50 ms), polled every 0.5 ms;
  - RSS (VmRSS) 2 s after ready, with no traffic: the idle footprint (≤ 12 MiB).
Prints one line per run and the medians. Only 127.0.0.1; every process is stopped on exit.
"""

import http.server
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/claimgate")
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
JWKS = (ROOT / "fuzz/fuzz_targets/token_jwks.json").read_bytes()


class Jwks(http.server.BaseHTTPRequestHandler):
    answered = []

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(JWKS)))
        self.end_headers()
        self.wfile.write(JWKS)
        self.wfile.flush()
        Jwks.answered.append(time.monotonic())

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_mib(pid):
    """VmRSS, and its anonymous and file-backed parts (pages of the binary), in MiB."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"{name}:\s+(\d+)", status).group(1)) / 1024
    return field("VmRSS"), field("RssAnon"), field("RssFile")


def one_run(jwks_port, workdir):
    listen, admin = free_port(), free_port()
    config = (ROOT / "config/claimgate.yaml").read_text()
    config = config.replace("listen: 0.0.0.0:8080", f"listen: 127.0.0.1:{listen}")
    config = config.replace("listen: 0.0.0.0:9901", f"listen: 127.0.0.1:{admin}")
    config = config.replace(
        "jwks_uri: https://auth.example.com/.well-known/jwks.json",
        f"jwks_uri: http://127.0.0.1:{jwks_port}/jwks.json",
    )
    path = pathlib.Path(workdir) / "claimgate.yaml"
    path.write_text(config)
    Jwks.answered.clear()
    env = dict(os.environ, RUST_LOG="warn")
    started = time.monotonic()
    proc = subprocess.Popen(
        [BINARY, "--config", str(path)], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = started + 10
        while not ready(admin):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"claimgate did not become ready (exit {proc.poll()})")
            time.sleep(0.0005)
        ready_at = time.monotonic()
        if not Jwks.answered:
            raise SystemExit("ready without fetching the JWKS")
        time.sleep(2)
        return (
            (Jwks.answered[0] - started) * 1000,
            (ready_at - Jwks.answered[0]) * 1000,
            *rss_mib(proc.pid),
        )
    finally:
        # SIGTERM would wait out the drain delay (shutdown.delay_seconds); nothing is in flight.
        proc.kill()
        proc.wait()


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for run in range(RUNS):
            row = one_run(server.server_address[1], workdir)
            rows.append(row)
            print(
                f"run {run + 1}: spawn→JWKS answer {row[0]:.1f} ms, "
                f"JWKS answer→ready {row[1]:.1f} ms, idle RSS {row[2]:.1f} MiB "
                f"(anonymous {row[3]:.1f}, file {row[4]:.1f})"
            )
    server.shutdown()
    med = [statistics.median(col) for col in zip(*rows)]
    print(
        f"median of {RUNS}: spawn→JWKS answer {med[0]:.1f} ms, "
        f"JWKS answer→ready {med[1]:.1f} ms, idle RSS {med[2]:.1f} MiB "
        f"(anonymous {med[3]:.1f}, file {med[4]:.1f}) ({BINARY})"
    )


if __name__ == "__main__":
    main()
