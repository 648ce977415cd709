"""200 concurrent streams: every one finishes, with the text the same request gets alone."""

import threading
import unittest

from e2e_support import ServerTestCase, finish_name, grpc

N = 200
MAX_TOKENS = 12

NAMES = ["Lily", "Ben", "Tom", "Sue", "Max", "Anna", "Tim", "Sara", "Jack", "Mia"]
THINGS = ["a ball", "a cat", "the park", "a big tree", "a red car", "the sun", "a toy",
          "a bird", "the sea", "a cake", "a dog", "the moon", "a box", "a flower", "a boat",
          "the garden", "a hat", "a fish", "the sky", "a book"]


def prompts():
    return [f"{n} saw {t}" for n in NAMES for t in THINGS][:N]


class ConcurrencyTest(ServerTestCase):
    # Room for all of them in the waiting queue, whatever the defaults are.
    SERVER_ARGS = ("--max-queue-requests", "1000", "--max-queue-tokens", "1000000")

    def test_200_concurrent_streams(self):
        ps = prompts()
        self.assertEqual(len(set(ps)), N)
        params = dict(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                      return_token_ids=True)
        # Each request alone, one after another.
        alone = {}
        for p in ps:
            r = self.client.complete(p, **params)
            alone[p] = (r.text, list(r.token_ids))

        results, errors = {}, []
        barrier = threading.Barrier(N)

        def one(p):
            try:
                barrier.wait(timeout=60)
                chunks = list(self.client.generate(p, **params))
                results[p] = ("".join(c.text for c in chunks),
                              [i for c in chunks for i in c.token_ids], chunks[-1])
            except grpc.RpcError as e:
                errors.append((p, e.code(), e.details()))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((p, type(e).__name__, str(e)))

        threads = [threading.Thread(target=one, args=(p,)) for p in ps]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        self.assertFalse(any(t.is_alive() for t in threads), "streams still running after 300 s")
        self.assertEqual(errors, [])
        self.assertEqual(len(results), N)
        for p in ps:
            text, ids, final = results[p]
            with self.subTest(prompt=p):
                self.assertEqual((text, ids), alone[p])
                self.assertEqual(final.usage.completion_tokens, MAX_TOKENS)
                self.assertEqual(finish_name(final.finish_reason), "FINISH_REASON_LENGTH")
        self.assertIdle()


if __name__ == "__main__":
    unittest.main()
