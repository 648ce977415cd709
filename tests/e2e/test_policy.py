"""The policy-filter stage through the real server: input deny and limits refuse with the
right status and reason, input redaction changes what the model sees, output deny ends the
stream with CONTENT_FILTER without ever sending the matched text (whatever the chunking), a
stop rule ends it normally, and SIGHUP reloads the file — keeping the old policies when the
new file is invalid."""

import os
import signal
import tempfile

from e2e_support import PagodaServer, ServerTestCase, finish_name, grpc, poll_until

POLICY = """
default: standard
policies:
  standard:
    input:
      - prompt_length: {max_chars: 300}
      - deny: {name: dragons, case_insensitive: true, patterns: ["dragon"]}
      - redact: {kinds: [email]}
    output:
      - deny: {name: no_lily, patterns: ["Lily"], max_len: 8}
"""

RELOADED = """
default: standard
policies:
  standard:
    input:
      - deny: {name: no_time, patterns: ["time"]}
"""


class PolicyTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pagoda-policy-")
        cls.path = os.path.join(cls.dir, "policy.yaml")
        with open(cls.path, "w") as f:
            f.write(POLICY)
        cls.ledger = os.path.join(cls.dir, "ledger.db")
        cls.SERVER_ARGS = ("--policy-file", cls.path, "--ledger", cls.ledger)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        cls.CHECK_AFTER = False  # the reloaded policy denies the usual after-test prompt
        super().tearDownClass()

    def test_1_input_deny_is_permission_denied(self):
        err = self.assertRpcError(grpc.StatusCode.PERMISSION_DENIED, self.client.complete,
                                  "The Dragon came to town", max_tokens=4)
        self.assertIn("deny_pattern", err.details())
        self.assertIn("dragons", err.details())
        # The decision is in the ledger too.
        import sqlite3
        db = sqlite3.connect(self.ledger)
        blocked = db.execute("SELECT count(*) FROM requests WHERE policy_outcome = "
                             "'block:deny_pattern' AND finish_reason = 'content_filter'").fetchone()[0]
        db.close()
        self.assertGreaterEqual(blocked, 1)

    def test_1_input_length_limit_is_failed_precondition(self):
        err = self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.client.complete,
                                  "a " * 200, max_tokens=4)
        self.assertIn("prompt_too_long", err.details())

    def test_1_input_redaction_changes_the_prompt(self):
        r = self.client.complete("Once upon a time mail bob@example.com", max_tokens=2,
                                 temperature=0)
        redacted = self.client.tokenize("Once upon a time mail [EMAIL]")
        self.assertEqual(r.usage.prompt_tokens, len(redacted.token_ids))

    def test_1_output_deny_never_sends_the_match(self):
        chunks = list(self.client.generate("Once upon a time", max_tokens=40, temperature=0))
        text = "".join(c.text for c in chunks)
        self.assertEqual(finish_name(chunks[-1].finish_reason), "FINISH_REASON_CONTENT_FILTER")
        import sqlite3
        db = sqlite3.connect(self.ledger)
        row = db.execute("SELECT finish_reason, policy_outcome FROM requests WHERE request_id = ?",
                         (chunks[-1].request_id,)).fetchone()
        db.close()
        self.assertEqual(row, ("content_filter", "block:deny_pattern"))
        self.assertNotIn("Lily", text)
        # What was sent is the start of the story the model tells without the policy.
        self.assertTrue(", there was a little girl named".startswith(text.strip())
                        or text.strip().startswith(", there was"), repr(text))
        for c in chunks:
            self.assertEqual(len(c.token_ids), 0)  # ids would reveal the held-back text

    def test_2_sighup_reloads_and_keeps_old_policies_on_error(self):
        with open(self.path, "w") as f:
            f.write(RELOADED)
        self.server.signal(signal.SIGHUP)

        def denied():
            try:
                self.client.complete("Once upon a time", max_tokens=1)
                return False
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.PERMISSION_DENIED and "no_time" in e.details()

        poll_until(denied, 30, "the reloaded policy to deny 'time'")
        with open(self.path, "w") as f:
            f.write("default: missing_policy\npolicies: {}\n")
        self.server.signal(signal.SIGHUP)
        poll_until(lambda: "kept the old policies" in self.server.stderr_text(), 30,
                   "the server to reject the invalid policy file")
        self.assertTrue(denied(), "the old (reloaded) policy must stay in force")
        # Still serving normal requests the policy allows.
        r = self.client.complete("Lily went out", max_tokens=3, temperature=0)
        self.assertEqual(r.usage.completion_tokens, 3)
