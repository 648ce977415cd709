"""pagoda_client.Client: a thin layer over the generated pagoda.v1 stubs.

Every method returns the generated protobuf messages unchanged (see
server/proto/pagoda/v1/generation.proto) and lets grpc.RpcError through unchanged, so callers
see the server's status code (`err.code()`) and message (`err.details()`).
"""

import grpc

from ._stubs import health_pb2, health_pb2_grpc, pb, pb_grpc, reflection_pb2, reflection_pb2_grpc

# The service whose health status is readiness; "" is liveness.
READINESS_SERVICE = "pagoda.v1.Generation"

_UNSET = object()


def _text_value(message_class, field, text):
    """`text` as the field wants it: a str for a `string` field, UTF-8 bytes if the .proto
    declares it `bytes` (wire-compatible; lets a server validate UTF-8 itself)."""
    fd = message_class.DESCRIPTOR.fields_by_name[field]
    if fd.type == fd.TYPE_BYTES and isinstance(text, str):
        return text.encode("utf-8")
    return text

# generate()/complete() keyword arguments, by the message they land in.
_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                    "presence_penalty", "frequency_penalty", "seed")
_STOP_SCALARS = ("max_tokens", "ignore_eos")
_STOP_LISTS = ("stop", "stop_token_ids")
_TOP_FIELDS = ("model", "add_bos", "return_token_ids", "logprobs", "priority", "cache_salt")


def build_request(prompt=None, *, token_ids=None, **params):
    """Builds a pagoda.v1.GenerateRequest.

    prompt: text input (str). token_ids: token id input (a list of ints); give exactly one of
    the two, or neither to send a request without input (the server rejects it).
    params: model, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
    frequency_penalty, seed, max_tokens, stop (a str or a list of str), stop_token_ids,
    ignore_eos, add_bos, return_token_ids, logprobs, priority, cache_salt. A parameter left out
    (or None) is unset, so the server's default applies.
    """
    if prompt is not None and token_ids is not None:
        raise ValueError("give prompt or token_ids, not both")
    req = pb.GenerateRequest()
    if prompt is not None:
        req.text = _text_value(pb.GenerateRequest, "text", prompt)
    elif token_ids is not None:
        req.token_ids.SetInParent()  # an empty list is still "token_ids input"
        req.token_ids.ids.extend(token_ids)
    for key, value in params.items():
        if value is None:
            continue
        if key in _SAMPLING_FIELDS:
            setattr(req.sampling, key, value)
        elif key in _STOP_SCALARS:
            setattr(req.stop, key, value)
        elif key in _STOP_LISTS:
            if isinstance(value, str):
                value = [value]
            getattr(req.stop, key).extend(value)
        elif key in _TOP_FIELDS:
            setattr(req, key, value)
        else:
            raise TypeError(f"unknown generation parameter {key!r}")
    return req


