"""200 concurrent streams: every one finishes, with the text the same request gets alone."""

import unittest

from e2e_support import ServerTestCase, finish_name, run_together

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

        def one(p):
            chunks = list(self.client.generate(p, **params))
            return ("".join(c.text for c in chunks), [i for c in chunks for i in c.token_ids],
                    chunks[-1])

        results, errors = run_together(one, ps)
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
