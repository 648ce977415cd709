"""The service around generation: health (liveness, readiness), server reflection, the
listening line, and the pagoda-client command."""

import os
import subprocess
import unittest

from e2e_support import READINESS_SERVICE, ROOT, ServerTestCase, grpc

CLIENT = os.path.join(ROOT, "clients", "python", "pagoda-client")


class ServiceTest(ServerTestCase):
    SERVER_ARGS = ()

    def test_listens_on_loopback_by_default(self):
        self.assertEqual(self.server.host, "127.0.0.1")
        self.assertGreater(self.server.port, 0)

    def test_health(self):
        self.assertEqual(self.client.health(""), "SERVING")
        self.assertEqual(self.client.health(READINESS_SERVICE), "SERVING")
        err = self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.client.health, "no.such.Service")
        self.assertIsNotNone(err.details())
        watch = self.client.watch_health(READINESS_SERVICE)
        self.assertEqual(next(watch), "SERVING")
        watch.cancel()

    def test_reflection_lists_services(self):
        services = self.client.list_services()
        for name in ("pagoda.v1.Generation", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(name, services)

    def test_reflection_describes_the_api(self):
        from google.protobuf import descriptor_pb2
        files = {}
        for blob in self.client.file_containing_symbol("pagoda.v1.Generation"):
            fd = descriptor_pb2.FileDescriptorProto.FromString(blob)
            files[fd.name] = fd
        fd = files["pagoda/v1/generation.proto"]
        self.assertEqual(fd.package, "pagoda.v1")
        (svc,) = [s for s in fd.service if s.name == "Generation"]
        self.assertEqual({m.name for m in svc.method},
                         {"Generate", "Complete", "Tokenize", "Detokenize", "GetModelInfo",
                          "GetServerInfo"})

    # --- the pagoda-client command ------------------------------------------------------------

    def cli(self, *args, target=True):
        argv = [CLIENT, *(["--target", self.server.target] if target else []), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def test_cli_stream_and_generate(self):
        flags = ("--prompt", "Once upon a time", "--max-tokens", "40", "--temperature", "0")
        s = self.cli("stream", *flags)
        self.assertEqual(s.returncode, 0, s.stderr)
        self.assertTrue(s.stdout.startswith(", there was a little girl named Lily"), s.stdout)
        self.assertIn("completion 40 tokens", s.stderr)
        g = self.cli("generate", *flags)
        self.assertEqual(g.returncode, 0, g.stderr)
        self.assertEqual(g.stdout, s.stdout)
        # --target after the command works too; --stop and --seed pass through.
        r = subprocess.run([CLIENT, "stream", "--target", self.server.target, *flags,
                            "--stop", "Lily", "--seed", "3", "-q"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, ", there was a little girl named \n", ""))

    def test_cli_tokenize_and_health(self):
        r = self.cli("tokenize", "--prompt", "Once upon a time")
        self.assertEqual((r.returncode, r.stdout), (0, "1 403 407 261 378\n"), r.stderr)
        r = self.cli("health")
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"), r.stderr)
        r = self.cli("health", "--ready")
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"), r.stderr)
        r = self.cli("info")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("stories260K", r.stdout)

    def test_cli_errors(self):
        r = self.cli("stream", "--prompt", "x", "--max-tokens", "ten")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--max-tokens", r.stderr)
        r = self.cli("generate", "--prompt", "x", "--bogus")
        self.assertEqual(r.returncode, 2)
        r = self.cli("stream", "--prompt", "x", "--temperature", "-1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        self.assertIn("temperature", r.stderr)
        r = self.cli("generate", "--prompt", "x", "--top-p", "1.5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("top_p", r.stderr)
        r = subprocess.run([CLIENT, "--target", "127.0.0.1:1", "--timeout", "5", "health"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr)


if __name__ == "__main__":
    unittest.main()
