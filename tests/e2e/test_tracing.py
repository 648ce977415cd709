"""Per-request tracing through the real server: a W3C traceparent from the client is
continued, the trace id comes back in the final message and trailing metadata, and the spans
that arrive at a stand-in OTLP/HTTP collector have the right names, parent/child links and
GenAI attributes."""

import http.server
import json
import threading

from e2e_support import ServerTestCase, poll_until

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


class TracingTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=cls.collector.serve_forever, daemon=True).start()
        port = cls.collector.server_address[1]
        cls.SERVER_ARGS = ("--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.collector.shutdown()

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

    def test_new_trace_without_traceparent(self):
        final = list(self.client.generate("Once upon a time", max_tokens=2, temperature=0))[-1]
        self.assertEqual(len(final.trace_id), 32)
        self.assertNotEqual(final.trace_id, "0" * 32)
