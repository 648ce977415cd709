"""`pagoda serve --async-scheduling true`: concurrent streams that stop early (stop strings, EOS),
sample (seeded, with penalties) and ask for logprobs give what each gives alone on a server
without async scheduling; the engine is idle afterwards."""

import unittest

from e2e_support import PagodaServer, finish_name, run_together
from test_metrics import MetricsServerTestCase, sample

NAMES = ["Lily", "Ben", "Tom", "Sue", "Max", "Anna", "Tim", "Sara"]
THINGS = ["a ball", "a cat", "the park", "a big tree", "a red car"]


def requests():
    out = []
    for i, (n, t) in enumerate((n, t) for n in NAMES for t in THINGS):
        params = dict(max_tokens=24 + i % 9, return_token_ids=True)
        if i % 3 == 0:
            params.update(temperature=0.9, top_p=0.9, seed=100 + i, repetition_penalty=1.2)
        else:
            params.update(temperature=0)
        if i % 4 == 1:
            params.update(stop=[".", " the"])
        if i % 5 == 2:
            params.update(logprobs=2)
        if i % 2 == 0:
            params.update(ignore_eos=True)
        out.append((f"{n} saw {t}", params))
    return out


def run_stream(client, prompt, params):
    chunks = list(client.generate(prompt, **params))
    return ("".join(c.text for c in chunks), [i for c in chunks for i in c.token_ids],
            finish_name(chunks[-1].finish_reason), sum(len(c.logprobs) for c in chunks))


class AsyncSchedulingTest(MetricsServerTestCase):
    EXTRA_ARGS = ("--async-scheduling", "true", "--max-queue-requests", "1000")

    def test_concurrent_streams_match_a_server_without_it(self):
        reqs = requests()
        # The reference: each request alone on a server without async scheduling.
        sync_server = PagodaServer().start()
        try:
            with sync_server.client() as c:
                want = [run_stream(c, p, params) for p, params in reqs]
        finally:
            sync_server.stop()

        results, errors = run_together(lambda k: run_stream(self.client, *reqs[k]),
                                       list(range(len(reqs))))
        self.assertEqual(errors, [])
        finishes = set()
        for k, (prompt, params) in enumerate(reqs):
            with self.subTest(prompt=prompt, params=params):
                self.assertEqual(results[k], want[k])
                finishes.add(results[k][2])
        # The mix ends requests all three ways, so rows are wasted and stops are matched late.
        self.assertIn("FINISH_REASON_STOP_SEQUENCE", finishes)
        self.assertIn("FINISH_REASON_LENGTH", finishes)
        self.assertIdle()
        # It did plan ahead, and the requests that stopped had their next row computed already.
        text = self.metrics()
        self.assertGreater(sample(text, "pagoda_async_lookahead_steps_total") or 0, 10, text)
        self.assertGreater(sample(text, "pagoda_async_wasted_rows_total") or 0, 0, text)


if __name__ == "__main__":
    unittest.main()
