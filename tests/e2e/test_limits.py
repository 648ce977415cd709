"""Per-tenant limits and keys-file reloads through the real server.

LimitsTest: tokens_per_minute (RESOURCE_EXHAUSTED naming it, with a retry-after while the window
is full; none for a request bigger than the whole limit), max_concurrent_requests (a second
request is refused while one is held open; a new one is admitted once the first finishes or is
cancelled) and max_prompt_tokens (refused, not retryable). test_auth.py covers
max_completion_tokens and requests_per_second.

KeysReloadTest: SIGHUP reloads --keys-file: an added key starts to work, a removed key becomes
UNAUTHENTICATED, a changed limit applies; a broken file is rejected (the old keys keep working)
and the server stays up.

Holding a request open without timing luck: the client that makes it reads one chunk and then
stops reading. Its channel disables HTTP/2 BDP probing and asks for a small stream window, and
the request asks for many tokens with 20 logprobs each, so the response is far bigger than the
window: the server's writes block on flow control, the handler cannot return, and the request
keeps its concurrency slot until the client reads on or cancels.
"""

import hashlib
import os
import signal
import tempfile

from e2e_support import Client, ServerTestCase, grpc, poll_until

METERED_KEY = "pk-metered-e2e-secret"
SINGLE_KEY = "pk-single-e2e-secret"
SHORT_KEY = "pk-short-e2e-secret"

TOKENS_PER_MINUTE = 40
MAX_PROMPT_TOKENS = 4

# A client that stops reading holds its stream open (module docstring).
HOLDING_CHANNEL = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


