"""Unit tests of pagoda_client without a pagoda server: request building, the command line's
flags, and the Client and pagoda-client against a small in-process fake of the API.

    /usr/bin/python3 -m unittest discover -s clients/python/tests -v
"""

import contextlib
import io
import os
import sys
import unittest
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pagoda_client import READINESS_SERVICE, Client, build_request, pb, pb_grpc  # noqa: E402
from pagoda_client import cli  # noqa: E402
from pagoda_client._stubs import health_pb2, health_pb2_grpc  # noqa: E402


class BuildRequestTest(unittest.TestCase):
    def test_fields_land_in_their_messages(self):
        r = build_request("hi", max_tokens=5, temperature=0, top_p=0.5, top_k=3, seed=9,
                          stop="x", stop_token_ids=[1], ignore_eos=True, add_bos=False,
                          return_token_ids=True, logprobs=2, model="m", priority=-1,
                          cache_salt="s")
        self.assertEqual(r.WhichOneof("input"), "text")
        self.assertEqual(r.text, "hi")
        self.assertEqual(r.stop.max_tokens, 5)
        self.assertTrue(r.sampling.HasField("temperature"))
        self.assertEqual(r.sampling.temperature, 0)
        self.assertAlmostEqual(r.sampling.top_p, 0.5)
        self.assertEqual((r.sampling.top_k, r.sampling.seed), (3, 9))
        self.assertEqual(list(r.stop.stop), ["x"])
        self.assertEqual(list(r.stop.stop_token_ids), [1])
        self.assertTrue(r.stop.ignore_eos)
        self.assertTrue(r.HasField("add_bos"))
        self.assertFalse(r.add_bos)
        self.assertEqual((r.return_token_ids, r.logprobs, r.model, r.priority, r.cache_salt),
                         (True, 2, "m", -1, "s"))

    def test_unset_means_default(self):
        r = build_request("hi", temperature=None)
        self.assertFalse(r.HasField("sampling"))
        self.assertFalse(r.HasField("stop"))
        self.assertFalse(r.HasField("add_bos"))

    def test_inputs(self):
        self.assertEqual(build_request(token_ids=[1, 2]).WhichOneof("input"), "token_ids")
        # An empty id list is still token_ids input (the server says it is empty).
        self.assertEqual(build_request(token_ids=[]).WhichOneof("input"), "token_ids")
        self.assertEqual(build_request("").WhichOneof("input"), "text")
        self.assertIsNone(build_request().WhichOneof("input"))
        with self.assertRaises(ValueError):
            build_request("a", token_ids=[1])
        with self.assertRaises(TypeError):
            build_request("a", max_token=3)


class FakeGeneration(pb_grpc.GenerationServicer):
    def Generate(self, request, context):
        if request.sampling.HasField("temperature") and request.sampling.temperature < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sampling.temperature: must be >= 0")
        words = [" one", " two", " three"][:request.stop.max_tokens or 3]
        for i, w in enumerate(words):
            yield pb.GenerateResponse(request_id="r1", text=w, token_ids=[10 + i],
                                      usage=pb.Usage(prompt_tokens=2, completion_tokens=i + 1))
        yield pb.GenerateResponse(request_id="r1", finish_reason=pb.FINISH_REASON_LENGTH,
                                  usage=pb.Usage(prompt_tokens=2, completion_tokens=len(words)),
                                  model_id="fake")

    def Complete(self, request, context):
        chunks = list(self.Generate(request, context))
        final = pb.GenerateResponse()
        final.CopyFrom(chunks[-1])
        final.text = "".join(c.text for c in chunks)
        final.token_ids.extend([i for c in chunks for i in c.token_ids])
        return final

    def Tokenize(self, request, context):
        ids = ([1] if not request.HasField("add_bos") or request.add_bos else []) + [5, 6]
        return pb.TokenizeResponse(token_ids=ids, pieces=["<s>", "a", "b"][-len(ids):])

    def Detokenize(self, request, context):
        return pb.DetokenizeResponse(text="ab")

    def GetModelInfo(self, request, context):
        return pb.ModelInfo(id="fake", vocab_size=7, context_length=16)

    def GetServerInfo(self, request, context):
        return pb.ServerInfo(version="0", num_kv_blocks=4)


