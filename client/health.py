"""``vfq-health``: is the server live, ready, and is ``vertebra_pipeline`` ready? (a probe's command).

Triton's own ``/v2/health/ready`` can stay 200 while a python-backend step has crashed; this check asks
for the model itself over gRPC (Kubernetes' exec probes run it in the server's pod):

    vfq-health --url 127.0.0.1:8001 --model vertebra_pipeline --timeout 3

Exit code 0 when everything is ready, 1 otherwise, with one line saying what is not. With gRPC TLS
(``--ssl``; ``--root-certificates``, and for mutual TLS ``--private-key`` and ``--certificate-chain``,
PEM files; ``--ssl-target-name`` when the certificate names the service, not the loopback address).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import tritonclient.grpc as grpcclient

from vfq.client.connection import DEFAULT_URL
from vfq.client.tls import GrpcTls, add_tls_arguments, tls_from_arguments
from vfq.tensors import PIPELINE_MODEL


def check(url: str, model: str, timeout_s: float, tls: GrpcTls | None = None) -> str | None:
    """What is not ready at ``url`` (``None`` when the server and ``model`` are), over TLS if ``tls``."""
    options = {"channel_args": tls.channel_args(), **tls.client_options()} if tls else {}
    try:
        with grpcclient.InferenceServerClient(url, **options) as client:
            if not client.is_server_live(client_timeout=timeout_s):
                return f"server at {url} is not live"
            if not client.is_server_ready(client_timeout=timeout_s):
                return f"server at {url} is not ready"
            if not client.is_model_ready(model, client_timeout=timeout_s):
                return f"model {model} at {url} is not ready"
    except Exception as error:  # unreachable, timeout: all mean "not ready" to a probe
        return f"server at {url} does not answer: {type(error).__name__}: {error}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfq-health", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gRPC host:port (default {DEFAULT_URL})")
    parser.add_argument("--model", default=PIPELINE_MODEL)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per call (default 3)")
    add_tls_arguments(parser)
    args = parser.parse_args(argv)
    try:
        tls = tls_from_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    problem = check(args.url, args.model, args.timeout, tls)
    if problem:
        print(f"vfq-health: {problem}", file=sys.stderr)
        return 1
    print(f"vfq-health: {args.model} ready at {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
