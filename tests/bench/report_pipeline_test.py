#!/usr/bin/python3
"""The capacity-report pipeline as a person runs it: `pagoda serve` on a free loopback port,
a short `pagoda-bench-serve --sweep` against it, then scripts/plot_bench.py. Passes when the
JSON validates against bench/serve/report.schema.json (checked by plot_bench.py, which exits
non-zero otherwise), the Markdown names the capacity, and both plots are non-empty PNGs.

  report_pipeline_test.py PAGODA_BINARY BENCH_SERVE_BINARY
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def main():
    pagoda, bench = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="pagoda-report-") as tmp:
        server = subprocess.Popen([pagoda, "serve", "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=open(os.path.join(tmp, "server.log"), "w"), text=True)
        try:
            line = server.stdout.readline()  # printed as soon as the server listens
            m = re.match(r"pagoda serve: listening on (\S+)", line)
            assert m, f"no listening line from the server: {line!r}"
            target = m.group(1)
            # Readiness: the server logs "ready" once the model is loaded and warm.
            deadline = time.monotonic() + 60
            while "pagoda serve: ready" not in open(os.path.join(tmp, "server.log")).read():
                assert server.poll() is None, "the server exited before it was ready"
                assert time.monotonic() < deadline, "the server was not ready within 60 s"
                time.sleep(0.05)
            json_path, md_path = os.path.join(tmp, "r.json"), os.path.join(tmp, "r.md")
            run = subprocess.run(
                [bench, "--target", target, "--num-requests", "12", "--warmup", "2",
                 "--input-len", "16", "--output-len", "8", "--slo", "ttft=10s,tpot=10s",
                 "--sweep", "--sweep-start", "5", "--sweep-factor", "2", "--sweep-max-steps", "2",
                 "--json", json_path, "--markdown", md_path, "--quiet"],
                capture_output=True, text=True, timeout=240)
            assert run.returncode == 0, f"pagoda-bench-serve failed: {run.stderr}"
            with open(md_path) as f:
                md = f.read()
            assert "requests/s" in md and "Capacity" in md, md
            plots = os.path.join(tmp, "plots")
            p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "plot_bench.py"),
                                json_path, plots], capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, f"plot_bench failed: {p.stdout}{p.stderr}"
            for name in ("latency_vs_rate.png", "throughput_vs_rate.png"):
                path = os.path.join(plots, name)
                with open(path, "rb") as f:
                    head = f.read(8)
                assert head == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
                assert os.path.getsize(path) > 5000, f"{name} is suspiciously small"
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                rc = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                raise
        assert rc == 0, f"server exited with {rc} after SIGTERM"
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
