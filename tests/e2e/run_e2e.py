#!/usr/bin/env python3
"""Runs pagoda's end-to-end tests: the Python client against `pagoda serve` over loopback.

    /usr/bin/python3 tests/e2e/run_e2e.py --pagoda build/cli/pagoda [-v] [-k PATTERN] [MODULE...]

MODULE: test module names (e.g. test_errors); default every tests/e2e/test_*.py. -k selects tests
whose name contains PATTERN (unittest's -k). Each module starts and stops its own server.
Needs Debian's python3-grpcio and python3-protobuf (so use /usr/bin/python3), and protoc with
grpc_python_plugin to generate the client's stubs (done here, first). Exit code 0 when all pass.
"""

import argparse
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--pagoda", required=True, help="the pagoda binary")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose name contains this (repeatable)")
    ap.add_argument("modules", nargs="*", help="test modules, e.g. test_errors")
    args = ap.parse_args()

    pagoda = os.path.abspath(args.pagoda)
    if not os.access(pagoda, os.X_OK):
        ap.error(f"--pagoda {args.pagoda}: not an executable")
    os.environ["PAGODA_BIN"] = pagoda
    try:
        import grpc  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError as e:
        print(f"run_e2e: {e}: install python3-grpcio and python3-protobuf and run this with "
              f"/usr/bin/python3 (now {sys.executable})", file=sys.stderr)
        return 1
    subprocess.run([os.path.join(ROOT, "clients", "python", "generate_stubs.sh")], check=True)
    sys.path.insert(0, HERE)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [f"*{p}*" for p in args.patterns]
    if args.modules:
        suite = unittest.TestSuite(
            loader.loadTestsFromName(m[:-3] if m.endswith(".py") else m) for m in args.modules)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1,
                                     stream=sys.stdout).run(suite)
    print(f"run_e2e: {result.testsRun} tests in {time.monotonic() - t0:.1f} s, "
          f"{len(result.failures)} failed, {len(result.errors)} errors, "
          f"{len(result.skipped)} skipped", flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
