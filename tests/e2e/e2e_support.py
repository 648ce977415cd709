"""Shared pieces of the end-to-end tests: a pagoda server in a child process, and helpers.

Each test module starts its own `pagoda serve --port 0` with the flags it needs (ServerTestCase),
reads the port from the line `pagoda serve: listening on HOST:PORT`, waits for readiness through
the health service, and at the end stops it with SIGTERM and checks that it exits 0.

Nothing here sleeps as an assertion: waits are bounded polls (poll_until) with generous
deadlines; they return as soon as the condition holds.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

from pagoda_client import READINESS_SERVICE, Client, build_request, pb  # noqa: E402

REFERENCE = os.path.join(ROOT, "tests", "data", "stories260K_greedy.json")
LISTENING = re.compile(r"^pagoda serve: listening on (\S+):(\d+)\s*$")

START_TIMEOUT_S = float(os.environ.get("PAGODA_E2E_START_TIMEOUT", "60"))
STOP_TIMEOUT_S = float(os.environ.get("PAGODA_E2E_STOP_TIMEOUT", "60"))


def pagoda_binary():
    path = os.environ.get("PAGODA_BIN")
    if not path:
        for cand in ("build/cli/pagoda", "build-py/cli/pagoda"):
            if os.access(os.path.join(ROOT, cand), os.X_OK):
                path = os.path.join(ROOT, cand)
                break
    if not path or not os.access(path, os.X_OK):
        raise unittest.SkipTest("no pagoda binary: pass --pagoda to run_e2e.py or set PAGODA_BIN")
    return path


def poll_until(predicate, timeout, what, interval=0.01):
    """Calls predicate() until it returns a truthy value (returned) or `timeout` seconds pass
    (AssertionError naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


class PagodaServer:
    """`pagoda serve --port 0 ARGS...` in a child process."""

    def __init__(self, *args, binary=None):
        self.binary = binary or pagoda_binary()
        self.args = [str(a) for a in args]
        self.proc = None
        self.host = self.port = None
        self.stdout_lines = []
        self._log = tempfile.NamedTemporaryFile(prefix="pagoda-e2e-", suffix=".log", delete=False)
        self._listening = threading.Event()

    @property
    def target(self):
        return f"{self.host}:{self.port}"

    def command(self):
        return [self.binary, "serve", "--port", "0", *self.args]

    def start(self, ready=True):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                     stderr=self._log, stdin=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise AssertionError(f"pagoda serve exited with {self.proc.returncode} before "
                                     f"listening: {self.describe()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"pagoda serve printed no listening line within "
                                     f"{START_TIMEOUT_S:g} s: {self.describe()}")
        if ready:
            self.wait_ready()
        return self

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            m = LISTENING.match(line)
            if m and not self._listening.is_set():
                self.host, self.port = m.group(1), int(m.group(2))
                self._listening.set()

    def client(self, timeout=None):
        return Client(self.target, timeout=timeout)

    def wait_ready(self, timeout=START_TIMEOUT_S):
        with self.client() as c:
            def ready():
                if self.proc.poll() is not None:
                    raise AssertionError(f"pagoda serve exited with {self.proc.returncode} "
                                         f"while starting: {self.describe()}")
                try:
                    return c.health(READINESS_SERVICE, timeout=5) == "SERVING"
                except grpc.RpcError:
                    return False
            poll_until(ready, timeout, "readiness SERVING")

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then waits; returns the exit code (kills it after `timeout`)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout=STOP_TIMEOUT_S):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pagoda serve did not exit within {timeout:g} s of SIGTERM: "
                                 f"{self.describe()}") from None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr_text(self):
        self._log.flush()
        try:
            with open(self._log.name, errors="replace") as f:
                return f.read()
        except OSError as e:
            return f"(the server's log is gone: {e})"

    def describe(self, tail=3000):
        err = self.stderr_text()
        return (f"\n  command: {' '.join(self.command())}\n  stdout: {''.join(self.stdout_lines)[-tail:]!r}"
                f"\n  stderr (last {tail} chars):\n{err[-tail:]}")

    def cleanup(self):
        self.kill()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


