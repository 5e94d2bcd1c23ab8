"""TLS of the gRPC channel to a server started with ``--grpc-use-ssl`` (the Helm chart's ``tls``):
one definition for the client library (:class:`vfq.client.VfqClient`), ``vfq analyze`` and
``vfq-health``.

    tls = GrpcTls(root_certificates="ca.crt", target_name="vfq.imaging.svc")
    with VfqClient("10.0.0.7:8001", tls=tls) as client: ...

On the command line: ``--ssl`` and the PEM files (``--root-certificates``; ``--private-key`` and
``--certificate-chain`` for a server that asks for the client's certificate) and
``--ssl-target-name`` when the certificate names the service rather than the address called.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GrpcTls", "add_tls_arguments", "tls_from_arguments"]

#: gRPC channel argument: the name to check the server's certificate against.
TARGET_NAME_ARG = "grpc.ssl_target_name_override"


@dataclass(frozen=True)
class GrpcTls:
    """TLS for the gRPC channel (PEM files).

    Attributes:
        root_certificates: the CA certificate(s) that signed the server's certificate; ``None``:
            gRPC's default roots.
        private_key, certificate_chain: the client's key and certificate, for a server that asks for
            one (mutual TLS): both or neither.
        target_name: the name the server's certificate carries when it is not the host called, e.g.
            ``<release>.<namespace>.svc`` from a port-forward to ``127.0.0.1``.

    Raises:
        ValueError: one of ``private_key`` and ``certificate_chain`` without the other, or a file
            that does not exist.
    """

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None
    target_name: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError(
                "a client certificate needs both the private key and the certificate chain "
                f"(got private_key={self.private_key}, certificate_chain={self.certificate_chain})"
            )
        for name in ("root_certificates", "private_key", "certificate_chain"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS {name.replace('_', ' ')}: {path} is not a file")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc.InferenceServerClient`` (which reads the files),
        the channel arguments aside (:meth:`channel_args`)."""

        def text(path: Path | None) -> str | None:
            return None if path is None else str(path)

        return {
            "ssl": True,
            "root_certificates": text(self.root_certificates),
            "private_key": text(self.private_key),
            "certificate_chain": text(self.certificate_chain),
        }

    def channel_args(self) -> list[tuple[str, str]]:
        """gRPC channel arguments this TLS needs on top of the client's own."""
        return [(TARGET_NAME_ARG, self.target_name)] if self.target_name else []


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ssl``, ``--root-certificates``, ``--private-key``, ``--certificate-chain`` and
    ``--ssl-target-name`` to ``parser``."""
    group = parser.add_argument_group("TLS (a server started with --grpc-use-ssl)")
    group.add_argument("--ssl", action="store_true", help="connect with TLS")
    group.add_argument(
        "--root-certificates", type=Path, metavar="PEM", help="the CA that signed the server's certificate"
    )
    group.add_argument("--private-key", type=Path, metavar="PEM", help="the client's key (mutual TLS)")
    group.add_argument(
        "--certificate-chain", type=Path, metavar="PEM", help="the client's certificate (mutual TLS)"
    )
    group.add_argument(
        "--ssl-target-name", metavar="NAME", help="the name the server's certificate carries, if not the host"
    )


def tls_from_arguments(args: argparse.Namespace) -> GrpcTls | None:
    """The :class:`GrpcTls` of parsed :func:`add_tls_arguments` options, ``None`` without ``--ssl``.

    Raises:
        ValueError: TLS options without ``--ssl``, or what :class:`GrpcTls` refuses.
    """
    named = [
        option
        for option, value in (
            ("--root-certificates", args.root_certificates),
            ("--private-key", args.private_key),
            ("--certificate-chain", args.certificate_chain),
            ("--ssl-target-name", args.ssl_target_name),
        )
        if value is not None
    ]
    if not args.ssl:
        if named:
            raise ValueError(f"{', '.join(named)} without --ssl: add --ssl to connect with TLS")
        return None
    return GrpcTls(args.root_certificates, args.private_key, args.certificate_chain, args.ssl_target_name)
