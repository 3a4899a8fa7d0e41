"""``python -m killswitch.enforcer serve --ext-authz``: the Envoy ext_authz service.

  --source ssm:us-east-1[:/killswitch/models]   the SSM parameters of one region
  --source dir:/etc/killswitch/models            a mounted ConfigMap (one file per model)

Needs uvicorn (``pip install 'killswitch[enforcer]'``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from killswitch.enforcer.cache import Enforcer
from killswitch.enforcer.sources import DirectorySource, Source
from killswitch.enforcer.ssm import DEFAULT_PREFIX, SsmSource


def source_from(spec: str, endpoint_url: str | None = None) -> Source:
    kind, _, rest = spec.partition(":")
    if kind == "ssm" and rest:
        region, _, prefix = rest.partition(":")
        return SsmSource(region, prefix or DEFAULT_PREFIX, endpoint_url=endpoint_url)
    if kind in ("dir", "file") and rest:
        return DirectorySource(rest)
    raise argparse.ArgumentTypeError(f"--source {spec!r}: use ssm:REGION[:PREFIX] or dir:PATH")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m killswitch.enforcer")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the Envoy ext_authz HTTP service")
    serve.add_argument("--ext-authz", action="store_true", required=True)
    serve.add_argument("--source", required=True)
    serve.add_argument("--endpoint-url", help="SSM endpoint (tests, VPC endpoints)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9191)
    serve.add_argument("--ttl", type=float, default=5.0)
    serve.add_argument("--grace", type=float, default=30.0)
    serve.add_argument("--path-prefix", default="")
    serve.add_argument("--audience-header", default="x-killswitch-audience")
    serve.add_argument("--trusted-peer", action="append", dest="trusted_peers")
    serve.add_argument("--require-model", action="store_true", help="refuse paths naming none")
    args = parser.parse_args(argv)
    try:
        source = source_from(args.source, args.endpoint_url)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        import uvicorn
    except ImportError:
        print("serve needs uvicorn: pip install 'killswitch[enforcer]'", file=sys.stderr)
        return 64
    from killswitch.enforcer.asgi import ExtAuthzService

    app = ExtAuthzService(
        Enforcer(source, ttl=args.ttl, grace=args.grace),
        audience_header=args.audience_header,
        path_prefix=args.path_prefix,
        trusted_peers=args.trusted_peers,
        require_model=args.require_model,
    )
    # proxy_headers off: the client address --trusted-peer checks is the TCP peer itself,
    # never one a caller wrote into X-Forwarded-For.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