class FakeHealth(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service not in ("", READINESS_SERVICE):
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class FakeServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = grpc.server(futures.ThreadPoolExecutor(4))
        pb_grpc.add_GenerationServicer_to_server(FakeGeneration(), cls.server)
        health_pb2_grpc.add_HealthServicer_to_server(FakeHealth(), cls.server)
        port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.target = f"127.0.0.1:{port}"
        cls.client = Client(cls.target, timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop(None)

    def test_client(self):
        chunks = list(self.client.generate("x", max_tokens=2))
        self.assertEqual([c.text for c in chunks], [" one", " two", ""])
        self.assertEqual(chunks[-1].finish_reason, pb.FINISH_REASON_LENGTH)
        r = self.client.complete("x")
        self.assertEqual(r.text, " one two three")
        self.assertEqual(list(self.client.tokenize("ab").token_ids), [1, 5, 6])
        self.assertEqual(list(self.client.tokenize("ab", add_bos=False).token_ids), [5, 6])
        self.assertEqual(self.client.detokenize([5, 6]), "ab")
        self.assertEqual(self.client.model_info().id, "fake")
        self.assertEqual(self.client.server_info().num_kv_blocks, 4)
        self.assertEqual(self.client.health(), "SERVING")
        self.assertEqual(self.client.health(READINESS_SERVICE), "SERVING")
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.health("nope")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.client.generate("x", temperature=-1))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("temperature", cm.exception.details())

    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as e:
                code = e.code
        return code, out.getvalue(), err.getvalue()

    def test_cli(self):
        t = ("--target", self.target)
        self.assertEqual(self.run_cli(*t, "stream", "--prompt", "x", "-q"), (0, " one two three\n", ""))
        code, out, err = self.run_cli("generate", "--prompt", "x", "--max-tokens", "2", *t)
        self.assertEqual((code, out), (0, " one two\n"))
        self.assertIn("[length]", err)
        self.assertEqual(self.run_cli(*t, "stream", "--echo", "--prompt", "x", "-q")[1],
                         "x one two three\n")
        self.assertEqual(self.run_cli(*t, "tokenize", "--prompt", "ab")[:2], (0, "1 5 6\n"))
        self.assertEqual(self.run_cli(*t, "tokenize", "--text", "ab", "--no-bos")[:2], (0, "5 6\n"))
        self.assertEqual(self.run_cli(*t, "health", "--ready")[:2], (0, "SERVING\n"))
        code, _, err = self.run_cli(*t, "stream", "--prompt", "x", "--temperature", "-1")
        self.assertEqual(code, 1)
        self.assertIn("INVALID_ARGUMENT: sampling.temperature", err)
        code, _, err = self.run_cli(*t, "health", "--service", "nope")
        self.assertEqual(code, 1)
        self.assertIn("NOT_FOUND", err)

    def test_cli_bad_flags_exit_2(self):
        for argv in (["stream"], ["stream", "--prompt", "x", "--max-tokens", "-1"],
                     ["generate", "--prompt", "x", "--temperature", "hot"],
                     ["generate", "--prompt", "x", "--token-ids", "1 2"],
                     ["generate", "--token-ids", "1 x"], ["bogus"], [],
                     ["stream", "--prompt", "x", "--bogus"], ["--timeout", "0", "health"]):
            with self.subTest(argv=argv):
                code, out, err = self.run_cli(*argv)
                self.assertEqual(code, 2)
                self.assertIn("usage:", err)


if __name__ == "__main__":
    unittest.main()
