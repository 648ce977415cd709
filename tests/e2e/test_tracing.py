"""Per-request tracing through the real server: a W3C traceparent from the client is
continued, the trace id comes back in the final message and trailing metadata, and the spans
that arrive at a stand-in OTLP/HTTP collector have the right names, parent/child links and
GenAI attributes: one prefill span per prefill chunk, decode, detokenize and policy.output
spans, policy decisions as events, and each preemption as a timed event followed by a
recompute."""

import http.server
import json
import os
import tempfile
import threading

from e2e_support import ServerTestCase, finish_name, poll_until

# Small steps and a small KV pool: a long prompt is prefilled in chunks of at most 16 tokens,
# and a few long requests at once cannot all fit (preemption).
CHUNK = 16
ENGINE_ARGS = ("--max-num-batched-tokens", str(CHUNK), "--block-size", "16",
               "--num-kv-blocks", "12", "--max-model-len", "160")
POLICY = """
default: standard
policies:
  standard:
    output:
      - deny: {name: no_lily, patterns: ["Lily"], max_len: 8}
"""

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class Collector(http.server.BaseHTTPRequestHandler):
    spans = []
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Collector.lock:
            for rs in body["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    Collector.spans.extend(ss["spans"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = next(iter(v.values()))
    return out


class CollectorServerTestCase(ServerTestCase):
    """A server that exports to the stand-in collector (no tests of its own)."""
    POLICY_ARGS = True

    @classmethod
    def setUpClass(cls):
        cls.collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=cls.collector.serve_forever, daemon=True).start()
        port = cls.collector.server_address[1]
        cls.dir = tempfile.mkdtemp(prefix="pagoda-trace-")
        policy = os.path.join(cls.dir, "policy.yaml")
        with open(policy, "w") as f:
            f.write(POLICY)
        cls.SERVER_ARGS = ("--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces") + (
            ("--policy-file", policy) if cls.POLICY_ARGS else ()) + ENGINE_ARGS
        super().setUpClass()

    def trace(self, trace_id, names=("request",)):
        """The spans of one trace, once the named ones have arrived."""
        def arrived():
            with Collector.lock:
                return set(names) <= {s["name"] for s in Collector.spans
                                      if s["traceId"] == trace_id}

        poll_until(arrived, 30, f"spans {names} of trace {trace_id} to reach the collector")
        with Collector.lock:
            return [s for s in Collector.spans if s["traceId"] == trace_id]

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.collector.shutdown()


