"""pagoda_client: a small Python client for pagoda's gRPC API (pagoda.v1.Generation).

    from pagoda_client import Client
    with Client("127.0.0.1:50051") as c:
        for chunk in c.generate("Once upon a time", max_tokens=64, temperature=0):
            print(chunk.text, end="", flush=True)

The messages are the generated protobuf classes, reachable as pagoda_client.pb (e.g.
pb.FinishReason.Name(r.finish_reason)). Errors are grpc.RpcError with the server's code and
message.
"""

from ._stubs import pb, pb_grpc
from .client import READINESS_SERVICE, Client, build_request

__version__ = "0.1.0"
__all__ = ["Client", "build_request", "pb", "pb_grpc", "READINESS_SERVICE", "__version__"]
