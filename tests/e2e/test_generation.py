"""Generation through the server: streaming vs unary, the greedy reference, usage, tokens,
stop strings, logprobs, and aborting requests (cancel, deadline, disconnect) in the engine."""

import json
import os
import subprocess
import sys
import threading
import unittest

from e2e_support import REFERENCE, ROOT, ServerTestCase, finish_name, grpc

PROMPT = "Once upon a time"
PROMPT_IDS = [1, 403, 407, 261, 378]


class GenerationTest(ServerTestCase):
    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with open(REFERENCE) as f:
            cls.reference = json.load(f)

    # --- model and tokens ---------------------------------------------------------------------

    def test_model_info(self):
        m = self.model
        self.assertEqual(m.id, "stories260K")
        self.assertEqual(m.vocab_size, 512)
        self.assertEqual(m.context_length, 512)
        self.assertEqual(m.architecture, "llama")
        self.assertEqual(m.dtype, "f32")
        self.assertRegex(m.revision, r"^[0-9a-f]{8,}$")
        self.assertTrue(m.backend)
        s = self.client.server_info()
        self.assertTrue(s.version)
        self.assertGreater(s.num_kv_blocks, 0)
        self.assertGreaterEqual(s.uptime_seconds, 0)
        self.assertFalse(s.draining)

    def test_tokenize_and_detokenize(self):
        t = self.client.tokenize(PROMPT)
        self.assertEqual(list(t.token_ids), PROMPT_IDS)
        self.assertEqual(len(t.pieces), len(t.token_ids))
        self.assertEqual(list(self.client.tokenize(PROMPT, add_bos=False).token_ids),
                         PROMPT_IDS[1:])
        self.assertEqual(self.client.detokenize(PROMPT_IDS[1:]), PROMPT)
        # Multi-byte characters survive the round trip (byte-fallback pieces).
        text = "Héllo wörld, ünïcode ✓ 😀 日本"
        ids = list(self.client.tokenize(text, add_bos=False).token_ids)
        self.assertEqual(self.client.detokenize(ids), text)

    # --- streaming and unary ------------------------------------------------------------------

    def check_final(self, final, chunks=None):
        self.assertNotEqual(finish_name(final.finish_reason), "FINISH_REASON_UNSPECIFIED")
        self.assertEqual(final.model_id, self.model.id)
        self.assertEqual(final.model_revision, self.model.revision)
        self.assertTrue(final.request_id)
        t = final.timings
        for name in ("queue_seconds", "first_token_seconds", "decode_seconds", "total_seconds"):
            self.assertGreaterEqual(getattr(t, name), 0.0, name)
        self.assertLessEqual(t.queue_seconds, t.first_token_seconds + 1e-6)
        self.assertLessEqual(t.first_token_seconds, t.total_seconds + 1e-6)
        self.assertLessEqual(t.decode_seconds, t.total_seconds + 1e-6)
        if chunks:
            for c in chunks[:-1]:
                self.assertEqual(c.finish_reason, 0, "only the last chunk carries a finish reason")
            self.assertEqual({c.request_id for c in chunks if c.request_id}, {final.request_id})

    def test_stream_and_unary_give_the_same_text(self):
        for params in (dict(temperature=0, max_tokens=60),
                       dict(temperature=0.8, top_p=0.9, seed=1234, max_tokens=60),
                       dict(temperature=1.0, top_k=20, seed=7, max_tokens=100, ignore_eos=True)):
            with self.subTest(**params):
                text, ids, chunks = self.stream(PROMPT, return_token_ids=True, **params)
                final = chunks[-1]
                self.check_final(final, chunks)
                full = self.client.complete(PROMPT, return_token_ids=True, **params)
                self.check_final(full)
                self.assertEqual(full.text, text)
                self.assertEqual(list(full.token_ids), ids)
                self.assertEqual(full.finish_reason, final.finish_reason)
                self.assertEqual(full.usage.prompt_tokens, final.usage.prompt_tokens)
                self.assertEqual(full.usage.completion_tokens, final.usage.completion_tokens)
                self.assertTrue(text)

    def test_greedy_matches_reference(self):
        for case in self.reference["cases"]:
            with self.subTest(prompt=case["prompt"]):
                prompt_ids, want = case["prompt_ids"], case["generated_ids"]
                params = dict(temperature=0, ignore_eos=True, stop_token_ids=[1],
                              max_tokens=case["steps"] - len(prompt_ids) + 1,
                              return_token_ids=True)
                text, ids, chunks = self.stream(token_ids=prompt_ids, **params)
                self.assertEqual(ids, want)
                expect_reason = ("FINISH_REASON_STOP" if want and want[-1] == 1
                                 else "FINISH_REASON_LENGTH")
                self.assertEqual(finish_name(chunks[-1].finish_reason), expect_reason)
                self.assertEqual(chunks[-1].usage.prompt_tokens, len(prompt_ids))
                self.assertEqual(chunks[-1].usage.completion_tokens, len(want))
                # The reference text is prompt + generation.
                self.assertEqual((case["prompt"] + text).strip(), case["text"].strip())
                if case["prompt"]:
                    # Text input (BOS added by default) gives the same ids.
                    self.assertEqual(list(self.client.tokenize(case["prompt"]).token_ids),
                                     prompt_ids)
                    text2, ids2, _ = self.stream(case["prompt"], **params)
                    self.assertEqual(ids2, want)
                    self.assertEqual(text2, text)

    def test_usage_adds_up(self):
        for prompt in (PROMPT, "Lily and Ben went to the park", "The cat"):
            with self.subTest(prompt=prompt):
                n_prompt = len(self.client.tokenize(prompt).token_ids)
                text, ids, chunks = self.stream(prompt, temperature=0, max_tokens=40,
                                                ignore_eos=True, return_token_ids=True)
                seen = 0
                prev = 0
                for c in chunks:
                    seen += len(c.token_ids)
                    self.assertEqual(c.usage.prompt_tokens, n_prompt)
                    self.assertEqual(c.usage.completion_tokens, seen,
                                     "usage so far counts the ids streamed so far")
                    self.assertGreaterEqual(c.usage.completion_tokens, prev)
                    self.assertLessEqual(c.usage.cached_tokens, c.usage.prompt_tokens)
                    prev = c.usage.completion_tokens
                self.assertEqual(len(ids), 40)
                self.assertEqual(chunks[-1].usage.completion_tokens, 40)
                full = self.client.complete(prompt, temperature=0, max_tokens=40, ignore_eos=True)
                self.assertEqual(full.usage.prompt_tokens, n_prompt)
                self.assertEqual(full.usage.completion_tokens, 40)
                # The same prompt again is served (partly) from the prefix cache.
                self.assertLessEqual(full.usage.cached_tokens, full.usage.prompt_tokens)

    def test_stop_string(self):
        # Greedy continues "Once upon a time" with ", there was a little girl named Lily."
        text, _, chunks = self.stream(PROMPT, temperature=0, max_tokens=60, stop=["Lily"])
        self.assertEqual(text, ", there was a little girl named ")
        self.assertEqual(finish_name(chunks[-1].finish_reason), "FINISH_REASON_STOP_SEQUENCE")
        full = self.client.complete(PROMPT, temperature=0, max_tokens=60, stop=["Lily"])
        self.assertEqual(full.text, text)

    def test_logprobs(self):
        text, ids, chunks = self.stream(PROMPT, temperature=0, max_tokens=20, logprobs=3,
                                        return_token_ids=True)
        lps = [lp for c in chunks for lp in c.logprobs]
        self.assertEqual(len(lps), len(ids))
        for c in chunks:
            self.assertEqual(len(c.logprobs), len(c.token_ids))
        for tid, lp in zip(ids, lps):
            self.assertEqual(lp.token_id, tid)
            self.assertLessEqual(lp.logprob, 0.0)
            self.assertEqual(len(lp.top), 3)
            # Greedy: the chosen token is the most likely one.
            self.assertEqual(lp.top[0].token_id, tid)
            self.assertAlmostEqual(lp.top[0].logprob, lp.logprob, places=4)
            self.assertGreaterEqual(lp.top[0].logprob, lp.top[1].logprob)
        full = self.client.complete(PROMPT, temperature=0, max_tokens=20, logprobs=3)
        self.assertEqual(len(full.logprobs), 20)

    # --- aborting requests --------------------------------------------------------------------

    def long_request(self, i=0):
        """A request that runs to the end of the context unless aborted."""
        return dict(token_ids=[1, 403 + (i % 40)], temperature=0, ignore_eos=True,
                    max_tokens=self.model.context_length - 2)

    def test_cancel_mid_stream_frees_blocks(self):
        self.assertIdle()
        calls = [self.client.generate(**self.long_request(i)) for i in range(8)]
        firsts = [next(c) for c in calls]  # every stream has started
        self.assertTrue(all(f.finish_reason == 0 for f in firsts))
        info = self.client.server_info()
        for c in calls:
            c.cancel()
        cancelled = 0
        for c in calls:
            try:
                last = None
                for last in c:
                    pass
                # It finished before the cancel got there: then it ended normally.
                self.assertEqual(finish_name(last.finish_reason), "FINISH_REASON_LENGTH")
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.CANCELLED, e.details())
                cancelled += 1
        self.assertIdle(what="the engine to free the cancelled streams' blocks")
        if not cancelled or info.running + info.waiting == 0:
            self.skipTest("every stream had finished before it was cancelled")
        self.assertGreater(info.kv_blocks_in_use, 0, "streams were running but used no KV block")

    def test_deadline_aborts_request(self):
        self.assertIdle()
        # Full-length requests alone, to set the deadline well under the time one needs.
        alone = min(self.client.complete(**self.long_request()).timings.total_seconds
                    for _ in range(2))
        deadline = max(alone / 4, 0.005)
        n = 8
        errors, done = [], []

        def one(i):
            try:
                done.append(self.client.complete(**self.long_request(i), timeout=deadline))
            except grpc.RpcError as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertLessEqual({e.code() for e in errors}, {grpc.StatusCode.DEADLINE_EXCEEDED},
                             [(e.code(), e.details()) for e in errors])
        self.assertIdle(what="the engine to abort the requests past their deadline")
        if not errors:
            self.skipTest(f"all {n} requests finished within their {deadline:.3f} s deadline")

    def test_disconnect_frees_blocks(self):
        """A client process killed mid-stream: the server aborts its request."""
        self.assertIdle()
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pagoda_client", "--target", self.server.target, "stream",
             "--token-ids", "1 403", "--temperature", "0", "--ignore-eos",
             "--max-tokens", str(self.model.context_length - 2)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            self.assertTrue(proc.stdout.read(1), "the client printed nothing")
            info = self.client.server_info()
        finally:
            proc.kill()
            proc.wait()
        self.assertIdle(what="the engine to free a disconnected client's request")
        if info.running == 0:
            self.skipTest("the request had finished before the client was killed")


if __name__ == "__main__":
    unittest.main()