def sha(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def auth(key):
    return [("authorization", f"Bearer {key}")]


def write_atomically(path, text):
    """The server may read the file at any SIGHUP: it sees the old text or the new, whole."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def limit_refusal(err, limit):
    """True when err is RESOURCE_EXHAUSTED naming `limit` (a keys-file field name)."""
    return err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and limit in (err.details() or "")


def trailing(err):
    return dict(err.trailing_metadata() or ())


class LimitsTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pagoda-limits-")
        keys = os.path.join(cls.dir, "keys.yaml")
        write_atomically(keys, f"""
tenants:
  - name: metered
    limits: {{tokens_per_minute: {TOKENS_PER_MINUTE}}}
    keys:
      - {{id: metered-1, hash: "{sha(METERED_KEY)}"}}
  - name: single
    limits: {{max_concurrent_requests: 1}}
    keys:
      - {{id: single-1, hash: "{sha(SINGLE_KEY)}"}}
  - name: short
    limits: {{max_prompt_tokens: {MAX_PROMPT_TOKENS}}}
    keys:
      - {{id: short-1, hash: "{sha(SHORT_KEY)}"}}
""")
        cls.SERVER_ARGS = ("--keys-file", keys)
        cls.CHECK_AFTER = False  # the after-test request carries no key
        super().setUpClass()

    def long_request(self):
        """Many tokens, each with 20 logprobs: a response far bigger than HOLDING_CHANNEL's
        window."""
        return dict(token_ids=[1, 403], max_tokens=self.model.context_length - 2,
                    ignore_eos=True, temperature=0, logprobs=20)

    def test_tokens_per_minute(self):
        # One request reserving more than the whole limit can never pass: no retry-after.
        err = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.client.complete,
                                  token_ids=[1, 403], max_tokens=TOKENS_PER_MINUTE,
                                  metadata=auth(METERED_KEY))
        self.assertIn("tokens_per_minute", err.details())
        self.assertIn("not retryable", err.details())
        self.assertNotIn("retry-after", trailing(err))
        # Requests of 2 + 8 tokens fill the 60 s window; the one that would overflow it is
        # refused with a retry-after (when the oldest entries leave the window).
        used, refused = 0, None
        for _ in range(TOKENS_PER_MINUTE):  # bounded: each admitted one spends 10
            try:
                r = self.client.complete(token_ids=[1, 403], max_tokens=8, ignore_eos=True,
                                         temperature=0, metadata=auth(METERED_KEY))
            except grpc.RpcError as e:
                refused = e
                break
            used += r.usage.prompt_tokens + r.usage.completion_tokens
        self.assertIsNotNone(refused, f"never refused after {used} tokens")
        self.assertTrue(limit_refusal(refused, "tokens_per_minute"),
                        f"{refused.code().name}: {refused.details()}")
        self.assertLessEqual(used, TOKENS_PER_MINUTE)
        self.assertGreater(used + 10, TOKENS_PER_MINUTE, "refused although the request fit")
        retry = int(trailing(refused).get("retry-after", "0"))
        self.assertTrue(1 <= retry <= 60, f"retry-after {retry!r}: {trailing(refused)}")
        self.assertIn("retry after", refused.details())
        # Other tenants are not charged for it.
        self.client.complete(token_ids=[1, 403], max_tokens=8, metadata=auth(SINGLE_KEY))

    def assertConcurrencyRefused(self):
        err = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.client.complete,
                                  token_ids=[1, 403], max_tokens=2, metadata=auth(SINGLE_KEY))
        self.assertIn("max_concurrent_requests", err.details())
        self.assertIn("limit (1) reached", err.details())
        # When a running request finishes is unknown: no retry-after.
        self.assertNotIn("retry-after", trailing(err))

    def admitted_again(self):
        """Polls until a request of tenant `single` is admitted (the held one's slot is free)."""
        def admitted():
            try:
                return self.client.complete(token_ids=[1, 403], max_tokens=2,
                                            metadata=auth(SINGLE_KEY))
            except grpc.RpcError as e:
                if limit_refusal(e, "max_concurrent_requests"):
                    return None
                raise
        return poll_until(admitted, 30, "a new request admitted after the held one ended")

    def test_max_concurrent_requests(self):
        with Client(self.server.target, timeout=120, options=HOLDING_CHANNEL) as holder:
            # Held, then read to the end: it finishes normally and frees the slot.
            max_tokens = self.long_request()["max_tokens"]
            held = holder.generate(**self.long_request(), metadata=auth(SINGLE_KEY))
            chunks = [next(held)]  # admitted and running
            self.assertConcurrencyRefused()
            self.assertConcurrencyRefused()  # refusals reserve nothing
            chunks += list(held)
            self.assertEqual(chunks[-1].usage.completion_tokens, max_tokens)
            self.assertEqual(sum(len(c.logprobs) for c in chunks), max_tokens)
            self.assertEqual(self.admitted_again().usage.completion_tokens, 2)
            # Held, then cancelled: the slot is freed too.
            held = holder.generate(**self.long_request(), metadata=auth(SINGLE_KEY))
            next(held)
            self.assertConcurrencyRefused()
            held.cancel()
            self.admitted_again()
        self.assertIdle()

    def test_max_prompt_tokens(self):
        ok = self.client.complete(token_ids=[1] + [403] * (MAX_PROMPT_TOKENS - 1), max_tokens=2,
                                  metadata=auth(SHORT_KEY))
        self.assertEqual(ok.usage.prompt_tokens, MAX_PROMPT_TOKENS)  # the cap itself passes
        for rpc in ("complete", "generate"):
            err = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      getattr(self.client, rpc),
                                      token_ids=[1] + [403] * MAX_PROMPT_TOKENS, max_tokens=2,
                                      metadata=auth(SHORT_KEY))
            self.assertIn("max_prompt_tokens", err.details())
            self.assertIn(f"limit ({MAX_PROMPT_TOKENS})", err.details())
            self.assertIn("not retryable", err.details())
            self.assertNotIn("retry-after", trailing(err))


OLD_KEY = "pk-acme-reload-old"
GONE_KEY = "pk-globex-reload-gone"
NEW_KEY = "pk-initech-reload-new"


class KeysReloadTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pagoda-keys-reload-")
        cls.keys = os.path.join(cls.dir, "keys.yaml")
        write_atomically(cls.keys, cls.keys_yaml(acme_max_completion=8, globex=True,
                                                 initech=False))
        cls.SERVER_ARGS = ("--keys-file", cls.keys)
        cls.CHECK_AFTER = False  # the after-test request carries no key
        super().setUpClass()

    @staticmethod
    def keys_yaml(acme_max_completion, globex, initech):
        text = f"""
tenants:
  - name: acme
    limits: {{max_completion_tokens: {acme_max_completion}}}
    keys:
      - {{id: acme-1, hash: "{sha(OLD_KEY)}"}}
"""
        if globex:
            text += f"""  - name: globex
    keys:
      - {{id: globex-1, hash: "{sha(GONE_KEY)}"}}
"""
        if initech:
            text += f"""  - name: initech
    keys:
      - {{id: initech-1, hash: "{sha(NEW_KEY)}"}}
"""
        return text

    def works(self, key, max_tokens=2):
        """True when `key` authenticates and the request is admitted; False when it is
        UNAUTHENTICATED; other errors are raised."""
        try:
            r = self.client.complete(token_ids=[1, 403], max_tokens=max_tokens, ignore_eos=True,
                                     metadata=auth(key))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                self.assertNotIn(key, e.details() or "")
                return False
            raise
        self.assertEqual(r.usage.completion_tokens, max_tokens)
        return True

    def test_sighup_reloads_keys_and_keeps_them_on_error(self):
        self.assertTrue(self.works(OLD_KEY))
        self.assertTrue(self.works(GONE_KEY))
        self.assertFalse(self.works(NEW_KEY))
        self.assertTrue(self.works(OLD_KEY, max_tokens=6))

        # initech (NEW_KEY) added, globex (GONE_KEY) removed, acme's cap 8 -> 4.
        write_atomically(self.keys, self.keys_yaml(acme_max_completion=4, globex=False,
                                                   initech=True))
        self.server.signal(signal.SIGHUP)
        poll_until(lambda: self.works(NEW_KEY), 30, "the added key to work after SIGHUP")
        # The key list is swapped whole, so once the new key works the removed one is gone.
        self.assertFalse(self.works(GONE_KEY))
        self.assertTrue(self.works(OLD_KEY))
        err = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.client.complete,
                                  token_ids=[1, 403], max_tokens=6, metadata=auth(OLD_KEY))
        self.assertIn("max_completion_tokens limit (4)", err.details())
        self.assertIn(f"reloaded {self.keys}", self.server.stderr_text())

        # A broken file (bad YAML, an unknown field, then no file at all) is rejected, saying
        # where and why on stderr: the keys from the last good file stay in force, and the
        # server stays up.
        broken_files = [
            ("tenants:\n  - name: [unclosed\n", f"{self.keys}:3:1: end of sequence flow"),
            ("tenants:\n  - name: acme\n    colour: blue\n",
             f"{self.keys}:3:5: tenants[0]: unknown field 'colour'"),
            (None, f"cannot read keys file {self.keys}"),
        ]
        def kept():
            return [line for line in self.server.stderr_text().splitlines()
                    if "kept the old keys" in line]

        for text, why in broken_files:
            kept_before = len(kept())
            if text is None:
                os.unlink(self.keys)
            else:
                write_atomically(self.keys, text)
            self.server.signal(signal.SIGHUP)
            poll_until(lambda: len(kept()) > kept_before, 30,
                       "the server to reject the broken keys file")
            self.assertIn(why, kept()[-1])
            self.assertIsNone(self.server.proc.poll(), "the server exited")
            self.assertTrue(self.works(NEW_KEY))
            self.assertTrue(self.works(OLD_KEY))
            self.assertFalse(self.works(GONE_KEY))
            self.assertEqual(self.client.health("pagoda.v1.Generation", timeout=10), "SERVING")
