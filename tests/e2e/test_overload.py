"""Backpressure: with one running sequence and a waiting queue of two, a burst of requests gets
RESOURCE_EXHAUSTED at once (with a message) for what does not fit, and every admitted request
still finishes normally."""

import threading
import time
import unittest

from e2e_support import ServerTestCase, finish_name, grpc

BURST = 24


class OverloadTest(ServerTestCase):
    SERVER_ARGS = ("--max-queue-requests", "2", "--max-num-seqs", "1")

    def long_request(self, i):
        return dict(token_ids=[1, 403 + i], temperature=0, ignore_eos=True,
                    max_tokens=self.model.context_length - 2, return_token_ids=True)

    def test_burst_gets_resource_exhausted_and_admitted_requests_finish(self):
        self.assertIdle()
        # What each request produces alone.
        alone = {i: list(self.client.complete(**self.long_request(i)).token_ids)
                 for i in range(BURST)}
        # One long request occupies the only running slot while the burst arrives.
        head = self.client.generate(**self.long_request(0))
        head_first = next(head)
        ok, rejected, other = {}, [], []
        barrier = threading.Barrier(BURST - 1)

        def one(i):
            barrier.wait(timeout=60)
            t0 = time.monotonic()
            try:
                ok[i] = list(self.client.generate(**self.long_request(i)))
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    rejected.append((i, e.details(), time.monotonic() - t0))
                else:
                    other.append((i, e.code().name, e.details()))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(1, BURST)]
        for t in threads:
            t.start()
        ok[0] = [head_first, *head]
        for t in threads:
            t.join(timeout=300)
        self.assertFalse(any(t.is_alive() for t in threads), "requests still running after 300 s")
        self.assertEqual(other, [])
        self.assertTrue(rejected, "no request was turned away with RESOURCE_EXHAUSTED")
        for i, msg, seconds in rejected:
            self.assertTrue(msg, f"RESOURCE_EXHAUSTED without a message for request {i}")
            self.assertLess(seconds, 30.0, "a rejection should come at once")
        self.assertEqual(len(ok) + len(rejected), BURST)
        # The queue holds two: the head plus at least those were admitted, and every admitted
        # request finished with the tokens it gets alone.
        self.assertGreaterEqual(len(ok), 3)
        for i, chunks in sorted(ok.items()):
            with self.subTest(request=i):
                self.assertEqual(finish_name(chunks[-1].finish_reason), "FINISH_REASON_LENGTH")
                self.assertEqual([t for c in chunks for t in c.token_ids], alone[i])
        print(f"\n  overload: {len(ok)} admitted, {len(rejected)} rejected, e.g. "
              f"{rejected[0][1]!r}", end=" ", flush=True)
        self.assertIdle()

    def test_queue_frees_up_after_the_burst(self):
        self.assertIdle()
        for _ in range(3):
            r = self.client.complete("Once upon a time", max_tokens=8, temperature=0)
            self.assertEqual(r.usage.completion_tokens, 8)


if __name__ == "__main__":
    unittest.main()
