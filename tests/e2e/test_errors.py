"""Bad input: every case is INVALID_ARGUMENT with a message naming the field, on Complete and on
Generate, and the server keeps serving afterwards; and --max-logprobs.

Invalid UTF-8 cannot be put into a `string` field through the protobuf API (Python strings are
Unicode, and the serializer refuses lone surrogates), so those requests are serialized by hand:
the text field (GenerateRequest.text and TokenizeRequest.text are both field 2) is encoded as
raw bytes with raw_string_field() and prepended to the serialization of the rest of the
message, and the call goes through a channel method whose request serializer passes bytes
through (raw_unary()).
"""

import unittest

from e2e_support import (ServerTestCase, build_request, grpc, pb, raw_string_field, raw_unary)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PROMPT = "Once upon a time"


class BadInputTest(ServerTestCase):
    SERVER_ARGS = ()

    def cases(self):
        ctx, vocab = self.model.context_length, self.model.vocab_size
        ok = dict(max_tokens=4)
        # (name, build_request arguments, words of which the message must contain one)
        return [
            ("no input", dict(**ok), ("input", "text", "token_ids", "prompt")),
            ("empty text", dict(prompt="", **ok), ("text", "input", "prompt")),
            ("empty token_ids", dict(token_ids=[], **ok), ("token_ids",)),
            ("prompt too long (ids)", dict(token_ids=[1] + [300] * ctx, **ok),
             ("token_ids", "prompt", "input", "context")),
            ("prompt too long (text)", dict(prompt="the cat sat " * ctx, **ok),
             ("text", "prompt", "input", "context")),
            ("max_tokens 0", dict(prompt=PROMPT, max_tokens=0), ("max_tokens",)),
            ("max_tokens beyond context", dict(prompt=PROMPT, max_tokens=ctx + 1),
             ("max_tokens",)),
            ("temperature -1", dict(prompt=PROMPT, temperature=-1, **ok), ("temperature",)),
            ("temperature 101", dict(prompt=PROMPT, temperature=101, **ok), ("temperature",)),
            ("temperature nan", dict(prompt=PROMPT, temperature=float("nan"), **ok),
             ("temperature",)),
            ("top_p 0", dict(prompt=PROMPT, top_p=0, **ok), ("top_p",)),
            ("top_p 1.5", dict(prompt=PROMPT, top_p=1.5, **ok), ("top_p",)),
            ("top_k -1", dict(prompt=PROMPT, top_k=-1, **ok), ("top_k",)),
            ("min_p 2", dict(prompt=PROMPT, min_p=2, **ok), ("min_p",)),
            ("repetition_penalty 0", dict(prompt=PROMPT, repetition_penalty=0, **ok),
             ("repetition_penalty",)),
            ("presence_penalty 3", dict(prompt=PROMPT, presence_penalty=3, **ok),
             ("presence_penalty",)),
            ("frequency_penalty -3", dict(prompt=PROMPT, frequency_penalty=-3, **ok),
             ("frequency_penalty",)),
            ("unknown model", dict(prompt=PROMPT, model="no-such-model", **ok), ("model",)),
            ("token id = vocab", dict(token_ids=[1, vocab], **ok), ("token_ids",)),
            ("token id huge", dict(token_ids=[1, 4000000000], **ok), ("token_ids",)),
            ("stop token id = vocab", dict(prompt=PROMPT, stop_token_ids=[vocab], **ok),
             ("stop_token_ids",)),
            ("logprobs 21", dict(prompt=PROMPT, logprobs=21, **ok), ("logprobs",)),
            ("empty stop string", dict(prompt=PROMPT, stop=[""], **ok), ("stop",)),
            ("priority 1001", dict(prompt=PROMPT, priority=1001, **ok), ("priority",)),
        ]

    def check_message(self, err, words):
        msg = err.details() or ""
        self.assertTrue(any(w in msg for w in words),
                        f"the message {msg!r} names none of {words}")

    def test_bad_requests_are_invalid_argument(self):
        for name, kw, words in self.cases():
            req = build_request(**kw)
            with self.subTest(name, rpc="Complete"):
                self.check_message(self.assertRpcError(INVALID, self.client.complete,
                                                       request=req), words)
            with self.subTest(name, rpc="Generate"):
                self.check_message(self.assertRpcError(INVALID, self.client.generate,
                                                       request=req), words)
        self.assertIdle()

    def test_invalid_utf8(self):
        complete = raw_unary(self.client, "/pagoda.v1.Generation/Complete", pb.GenerateResponse)
        generate = self.client.channel.unary_stream(
            "/pagoda.v1.Generation/Generate", request_serializer=None,
            response_deserializer=pb.GenerateResponse.FromString)
        tokenize = raw_unary(self.client, "/pagoda.v1.Generation/Tokenize", pb.TokenizeResponse)
        rest = build_request(max_tokens=4).SerializeToString()
        words = ("text", "UTF-8", "utf-8", "utf8")
        for bad in (b"Once upon \xff a time", b"\xc3", b"abc\xed\xa0\x80", b"\xc0\xaf"):
            wire = raw_string_field(2, bad) + rest
            with self.subTest(bad=bad, rpc="Complete"):
                self.check_message(self.assertRpcError(INVALID, complete, wire, timeout=30), words)
            with self.subTest(bad=bad, rpc="Generate"):
                self.check_message(self.assertRpcError(INVALID, generate, wire, timeout=30), words)
            with self.subTest(bad=bad, rpc="Tokenize"):
                self.check_message(self.assertRpcError(INVALID, tokenize, raw_string_field(2, bad),
                                                       timeout=30), words)
        # A stop string (GenerateRequest.stop = 5, StopParams.stop = 2) that is not UTF-8.
        stop = raw_string_field(5, raw_string_field(2, b"\xff"))
        wire = build_request(PROMPT, max_tokens=4).SerializeToString() + stop
        with self.subTest("stop string", rpc="Complete"):
            self.check_message(self.assertRpcError(INVALID, complete, wire, timeout=30), ("stop",))
        # The hand-built encoding itself is right: the same bytes with valid text work.
        r = complete(raw_string_field(2, PROMPT.encode()) + rest, timeout=30)
        self.assertEqual(r.usage.completion_tokens, 4)
        r = complete(build_request(PROMPT, max_tokens=4).SerializeToString()
                     + raw_string_field(5, raw_string_field(2, b"zzz")), timeout=30)
        self.assertEqual(r.usage.completion_tokens, 4)

    def test_other_methods(self):
        vocab = self.model.vocab_size
        err = self.assertRpcError(INVALID, self.client.tokenize, PROMPT, model="no-such-model")
        self.check_message(err, ("model",))
        err = self.assertRpcError(INVALID, self.client.detokenize, [1, vocab])
        self.check_message(err, ("token_ids",))
        err = self.assertRpcError(INVALID, self.client.detokenize, [1], model="no-such-model")
        self.check_message(err, ("model",))

    def test_model_name_may_be_given(self):
        r = self.client.complete(PROMPT, model=self.model.id, max_tokens=4, temperature=0)
        self.assertEqual(r.usage.completion_tokens, 4)
        self.assertEqual(r.model_id, self.model.id)

    def test_still_serves_after_abuse(self):
        # Every bad request again, outcomes ignored (the tests above judge them), then a
        # normal one.
        complete = raw_unary(self.client, "/pagoda.v1.Generation/Complete", pb.GenerateResponse)
        for _, kw, _ in self.cases():
            for rpc in (self.client.complete, lambda **k: list(self.client.generate(**k))):
                try:
                    rpc(request=build_request(**kw))
                except grpc.RpcError:
                    pass
        try:
            complete(raw_string_field(2, b"\xff\xfe") + build_request(max_tokens=4)
                     .SerializeToString(), timeout=30)
        except grpc.RpcError:
            pass
        r = self.client.complete(PROMPT, max_tokens=20, temperature=0)
        self.assertTrue(r.text.startswith(", there was a little girl named Lily"), r.text)
        self.assertIdle()


class MaxLogprobsTest(ServerTestCase):
    """`pagoda serve --max-logprobs 2`: a request for more logprobs is INVALID_ARGUMENT naming
    the limit; one within it gets them."""
    SERVER_ARGS = ("--max-logprobs", "2")

    def test_more_than_the_limit_is_refused(self):
        self.assertEqual(self.client.model_info().max_logprobs, 2)
        req = build_request(prompt=PROMPT, max_tokens=4, logprobs=3)
        for rpc in (self.client.complete, self.client.generate):
            err = self.assertRpcError(INVALID, rpc, request=req)
            self.assertIn("max_logprobs of 2", err.details() or "")
        full = self.client.complete(PROMPT, temperature=0, max_tokens=4, logprobs=2)
        self.assertEqual(len(full.logprobs), 4)
        for lp in full.logprobs:
            self.assertEqual(len(lp.top), 2)
        self.assertIdle()


if __name__ == "__main__":
    unittest.main()
