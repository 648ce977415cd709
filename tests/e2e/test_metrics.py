"""Metrics and HTTP probes as an operator scrapes them: after a known workload the counters
and histograms say exactly what happened, and /healthz and /readyz agree with gRPC health."""

import re
import urllib.error
import urllib.request

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


class MetricsTest(ServerTestCase):
    SERVER_ARGS = ("--metrics-port", "0")

    @classmethod
    def setUpClass(cls):
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
