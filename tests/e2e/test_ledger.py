"""The durable token ledger through the real server: every request whose final response
reached the client is in the ledger with the usage the client saw — after a normal finish,
after a cancel, and after the server is killed with SIGKILL right after answering. The ledger
is read back with Python's own sqlite3, independently of the server."""

import os
import sqlite3
import tempfile
import unittest

from e2e_support import PagodaServer, finish_name, grpc, poll_until


def ledger_rows(path):
    db = sqlite3.connect(path)
    try:
        return {r[0]: r for r in db.execute(
            "SELECT request_id, tenant, prompt_tokens, completion_tokens, cached_tokens, "
            "finish_reason, policy_outcome, model_id FROM requests")}
    finally:
        db.close()


class LedgerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pagoda-ledger-")
        self.path = os.path.join(self.dir, "ledger.db")

    def test_rows_survive_kill_9(self):
        server = PagodaServer("--ledger", self.path).start()
        try:
            client = server.client(timeout=60)
            answered = []
            for i in range(3):
                r = client.complete(token_ids=[1, 403 + i], max_tokens=4, temperature=0,
                                    ignore_eos=True)
                answered.append(r)
            server.kill()  # SIGKILL right after the last answer: no flush, no drain
        finally:
            server.cleanup()
        rows = ledger_rows(self.path)
        for r in answered:
            self.assertIn(r.request_id, rows, "an answered request is missing from the ledger")
            row = rows[r.request_id]
            self.assertEqual(row[1], "default")
            self.assertEqual(row[2], r.usage.prompt_tokens)
            self.assertEqual(row[3], r.usage.completion_tokens)
            self.assertEqual(row[4], r.usage.cached_tokens)
            self.assertEqual(row[5], "length")
            self.assertEqual(row[6], "allow")
            self.assertEqual(row[7], r.model_id)

    def test_cancelled_request_is_recorded_and_restart_appends(self):
        server = PagodaServer("--ledger", self.path).start()
        try:
            client = server.client(timeout=60)
            call = client.generate(token_ids=[1, 403], max_tokens=400, temperature=0,
                                   ignore_eos=True)
            first = next(iter(call))
            request_id = first.request_id
            call.cancel()
            poll_until(lambda: request_id in ledger_rows(self.path), 30,
                       "the cancelled request to reach the ledger")
            self.assertEqual(ledger_rows(self.path)[request_id][5], "cancelled")
            self.assertEqual(server.stop(), 0)
        finally:
            server.cleanup()
        # A restarted server appends to the same ledger.
        server = PagodaServer("--ledger", self.path).start()
        try:
            r = server.client(timeout=60).complete(token_ids=[1, 500], max_tokens=2,
                                                   temperature=0, ignore_eos=True)
            self.assertEqual(server.stop(), 0)
        finally:
            server.cleanup()
        # Request ids stay unique across restarts, so both rows are there.
        self.assertNotEqual(r.request_id, request_id)
        rows = ledger_rows(self.path)
        self.assertEqual(set(rows), {request_id, r.request_id})
