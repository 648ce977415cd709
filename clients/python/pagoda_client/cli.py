"""pagoda-client: the command line over pagoda_client.Client.

    pagoda-client [--target HOST:PORT] [--timeout S] COMMAND [flags]

    generate   one unary Complete call; prints the whole text
    stream     a streaming Generate call; prints the text as it arrives
    tokenize   prints the token ids (and, with --pieces, the pieces) of a text
    health     prints the health status (liveness, or readiness with --ready)
    info       prints the model and server information

Exit codes: 0 success; 2 bad flags (argparse); 1 a server error (its code and message go to
stderr) or, for health, a status other than SERVING; 130 interrupted.
"""

import argparse
import sys

import grpc

from . import __version__
from .client import READINESS_SERVICE, Client


def _nonneg_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _token_ids(text):
    try:
        return [_nonneg_int(t) for t in text.replace(",", " ").split()]
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"token ids: {e}") from None


def _build_parser():
    # Connection flags work before or after the command; SUPPRESS keeps a subcommand's unset
    # flag from overwriting one given before the command.
    def connection(p, top):
        d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
        p.add_argument("--target", default=d("127.0.0.1:50051"),
                       help="server address HOST:PORT (default 127.0.0.1:50051)")
        p.add_argument("--timeout", type=_positive_float, default=d(None),
                       help="deadline of the call in seconds (default none)")

    parser = argparse.ArgumentParser(
        prog="pagoda-client", description="Talk to a pagoda server over gRPC.")
    parser.add_argument("--version", action="version", version=f"pagoda-client {__version__}")
    connection(parser, True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def generation(p):
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--prompt", help="the text to continue")
        src.add_argument("--token-ids", type=_token_ids, metavar="IDS",
                         help="the prompt as token ids, e.g. '1 403 407' (no BOS is added)")
        p.add_argument("--max-tokens", type=_nonneg_int, help="tokens to generate at most")
        p.add_argument("--temperature", type=float, help="0 is greedy (server default 1.0)")
        p.add_argument("--top-p", type=float, help="nucleus sampling in (0, 1]")
        p.add_argument("--top-k", type=int, help="keep the k most likely tokens (0: off)")
        p.add_argument("--min-p", type=float, help="min-p truncation in [0, 1]")
        p.add_argument("--repetition-penalty", type=float, help="> 0; 1 is off")
        p.add_argument("--seed", type=_nonneg_int, help="same seed, same text")
        p.add_argument("--stop", action="append", metavar="TEXT",
                       help="stop before this text (repeatable)")
        p.add_argument("--ignore-eos", action="store_true", help="keep going past end-of-sequence")
        p.add_argument("--no-bos", action="store_true", help="do not prepend BOS to the prompt")
        p.add_argument("--model", default="", help="must equal the served model's id when given")
        p.add_argument("--echo", action="store_true", help="print the prompt before the completion")
        p.add_argument("--show-ids", action="store_true", help="print the generated token ids")
        p.add_argument("--quiet", "-q", action="store_true",
                       help="no usage/timing summary on stderr")
        connection(p, False)

    p = sub.add_parser("generate", help="one unary call; prints the whole completion")
    generation(p)
    p = sub.add_parser("stream", help="streams the completion as it is generated")
    generation(p)

    p = sub.add_parser("tokenize", help="prints the token ids of a text")
    p.add_argument("--prompt", "--text", dest="prompt", required=True, help="the text")
    p.add_argument("--no-bos", action="store_true", help="do not prepend BOS")
    p.add_argument("--pieces", action="store_true", help="print one 'id piece' per line")
    p.add_argument("--model", default="")
    connection(p, False)

    p = sub.add_parser("health", help="prints liveness (or readiness) of the server")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ready", action="store_true",
                   help=f"check readiness (service {READINESS_SERVICE!r})")
    g.add_argument("--service", help="check this service name ('' is liveness)")
    connection(p, False)

    p = sub.add_parser("info", help="prints model and server information")
    connection(p, False)
    return parser


def _params(args):
    params = dict(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        seed=args.seed, stop=args.stop, model=args.model,
        return_token_ids=args.show_ids)
    if args.ignore_eos:
        params["ignore_eos"] = True
    if args.no_bos:
        params["add_bos"] = False
    if args.token_ids is not None:
        params["token_ids"] = args.token_ids
    return params


def _summary(final, out):
    from ._stubs import pb
    u, t = final.usage, final.timings
    reason = pb.FinishReason.Name(final.finish_reason).replace("FINISH_REASON_", "").lower()
    tps = u.completion_tokens / t.decode_seconds if t.decode_seconds > 0 else 0.0
    print(f"[{reason}] prompt {u.prompt_tokens} tokens ({u.cached_tokens} cached), "
          f"completion {u.completion_tokens} tokens; first token {t.first_token_seconds * 1e3:.1f} ms, "
          f"total {t.total_seconds * 1e3:.1f} ms, {tps:.0f} tokens/s; "
          f"request {final.request_id}, model {final.model_id}", file=out)


def _run(args, client):
    if args.command in ("generate", "stream"):
        params = _params(args)
        prompt = params.pop("token_ids", None)
        kw = {"token_ids": prompt} if prompt is not None else {}
        text_in = args.prompt
        if args.echo and text_in is not None:
            sys.stdout.write(text_in)
            sys.stdout.flush()
        if args.command == "generate":
            final = client.complete(text_in, **kw, **params)
            sys.stdout.write(final.text + "\n")
            ids = list(final.token_ids)
        else:
            call = client.generate(text_in, **kw, **params)
            final, ids = None, []
            try:
                for chunk in call:
                    if chunk.text:
                        sys.stdout.write(chunk.text)
                        sys.stdout.flush()
                    ids.extend(chunk.token_ids)
                    final = chunk
            except KeyboardInterrupt:
                call.cancel()
                raise
            sys.stdout.write("\n")
        if args.show_ids:
            print("token ids: " + " ".join(map(str, ids)))
        sys.stdout.flush()
        if final is not None and not args.quiet:
            _summary(final, sys.stderr)
        return 0
    if args.command == "tokenize":
        resp = client.tokenize(args.prompt, add_bos=False if args.no_bos else None,
                               model=args.model)
        if args.pieces:
            for i, piece in zip(resp.token_ids, resp.pieces):
                print(f"{i}\t{piece!r}")
        else:
            print(" ".join(map(str, resp.token_ids)))
        return 0
    if args.command == "health":
        service = READINESS_SERVICE if args.ready else (args.service or "")
        status = client.health(service)
        print(status)
        return 0 if status == "SERVING" else 1
    if args.command == "info":
        m, s = client.model_info(), client.server_info()
        print(f"model {m.id} ({m.architecture}, {m.dtype}, vocab {m.vocab_size}, "
              f"context {m.context_length}) revision {m.revision}")
        print(f"backend {m.backend}")
        print(f"server {s.version}: up {s.uptime_seconds:.0f} s, running {s.running}, "
              f"waiting {s.waiting}, KV blocks {s.kv_blocks_in_use}/{s.num_kv_blocks}"
              f"{', draining' if s.draining else ''}")
        return 0
    raise AssertionError(args.command)


def main(argv=None):
    args = _build_parser().parse_args(argv)
    try:
        with Client(args.target, timeout=args.timeout) as client:
            return _run(args, client)
    except grpc.RpcError as e:
        sys.stdout.flush()
        print(f"pagoda-client: {e.code().name}: {e.details()} (target {args.target})",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pagoda-client: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