class Client:
    """A connection to a pagoda server.

    target: "host:port" (e.g. "127.0.0.1:50051"). timeout: the default deadline in seconds of
    every call (None: no deadline); each method takes timeout= to override it.
    Use as a context manager, or call close().
    """

    def __init__(self, target="127.0.0.1:50051", timeout=None, *, channel=None, options=None):
        self.target = target
        self.timeout = timeout
        self._own_channel = channel is None
        self.channel = channel if channel is not None else grpc.insecure_channel(
            target, options=options or [])
        self.stub = pb_grpc.GenerationStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.reflection_stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)

    def close(self):
        if self._own_channel:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _timeout(self, timeout):
        return self.timeout if timeout is _UNSET else timeout

    # --- generation --------------------------------------------------------------------------

    def generate(self, prompt=None, *, token_ids=None, timeout=_UNSET, metadata=None,
                 request=None, **params):
        """Streams a completion: returns the gRPC call, an iterator of GenerateResponse chunks
        (text deltas; the last one has finish_reason, timings and the model id). The call can
        be cancelled with .cancel(). Errors surface as grpc.RpcError while iterating.
        Parameters as build_request(); or pass a ready GenerateRequest as request=."""
        if request is None:
            request = build_request(prompt, token_ids=token_ids, **params)
        return self.stub.Generate(request, timeout=self._timeout(timeout), metadata=metadata)

    def complete(self, prompt=None, *, token_ids=None, timeout=_UNSET, metadata=None,
                 request=None, **params):
        """The whole completion in one GenerateResponse (unary Complete)."""
        if request is None:
            request = build_request(prompt, token_ids=token_ids, **params)
        return self.stub.Complete(request, timeout=self._timeout(timeout), metadata=metadata)

    # --- tokens ------------------------------------------------------------------------------

    def tokenize(self, text, *, add_bos=None, model="", timeout=_UNSET):
        """TokenizeResponse: token_ids and pieces."""
        req = pb.TokenizeRequest(model=model, text=_text_value(pb.TokenizeRequest, "text", text))
        if add_bos is not None:
            req.add_bos = add_bos
        return self.stub.Tokenize(req, timeout=self._timeout(timeout))

    def detokenize(self, token_ids, *, model="", timeout=_UNSET):
        """The text of token_ids (a str)."""
        req = pb.DetokenizeRequest(model=model, token_ids=list(token_ids))
        return self.stub.Detokenize(req, timeout=self._timeout(timeout)).text

    # --- information -------------------------------------------------------------------------

    def model_info(self, *, timeout=_UNSET):
        """ModelInfo: id, revision, context_length, vocab_size, dtype, architecture, backend,
        max_logprobs."""
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self._timeout(timeout))

    def server_info(self, *, timeout=_UNSET):
        """ServerInfo: running, waiting, KV usage, uptime, version, draining, ..."""
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=self._timeout(timeout))

    # --- health and reflection ---------------------------------------------------------------

    def health(self, service="", *, timeout=_UNSET):
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN".
        service "" is liveness, READINESS_SERVICE ("pagoda.v1.Generation") is readiness. A
        service the server does not know is grpc.RpcError NOT_FOUND."""
        resp = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service),
                                      timeout=self._timeout(timeout))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def watch_health(self, service="", *, timeout=_UNSET):
        """grpc.health.v1 Watch: a cancellable iterator of status names, the current one first
        and then one per change."""
        call = self.health_stub.Watch(health_pb2.HealthCheckRequest(service=service),
                                      timeout=self._timeout(timeout))
        return _StatusNames(call)

    def list_services(self, *, timeout=_UNSET):
        """The fully qualified names of the services the server offers, through server
        reflection (grpc.reflection.v1alpha)."""
        req = reflection_pb2.ServerReflectionRequest(list_services="*")
        for resp in self.reflection_stub.ServerReflectionInfo(iter([req]),
                                                              timeout=self._timeout(timeout)):
            if resp.HasField("error_response"):
                raise RuntimeError("reflection: " + resp.error_response.error_message)
            return sorted(s.name for s in resp.list_services_response.service)
        raise RuntimeError("reflection: the server sent no answer")

    def file_containing_symbol(self, symbol, *, timeout=_UNSET):
        """Serialized FileDescriptorProtos (bytes) of the file defining `symbol` and its
        dependencies, through server reflection."""
        req = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        for resp in self.reflection_stub.ServerReflectionInfo(iter([req]),
                                                              timeout=self._timeout(timeout)):
            if resp.HasField("error_response"):
                raise RuntimeError("reflection: " + resp.error_response.error_message)
            return list(resp.file_descriptor_response.file_descriptor_proto)
        raise RuntimeError("reflection: the server sent no answer")


class _StatusNames:
    def __init__(self, call):
        self._call = call

    def __iter__(self):
        return self

    def __next__(self):
        return health_pb2.HealthCheckResponse.ServingStatus.Name(next(self._call).status)

    def cancel(self):
        self._call.cancel()
