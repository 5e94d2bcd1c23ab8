"""gRPC over TLS, as the Helm chart's ``tls`` starts Triton: the real embedded server with
``--grpc-use-ssl`` (and ``--grpc-use-ssl-mutual``), certificates made here — a CA, a server
certificate that names the service (not the loopback address called), a client certificate — and the
client library, ``vfq analyze`` and ``vfq-health`` talking to it."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vfq.client import GrpcTls, ServerUnavailableError, VfqClient
from vfq.client.cli import main as vfq
from vfq.client.health import main as health
from vfq.io import read_ct
from vfq.server.embedded import EmbeddedServer

SERVICE = "vfq.imaging.svc"
REAL_CT = Path(__file__).resolve().parents[1] / "data" / "real" / "lumbar_ct_3mm" / "ct.nii.gz"
LUMBAR = ["L1", "L2", "L3", "L4", "L5"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _certificate(
    subject: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
    usage: x509.ObjectIdentifier | None = None,
    dns_name: str | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 key and its certificate, valid for a day: a CA when ``issuer`` is ``None``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns_name is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
    return key, builder.sign(key if issuer is None else issuer[0], hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca, server (names SERVICE), client (signed by ca) and other (a CA nobody trusts): .crt and .key."""
    folder = tmp_path_factory.mktemp("pki")
    ca = _certificate("vfq test CA", None)
    _write(folder, "ca", *ca)
    _write(folder, "server", *_certificate(SERVICE, ca, ExtendedKeyUsageOID.SERVER_AUTH, SERVICE))
    _write(folder, "client", *_certificate("vfq client", ca, ExtendedKeyUsageOID.CLIENT_AUTH))
    _write(folder, "other", *_certificate("another CA", None))
    return folder


def _tls_server(pki: Path, mutual: bool) -> EmbeddedServer:
    args = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={pki / 'server.crt'}",
        f"--grpc-server-key={pki / 'server.key'}",
        f"--grpc-root-cert={pki / 'ca.crt'}",
    ]
    return EmbeddedServer(extra_args=args + (["--grpc-use-ssl-mutual=true"] if mutual else []))


@pytest.fixture(scope="module")
def tls_server(pki):
    with _tls_server(pki, mutual=False) as running:
        yield running


@pytest.fixture(scope="module")
def mutual_server(pki):
    with _tls_server(pki, mutual=True) as running:
        yield running


@pytest.fixture(scope="module")
def real_ct():
    return read_ct(REAL_CT)


def _levels(url: str, tls: GrpcTls | None, ct) -> list[str]:
    with VfqClient(url, tls=tls, retries=0, timeout_s=60) as client:
        return [vertebra.level for vertebra in client.analyze_array(ct.array, ct.geometry).vertebrae]


def test_the_pipeline_answers_over_tls_checked_against_the_ca_and_the_service_name(tls_server, pki, real_ct):
    assert _levels(tls_server.grpc_url, GrpcTls(pki / "ca.crt", target_name=SERVICE), real_ct) == LUMBAR


def test_mutual_tls_serves_a_client_with_a_certificate_of_the_ca(mutual_server, pki, real_ct):
    tls = GrpcTls(pki / "ca.crt", pki / "client.key", pki / "client.crt", SERVICE)
    assert _levels(mutual_server.grpc_url, tls, real_ct) == LUMBAR


@pytest.mark.parametrize(
    ("server", "tls", "hint"),
    [
        ("tls", None, "if the server uses TLS (it closes plaintext connections), connect with --ssl"),
        ("tls", {"root_certificates": "other.crt", "target_name": SERVICE}, "the TLS handshake failed"),
        ("tls", {"root_certificates": "ca.crt"}, "the TLS handshake failed"),  # 127.0.0.1 is not SERVICE
        (
            "mutual",
            {"root_certificates": "ca.crt", "target_name": SERVICE},
            "if the server asks for client certificates (it closes connections without one)",
        ),
    ],
    ids=["plaintext", "untrusted-ca", "other-name", "no-client-certificate"],
)
def test_a_connection_the_server_refuses_says_what_to_check(request, server, tls, hint, pki, real_ct) -> None:
    running = request.getfixturevalue(f"{server}_server")
    settings = None
    if tls is not None:
        settings = GrpcTls(pki / tls["root_certificates"], target_name=tls.get("target_name"))
    with pytest.raises(ServerUnavailableError) as refused:
        _levels(running.grpc_url, settings, real_ct)
    assert str(refused.value).startswith(
        f"no Triton server answers at {running.grpc_url} (inference, after 0 retries): "
    )
    assert hint in str(refused.value)


def test_vfq_analyze_and_vfq_health_take_the_tls_options(mutual_server, pki, tmp_path, capsys):
    tls = [
        "--ssl",
        "--root-certificates",
        str(pki / "ca.crt"),
        "--private-key",
        str(pki / "client.key"),
        "--certificate-chain",
        str(pki / "client.crt"),
        "--ssl-target-name",
        SERVICE,
    ]
    url = mutual_server.grpc_url
    assert health(["--url", url, *tls]) == 0
    assert health(["--url", url, "--timeout", "2"]) == 1
    assert vfq(["analyze", str(REAL_CT), "--url", url, "--out", str(tmp_path), *tls]) == 0
    [report] = tmp_path.glob("*/report.json")
    assert [v["level"] for v in json.loads(report.read_text(encoding="utf-8"))["vertebrae"]] == LUMBAR
    capsys.readouterr()
    assert vfq(["analyze", str(REAL_CT), "--url", url, "--out", str(tmp_path), *tls[1:]]) == 2
    assert capsys.readouterr().err.endswith(
        "vfq: error: --root-certificates, --private-key, --certificate-chain, --ssl-target-name without "
        "--ssl: add --ssl to connect with TLS\n"
    )


def test_tls_settings_are_checked_before_any_connection(pki) -> None:
    with pytest.raises(
        ValueError, match="a client certificate needs both the private key and the certificate"
    ):
        GrpcTls(pki / "ca.crt", private_key=pki / "client.key")
    with pytest.raises(ValueError, match=r"TLS root certificates: .*missing\.crt is not a file"):
        GrpcTls(pki / "missing.crt")
    tls = GrpcTls(pki / "ca.crt", pki / "client.key", pki / "client.crt", SERVICE)
    assert tls.channel_args() == [("grpc.ssl_target_name_override", SERVICE)]
    assert tls.client_options() == {
        "ssl": True,
        "root_certificates": str(pki / "ca.crt"),
        "private_key": str(pki / "client.key"),
        "certificate_chain": str(pki / "client.crt"),
    }
