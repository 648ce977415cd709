"""Metrics and HTTP probes as an operator scrapes them: after a known workload the counters
and histograms say exactly what happened, and /healthz and /readyz agree with gRPC health.
With the OTLP collector down and a usage ledger, /metrics shows the spans being lost and the
ledger's commits, while serving goes on."""

import os
import re
import shutil
import socket
import sqlite3
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from e2e_support import READINESS_SERVICE, ServerTestCase, poll_until

METRICS_LINE = re.compile(r"pagoda serve: metrics on (\S+):(\d+)")


def sample(text, name, labels=""):
    """The value of one series in Prometheus text format, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name + (("{" + labels + "}") if labels else ""):
            return float(value)
    return None


class MetricsServerTestCase(ServerTestCase):
    """A server with --metrics-port 0 (plus EXTRA_ARGS); `get` fetches from its HTTP port."""

    EXTRA_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = ("--metrics-port", "0", *cls.EXTRA_ARGS)
        super().setUpClass()
        lines = "".join(cls.server.stdout_lines)
        m = METRICS_LINE.search(lines)
        if not m:
            raise AssertionError(f"no metrics line in the server's output: {lines!r}")
        cls.base = f"http://{m.group(1)}:{m.group(2)}"

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        status, text = self.get("/metrics")
        self.assertEqual(status, 200, text)
        return text


class MetricsTest(MetricsServerTestCase):

    def test_probes_agree_with_grpc_health(self):
        self.assertEqual(self.get("/healthz")[0], 200)
        self.assertEqual(self.client.health(READINESS_SERVICE), "SERVING")
        self.assertEqual(self.get("/readyz")[0], 200)
        self.assertEqual(self.get("/nope")[0], 404)

    def test_counters_after_a_known_workload(self):
        _, before = self.get("/metrics")
        n, max_tokens = 3, 5
        prompt_tokens = 0
        for i in range(n):
            r = self.client.complete(token_ids=[1, 403 + i, 407], max_tokens=max_tokens,
                                     temperature=0, ignore_eos=True, timeout=60)
            self.assertEqual(r.usage.completion_tokens, max_tokens)
            prompt_tokens += r.usage.prompt_tokens

        def delta(text, name, labels=""):
            return (sample(text, name, labels) or 0) - (sample(before, name, labels) or 0)

        _, after = self.get("/metrics")
        self.assertEqual(delta(after, "pagoda_requests_finished_total", 'finish_reason="length"'), n)
        self.assertEqual(delta(after, "pagoda_generation_tokens_total", 'tenant="default"'),
                         n * max_tokens)
        self.assertEqual(delta(after, "pagoda_prompt_tokens_total", 'tenant="default"'), prompt_tokens)
        self.assertEqual(delta(after, "pagoda_e2e_request_latency_seconds_count"), n)
        self.assertEqual(delta(after, "pagoda_time_to_first_token_seconds_count"), n)
        # Each request's 4 gaps after its first token.
        self.assertEqual(delta(after, "pagoda_inter_token_latency_seconds_count"), n * (max_tokens - 1))
        poll_until(lambda: sample(self.get("/metrics")[1], "pagoda_requests_running") == 0, 30,
                   "the running gauge to return to 0")
        self.assertIsNotNone(sample(after, "pagoda_kv_cache_usage_ratio"))


class ExportAndLedgerMetricsTest(MetricsServerTestCase):
    """--otlp-endpoint at a port that refuses connections (the collector is down) and --ledger
    FILE: after N requests /metrics shows spans failing or dropped, none exported, and exactly N
    ledger rows committed with their commit times; every request was answered meanwhile."""

    N = 6
    MAX_TOKENS = 4

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pagoda-metrics-")
        cls.ledger_path = os.path.join(cls.dir, "ledger.db")
        # Bound but never listening: every connection to it is refused, as when the collector
        # is down. Held open for the whole class so that nobody else can take the port.
        cls.reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cls.reserved.bind(("127.0.0.1", 0))
        port = cls.reserved.getsockname()[1]
        cls.EXTRA_ARGS = ("--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces",
                          "--ledger", cls.ledger_path)
        try:
            super().setUpClass()
        except BaseException:
            cls.reserved.close()
            shutil.rmtree(cls.dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.reserved.close()
            shutil.rmtree(cls.dir, ignore_errors=True)

    def poll_metrics(self, ok, what, timeout=30):
        """Scrapes /metrics until ok(text); returns that text, or fails showing the last
        scrape's span and ledger series."""
        last = [""]

        def scrape():
            last[0] = self.metrics()
            return last[0] if ok(last[0]) else None

        try:
            return poll_until(scrape, timeout, what)
        except AssertionError as e:
            series = [line for line in last[0].splitlines()
                      if line.startswith(("pagoda_trace_", "pagoda_ledger_"))]
            raise AssertionError(f"{e}; last scrape:\n" + "\n".join(series)) from None

    def test_lost_spans_and_ledger_commits_show_while_serving_goes_on(self):
        before = self.metrics()
        # Nothing went through the service yet: the ledger and span counters start at 0.
        for name in ("pagoda_ledger_rows_committed_total", "pagoda_ledger_commits_total",
                     "pagoda_trace_spans_exported_total", "pagoda_ledger_commit_wait_seconds_count"):
            self.assertEqual(sample(before, name), 0, name)

        def one(i):
            return self.client.complete(token_ids=[1, 403 + i, 407], max_tokens=self.MAX_TOKENS,
                                        temperature=0, ignore_eos=True, timeout=60)

        with ThreadPoolExecutor(max_workers=self.N) as pool:
            answers = list(pool.map(one, range(self.N)))
        # Serving never waited on the dead collector: every request was answered in full.
        self.assertEqual(len(answers), self.N)
        for r in answers:
            self.assertEqual(r.usage.completion_tokens, self.MAX_TOKENS)
            self.assertEqual(len(r.trace_id), 32, "tracing is on: every answer has a trace id")

        def spans_lost(text):
            return ((sample(text, "pagoda_trace_spans_failed_total") or 0)
                    + (sample(text, "pagoda_trace_spans_dropped_total") or 0)) > 0

        text = self.poll_metrics(spans_lost, "failed or dropped spans on /metrics")
        self.assertEqual(sample(text, "pagoda_trace_spans_exported_total"), 0)
        self.assertIsNotNone(sample(text, "pagoda_trace_spans_queued"))

        # A final response is sent only after its row committed, so all N are counted by now;
        # polled all the same, then checked to be exactly N (not more).
        text = self.poll_metrics(
            lambda t: (sample(t, "pagoda_ledger_rows_committed_total") or 0) >= self.N,
            f"pagoda_ledger_rows_committed_total to reach {self.N}")
        self.assertEqual(sample(text, "pagoda_ledger_rows_committed_total"), self.N)
        commits = sample(text, "pagoda_ledger_commits_total")
        self.assertGreaterEqual(commits, 1)
        self.assertLessEqual(commits, self.N)  # group commit: never more than one per row
        self.assertEqual(sample(text, "pagoda_ledger_commit_failures_total"), 0)
        self.assertEqual(sample(text, "pagoda_ledger_rows_failed_total"), 0)
        self.assertEqual(sample(text, "pagoda_ledger_rows_rejected_total"), 0)
        self.assertEqual(sample(text, "pagoda_ledger_queue_rows"), 0)
        # One commit-time observation per transaction, one wait observation per row.
        self.assertEqual(sample(text, "pagoda_ledger_commit_duration_seconds_count"), commits)
        self.assertEqual(sample(text, "pagoda_ledger_commit_wait_seconds_count"), self.N)
        self.assertEqual(sample(text, "pagoda_ledger_commit_wait_seconds_bucket", 'le="+Inf"'),
                         self.N)
        self.assertGreater(sample(text, "pagoda_ledger_commit_wait_seconds_sum"), 0)
        # The counter agrees with the file, read independently.
        db = sqlite3.connect(self.ledger_path)
        try:
            ids = {row[0] for row in db.execute("SELECT request_id FROM requests")}
        finally:
            db.close()
        self.assertEqual(ids, {r.request_id for r in answers})
