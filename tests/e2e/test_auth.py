"""API keys, tenants and limits through the real server: missing or wrong keys are
UNAUTHENTICATED (never echoing the key), a tenant's limits answer RESOURCE_EXHAUSTED naming the
limit (with retry-after where waiting helps), usage lands in the ledger under the caller's
tenant, and the server refuses to listen beyond loopback without keys."""

import hashlib
import os
import sqlite3
import subprocess
import tempfile
import unittest

from e2e_support import PagodaServer, ServerTestCase, grpc, pagoda_binary

ACME_KEY = "pk-acme-e2e-secret"
ADMIN_KEY = "pk-ops-admin-e2e-secret"
GLOBEX_KEY = "pk-globex-e2e-secret"


def sha(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class AuthTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pagoda-auth-")
        keys = os.path.join(cls.dir, "keys.yaml")
        with open(keys, "w") as f:
            f.write(f"""
tenants:
  - name: acme
    limits: {{requests_per_second: 0.2, burst: 2, max_completion_tokens: 6}}
    keys:
      - {{id: acme-1, hash: "{sha(ACME_KEY)}"}}
  - name: globex
    keys:
      - {{id: globex-1, hash: "{sha(GLOBEX_KEY)}"}}
  - name: ops
    keys:
      - {{id: ops-admin, hash: "{sha(ADMIN_KEY)}", admin: true}}
""")
        cls.ledger = os.path.join(cls.dir, "ledger.db")
        cls.SERVER_ARGS = ("--keys-file", keys, "--ledger", cls.ledger)
        cls.CHECK_AFTER = False  # the after-test request carries no key
        super().setUpClass()

    @staticmethod
    def auth(key):
        return [("authorization", f"Bearer {key}")]

    def test_missing_and_wrong_keys_are_unauthenticated(self):
        self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, self.client.complete,
                            token_ids=[1, 403], max_tokens=2)
        err = self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, self.client.complete,
                                  token_ids=[1, 403], max_tokens=2,
                                  metadata=self.auth("pk-not-a-key-12345"))
        self.assertNotIn("pk-not-a-key-12345", err.details())
        self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, self.client.tokenize, "hi")

    def test_limits_and_tenant_accounting(self):
        # A per-request cap: not retryable.
        err = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.client.complete,
                                  token_ids=[1, 403], max_tokens=10, metadata=self.auth(ACME_KEY))
        self.assertIn("max_completion_tokens", err.details())
        # The rate: a burst of 2, then refused with a retry-after (one request per 5 s).
        done = []
        for _ in range(2):
            done.append(self.client.complete(token_ids=[1, 403], max_tokens=3, temperature=0,
                                              ignore_eos=True, metadata=self.auth(ACME_KEY)))
        err = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.client.complete,
                                  token_ids=[1, 403], max_tokens=3, metadata=self.auth(ACME_KEY))
        self.assertIn("requests_per_second", err.details())
        trailing = dict(err.trailing_metadata() or ())
        self.assertGreaterEqual(int(trailing.get("retry-after", "0")), 1)
        # Another tenant is unaffected.
        g = self.client.complete(token_ids=[1, 404], max_tokens=3, temperature=0,
                                 ignore_eos=True, metadata=self.auth(GLOBEX_KEY))
        db = sqlite3.connect(self.ledger)
        rows = dict(db.execute("SELECT request_id, tenant FROM requests"))
        db.close()
        for r in done:
            self.assertEqual(rows.get(r.request_id), "acme")
        self.assertEqual(rows.get(g.request_id), "globex")

        # The admin RPC: a tenant sees its own usage only; an admin key sees everyone's.
        from pagoda_client._stubs import pb, pb_grpc
        admin = pb_grpc.AdminStub(self.client.channel)
        own = admin.GetUsage(pb.GetUsageRequest(), metadata=self.auth(ACME_KEY), timeout=30)
        self.assertEqual({r.tenant for r in own.rows}, {"acme"})
        self.assertEqual(own.totals.requests, len(own.rows))
        self.assertEqual(own.totals.completion_tokens, sum(r.completion_tokens for r in own.rows))
        self.assertTrue({r.request_id for r in done} <= {r.request_id for r in own.rows})
        with self.assertRaises(grpc.RpcError) as cm:
            admin.GetUsage(pb.GetUsageRequest(tenant="globex"), metadata=self.auth(ACME_KEY),
                           timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        everyone = admin.GetUsage(pb.GetUsageRequest(), metadata=self.auth(ADMIN_KEY), timeout=30)
        self.assertTrue({"acme", "globex"} <= {r.tenant for r in everyone.rows})
        just_globex = admin.GetUsage(pb.GetUsageRequest(tenant="globex"),
                                     metadata=self.auth(ADMIN_KEY), timeout=30)
        self.assertEqual({r.request_id for r in just_globex.rows}, {g.request_id})


class ListenPolicyTest(unittest.TestCase):
    def test_refuses_non_loopback_without_keys(self):
        p = subprocess.run([pagoda_binary(), "serve", "--host", "0.0.0.0", "--port", "0"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--keys-file", p.stderr)
        self.assertIn("--insecure-no-auth", p.stderr)
