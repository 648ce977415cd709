"""SIGTERM drains: readiness turns NOT_SERVING (Check and Watch), new requests get UNAVAILABLE,
in-flight requests finish normally (or with finish reason CANCELLED once --drain-timeout
passes), and the process exits 0."""

import threading
import time
import unittest

from e2e_support import (READINESS_SERVICE, PagodaServer, finish_name, grpc, poll_until)

# The work kept in flight during a drain should take at least this long, so the checks made
# while draining (a few RPCs) happen well inside it.
MIN_WORK_S = 3.0


class DrainTest(unittest.TestCase):
    def start(self, *args):
        server = PagodaServer("--max-num-seqs", "1", "--max-queue-requests", "1000", *args)
        self.addCleanup(server.cleanup)
        server.start()
        client = server.client(timeout=120)
        self.addCleanup(client.close)
        return server, client

    def long_request(self, model, i):
        return dict(token_ids=[1, 403 + i % 40], temperature=0, ignore_eos=True,
                    max_tokens=model.context_length - 2)

    def in_flight(self, client, n_min_work):
        """Starts enough long streams (run one at a time) to keep the server busy for
        n_min_work seconds; returns (streams, results) once every stream has been admitted."""
        model = client.model_info()
        one = client.complete(**self.long_request(model, 0)).timings.total_seconds
        n = max(4, min(200, int(n_min_work / max(one, 1e-3)) + 1))
        results = [None] * n
        calls = [client.generate(**self.long_request(model, i)) for i in range(n)]

        def drain(i):
            chunks = []
            try:
                for c in calls[i]:
                    chunks.append(c)
                results[i] = ("ok", chunks)
            except grpc.RpcError as e:
                results[i] = (e.code().name, e.details(), chunks)

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        # Every request has reached the engine (running, waiting or done). Finished ones are
        # counted before asking the server, so a request ending in between is not counted twice.
        def admitted():
            done = sum(r is not None for r in results)
            s = client.server_info()
            return s.running + s.waiting + done >= n
        poll_until(admitted, 60, f"{n} requests in the engine")
        return threads, results

    def test_sigterm_drains_in_flight_requests(self):
        server, client = self.start("--drain-timeout", "120")
        watch = client.watch_health(READINESS_SERVICE)
        self.assertEqual(next(watch), "SERVING")
        self.assertEqual(client.health(""), "SERVING")
        threads, results = self.in_flight(client, MIN_WORK_S)

        server.signal()
        # Readiness flips while the requests still run; liveness stays SERVING.
        poll_until(lambda: client.health(READINESS_SERVICE, timeout=10) == "NOT_SERVING", 30,
                   "readiness NOT_SERVING after SIGTERM")
        self.assertEqual(next(watch), "NOT_SERVING")
        watch.cancel()
        self.assertEqual(client.health("", timeout=10), "SERVING")
        self.assertTrue(client.server_info(timeout=10).draining)
        # New work is refused.
        for rpc in ("complete", "generate"):
            with self.assertRaises(grpc.RpcError, msg=rpc) as cm:
                r = getattr(client, rpc)("Once upon a time", max_tokens=4, timeout=30)
                if rpc == "generate":
                    list(r)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                             cm.exception.details())
            self.assertTrue(cm.exception.details())
        busy = client.server_info(timeout=10)
        self.assertGreater(busy.running + busy.waiting, 0,
                           "the in-flight work ended before the drain checks")

        for t in threads:
            t.join(timeout=300)
        self.assertEqual(server.wait(), 0)
        # Every request that was in flight finished normally.
        for i, r in enumerate(results):
            with self.subTest(request=i):
                self.assertEqual(r[0], "ok", r[:2])
                self.assertEqual(finish_name(r[1][-1].finish_reason), "FINISH_REASON_LENGTH")

    def test_drain_timeout_cancels_the_rest(self):
        server, client = self.start("--drain-timeout", "1")
        threads, results = self.in_flight(client, MIN_WORK_S * 2)
        t0 = time.monotonic()
        server.signal()
        self.assertEqual(server.wait(60), 0)
        exit_s = time.monotonic() - t0
        for t in threads:
            t.join(timeout=60)
        reasons = {}
        for i, r in enumerate(results):
            with self.subTest(request=i):
                self.assertEqual(r[0], "ok", f"request {i} ended with status {r[:2]} instead of "
                                             "a final message")
                if r[0] == "ok":
                    reason = finish_name(r[1][-1].finish_reason)
                    self.assertIn(reason, ("FINISH_REASON_LENGTH", "FINISH_REASON_CANCELLED"))
                    reasons[reason] = reasons.get(reason, 0) + 1
        self.assertIn("FINISH_REASON_CANCELLED", reasons)
        self.assertLess(exit_s, 30, "exit took far longer than the 1 s drain timeout")


if __name__ == "__main__":
    unittest.main()