class TracingTest(CollectorServerTestCase):
    def test_spans_reach_the_collector_with_links_and_attributes(self):
        parent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        chunks = list(self.client.generate("Once upon a time", max_tokens=6, temperature=0,
                                           metadata=[("traceparent", parent)]))
        final = chunks[-1]
        self.assertEqual(final.trace_id, CALLER_TRACE)

        def arrived():
            with Collector.lock:
                return {"request", "decode"} <= {s["name"] for s in Collector.spans
                                                  if s["traceId"] == CALLER_TRACE}

        poll_until(arrived, 30, "the request's spans to reach the collector")
        with Collector.lock:
            spans = [s for s in Collector.spans if s["traceId"] == CALLER_TRACE]
        by_name = {s["name"]: s for s in spans}
        root = by_name["request"]
        self.assertEqual(root["parentSpanId"], CALLER_SPAN)
        for name in ("auth", "tokenize", "queue", "prefill", "decode"):
            self.assertIn(name, by_name, f"no {name} span among {sorted(by_name)}")
            self.assertEqual(by_name[name]["parentSpanId"], root["spanId"], name)
        a = attrs(root)
        self.assertEqual(a["gen_ai.request.model"], self.model.id)
        self.assertEqual(int(a["gen_ai.usage.output_tokens"]), final.usage.completion_tokens)
        self.assertEqual(int(a["gen_ai.usage.input_tokens"]), final.usage.prompt_tokens)
        self.assertEqual(a["gen_ai.response.finish_reasons"], "length")
        self.assertEqual(int(a["gen_ai.request.max_tokens"]), 6)
        # The decode span covers the tokens after the first.
        self.assertEqual(int(attrs(by_name["decode"])["pagoda.decode_tokens"]), 5)
        self.assertLessEqual(int(root["startTimeUnixNano"]), int(by_name["queue"]["startTimeUnixNano"]))
        # Detokenization: one span over the stream, every generated token through it.
        d = attrs(by_name["detokenize"])
        self.assertEqual(int(d["pagoda.detokenize.tokens"]), 6)
        self.assertGreater(float(d["pagoda.detokenize.busy_seconds"]), 0)
        # The output filter ran over the stream and decided nothing.
        p = by_name["policy.output"]
        self.assertEqual(p["parentSpanId"], root["spanId"])
        self.assertIn("pagoda.policy.busy_seconds", attrs(p))
        self.assertEqual(p.get("events", []), [])

    def test_one_prefill_span_per_chunk(self):
        trace_id = "1" * 32
        prompt = ("Tom and his dog Max went to the big green park to play with a red ball, and "
                  "then they ran home to eat lunch with mom and dad.")
        final = list(self.client.generate(prompt, max_tokens=3, temperature=0, metadata=[
            ("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01")]))[-1]
        self.assertGreater(final.usage.prompt_tokens, 3 * CHUNK)  # so it needs several chunks
        spans = self.trace(trace_id, ("request", "decode"))
        root = next(s for s in spans if s["name"] == "request")
        chunks = sorted((attrs(s) for s in spans if s["name"] == "prefill"),
                        key=lambda a: int(a["pagoda.prefill.chunk"]))
        self.assertEqual([int(a["pagoda.prefill.chunk"]) for a in chunks],
                         list(range(len(chunks))))
        position = final.usage.cached_tokens
        for a in chunks:
            self.assertEqual(int(a["pagoda.prefill.start_position"]), position)
            self.assertLessEqual(int(a["pagoda.prefill.tokens"]), CHUNK)
            position += int(a["pagoda.prefill.tokens"])
        self.assertEqual(position, final.usage.prompt_tokens)
        self.assertGreaterEqual(len(chunks), 3)
        for s in spans:
            if s["name"] == "prefill":
                self.assertEqual(s["parentSpanId"], root["spanId"])
                self.assertLessEqual(int(root["startTimeUnixNano"]), int(s["startTimeUnixNano"]))
                self.assertLessEqual(int(s["endTimeUnixNano"]), int(root["endTimeUnixNano"]))

    def test_output_policy_decision_is_an_event(self):
        trace_id = "2" * 32
        chunks = list(self.client.generate("Once upon a time", max_tokens=40, temperature=0,
                                           metadata=[("traceparent",
                                                      f"00-{trace_id}-{CALLER_SPAN}-01")]))
        self.assertEqual(finish_name(chunks[-1].finish_reason), "FINISH_REASON_CONTENT_FILTER")
        spans = self.trace(trace_id, ("request", "policy.output"))
        p = next(s for s in spans if s["name"] == "policy.output")
        events = [(e["name"], attrs(e)) for e in p.get("events", [])]
        self.assertIn(("policy.decision",
                       {"filter": "no_lily", "action": "block", "reason": "deny_pattern"}), events)
        root = next(s for s in spans if s["name"] == "request")
        self.assertEqual(attrs(root)["gen_ai.response.finish_reasons"], "content_filter")

    def test_new_trace_without_traceparent(self):
        final = list(self.client.generate("Once upon a time", max_tokens=2, temperature=0))[-1]
        self.assertEqual(len(final.trace_id), 32)
        self.assertNotEqual(final.trace_id, "0" * 32)


class PreemptionTracingTest(CollectorServerTestCase):
    """Its own server without the output policy, which would end sampled stories early."""

    POLICY_ARGS = False

    def test_preemptions_are_timed_events_followed_by_recompute(self):
        ids = [f"{i + 3:x}" * 32 for i in range(4)]
        results = {}

        def run(trace_id, seed):
            chunks = list(self.client.generate(
                "Once upon a time", max_tokens=100, temperature=0.8, seed=seed, ignore_eos=True,
                metadata=[("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01")]))
            results[trace_id] = chunks[-1]

        threads = [threading.Thread(target=run, args=(t, i)) for i, t in enumerate(ids)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(len(results), 4)
        total = 0
        for trace_id in ids:
            self.assertEqual(results[trace_id].usage.completion_tokens, 100)
            spans = self.trace(trace_id, ("request", "decode"))
            root = next(s for s in spans if s["name"] == "request")
            n = int(attrs(root).get("pagoda.preemptions", 0))
            total += n
            events = [e for e in root.get("events", []) if e["name"] == "preempted"]
            self.assertEqual(len(events), n)
            for e in events:
                self.assertLessEqual(int(root["startTimeUnixNano"]), int(e["timeUnixNano"]))
                self.assertLessEqual(int(e["timeUnixNano"]), int(root["endTimeUnixNano"]))
            recomputes = [s for s in spans if s["name"] == "prefill"
                          and attrs(s).get("pagoda.prefill.recompute")]
            self.assertGreaterEqual(len(recomputes), n)
            for e in events:  # each preemption is followed by a recompute
                self.assertTrue(any(int(s["startTimeUnixNano"]) >= int(e["timeUnixNano"])
                                    for s in recomputes))
        # 4 x (5 + 100) tokens against a pool of 12 x 16: someone must have been preempted.
        self.assertGreater(total, 0)