class ServerTestCase(unittest.TestCase):
    """Starts one server per test class (SERVER_ARGS), stops it at the end with SIGTERM and
    checks exit code 0 (plus that it still serves a normal request, unless CHECK_AFTER is
    False)."""

    SERVER_ARGS = ()
    CHECK_AFTER = True

    @classmethod
    def setUpClass(cls):
        cls.server = PagodaServer(*cls.SERVER_ARGS)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise
        cls.client = cls.server.client(timeout=120)
        cls.model = cls.client.model_info()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.CHECK_AFTER:
                # The server survived the tests' abuse: it still answers a normal request.
                r = cls.client.complete("Once upon a time", max_tokens=8, temperature=0, timeout=60)
                if r.usage.completion_tokens != 8:
                    raise AssertionError(f"after the tests a normal request got {r}")
            cls.client.close()
            code = cls.server.stop()
            if code != 0:
                raise AssertionError(f"pagoda serve exited with {code} after SIGTERM, expected 0:"
                                     f"{cls.server.describe()}")
        finally:
            cls.server.cleanup()

    # --- helpers ------------------------------------------------------------------------------

    def stream(self, *args, client=None, **kw):
        """Runs a Generate stream to the end: (text, token_ids, chunks)."""
        chunks = list((client or self.client).generate(*args, **kw))
        return "".join(c.text for c in chunks), [i for c in chunks for i in c.token_ids], chunks

    def assertIdle(self, timeout=30, what="the engine to be idle"):
        """Polls GetServerInfo until nothing runs or waits and no KV block is in use."""
        def idle():
            s = self.client.server_info(timeout=10)
            return s if (s.running == 0 and s.waiting == 0 and s.kv_blocks_in_use == 0) else None
        try:
            return poll_until(idle, timeout, what)
        except AssertionError:
            s = self.client.server_info(timeout=10)
            raise AssertionError(f"{what}: after {timeout} s GetServerInfo still says running "
                                 f"{s.running}, waiting {s.waiting}, kv_blocks_in_use "
                                 f"{s.kv_blocks_in_use} (kv_cache_usage {s.kv_cache_usage})") from None

    def assertRpcError(self, code, fn, *args, **kw):
        """Calls fn (draining it when it returns an iterator) and expects grpc.RpcError `code`;
        returns the error."""
        with self.assertRaises(grpc.RpcError) as cm:
            r = fn(*args, **kw)
            if hasattr(r, "__next__"):
                for _ in r:
                    pass
        err = cm.exception
        self.assertEqual(err.code(), code, f"expected {code.name}, got {err.code().name}: "
                                           f"{err.details()!r}")
        return err


def finish_name(reason):
    return pb.FinishReason.Name(reason)


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def raw_string_field(number, data):
    """A length-delimited protobuf field `number` holding `data` (bytes) exactly: how a request
    with invalid UTF-8 in a `string` field is sent, since the protobuf API refuses to build one.
    Protobuf parsers accept fields in any order, so this is prepended to the serialization of
    the rest of the message."""
    return encode_varint((number << 3) | 2) + encode_varint(len(data)) + data


def raw_unary(client, method, response_class):
    """A unary call on `client`'s channel that sends already-serialized bytes."""
    return client.channel.unary_unary(method, request_serializer=None,
                                      response_deserializer=response_class.FromString)


def run_together(fn, keys, timeout=300):
    """fn(key) for every key at once, one thread each, released together by a barrier.
    Returns {key: result} and [(key, error code or type, details)]; fails the caller (an
    AssertionError) when a thread is still running after `timeout` seconds."""
    results, errors = {}, []
    barrier = threading.Barrier(len(keys))

    def one(key):
        try:
            barrier.wait(timeout=60)
            results[key] = fn(key)
        except grpc.RpcError as e:
            errors.append((key, e.code(), e.details()))
        except Exception as e:  # noqa: BLE001 - reported to the caller
            errors.append((key, type(e).__name__, str(e)))

    threads = [threading.Thread(target=one, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"streams still running after {timeout} s")
    return results, errors


__all__ = ["Client", "PagodaServer", "ServerTestCase", "READINESS_SERVICE", "REFERENCE", "ROOT",
           "build_request", "finish_name", "pb", "poll_until", "raw_string_field", "raw_unary",
           "run_together", "grpc"]
