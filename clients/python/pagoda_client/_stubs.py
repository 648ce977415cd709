"""The generated stubs (pagoda_client/_gen/, made by clients/python/generate_stubs.sh).

In a source checkout, missing or stale stubs are (re)generated on first import, so a fresh clone
works without a separate step.
"""

import os
import subprocess

_here = os.path.dirname(os.path.abspath(__file__))
_script = os.path.join(os.path.dirname(_here), "generate_stubs.sh")
if os.path.exists(_script):
    # A failure (e.g. a read-only checkout) is fine while the stubs are there; else see below.
    subprocess.run([_script, "--if-needed"], check=False)

try:
    from ._gen.pagoda.v1 import generation_pb2 as pb
    from ._gen.pagoda.v1 import generation_pb2_grpc as pb_grpc
    from ._gen.grpc_health.v1 import health_pb2, health_pb2_grpc
    from ._gen.grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
except ImportError as e:  # pragma: no cover - only without generated stubs
    raise ImportError(
        f"pagoda_client: the generated gRPC stubs are missing ({e}); run "
        "clients/python/generate_stubs.sh (needs protobuf-compiler and protobuf-compiler-grpc)"
    ) from e

__all__ = ["pb", "pb_grpc", "health_pb2", "health_pb2_grpc", "reflection_pb2",
           "reflection_pb2_grpc"]
