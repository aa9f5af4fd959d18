"""Tests of jqueue.cluster.tls: the cluster CA, node certificates, PEM files and credentials."""

import datetime
import hashlib
import os
import re
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jqueue import errors
from jqueue.cluster import tls


@pytest.fixture(scope="module")
def ca():
    return tls.create_ca("cluster1")


@pytest.fixture(scope="module")
def node(ca):
    return tls.issue_node_cert(*ca, "node1.example.com")


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls).value


def days_ago(days):
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)


def write_tls_dir(path, ca_cert, key, cert):
    os.makedirs(path, exist_ok=True)
    tls.write_pem(os.path.join(path, "ca.crt"), tls.cert_to_pem(ca_cert), False)
    tls.write_pem(os.path.join(path, "node.crt"), tls.cert_to_pem(cert), False)
    tls.write_pem(os.path.join(path, "node.key"), tls.key_to_pem(key), True)
    return str(path)


def test_ca_is_a_self_signed_ca_named_after_the_cluster(ca):
    """The CA certificate is self-signed, may sign certificates, and is named after the cluster."""
    key, cert = ca
    assert tls.is_ca(cert)
    assert tls.verify_signed_by(cert, cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cluster1"
    usage = ext(cert, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign
    assert ext(cert, x509.SubjectKeyIdentifier).digest
    assert isinstance(key.curve, type(tls.generate_key().curve))


def test_node_cert_chains_to_the_ca_and_names_the_node(ca, node):
    """A node certificate is signed by the CA and names the node in CN and SAN, for both sides."""
    ca_key, ca_cert = ca
    key, cert = node
    assert tls.verify_signed_by(cert, ca_cert)
    assert tls.node_name_of(cert) == "node1.example.com"
    assert ext(cert, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName) == [
        "node1.example.com"]
    assert set(ext(cert, x509.ExtendedKeyUsage)) == {ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not tls.is_ca(cert)
    assert (ext(cert, x509.AuthorityKeyIdentifier).key_identifier
            == ext(ca_cert, x509.SubjectKeyIdentifier).digest)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_a_cert_of_another_ca_does_not_verify(node):
    """verify_signed_by is false for a certificate signed by another CA."""
    _, other_ca = tls.create_ca("cluster2")
    assert not tls.verify_signed_by(node[1], other_ca)


def test_signing_uses_the_signers_name_not_the_csrs(ca):
    """The signer decides the node name: the CSR's own subject is ignored."""
    key = tls.generate_key()
    csr = tls.create_csr(key, "evil")
    cert = tls.sign_csr(*ca, tls.load_csr_pem(tls.csr_to_pem(csr)), "node2")
    assert tls.node_name_of(cert) == "node2"
    assert "evil" not in cert.subject.rfc4514_string()
    assert ext(cert, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName) == ["node2"]


def test_a_tampered_csr_is_refused(ca):
    """A CSR whose content was changed after signing fails its signature check."""
    csr = tls.create_csr(tls.generate_key(), "nodeA")
    der = csr.public_bytes(serialization.Encoding.DER).replace(b"nodeA", b"nodeB")
    tampered = x509.load_der_x509_csr(der)
    with pytest.raises(errors.TlsError, match="signature does not verify"):
        tls.sign_csr(*ca, tampered, "nodeB")


def test_bad_node_names_are_refused(ca):
    """Names that are not host names (spaces, slashes, empty, too long) are refused."""
    for name in ["", "a b", "a/b", "-a", "node1\n", "x" * 65, None]:
        with pytest.raises(errors.ParameterError):
            tls.issue_node_cert(*ca, name)


def test_an_ip_node_name_also_gets_an_ip_san(ca):
    """A node named by an IP address has it as an IP subjectAltName too."""
    _, cert = tls.issue_node_cert(*ca, "10.0.0.7")
    san = ext(cert, x509.SubjectAlternativeName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert tls.node_name_of(cert) == "10.0.0.7"


def test_expired_and_future_certs_are_detected(ca):
    """validity_problem reports an expired or not yet valid certificate, and nothing otherwise."""
    _, expired = tls.issue_node_cert(*ca, "node1", days=1, not_before=days_ago(10))
    _, future = tls.issue_node_cert(*ca, "node1", not_before=days_ago(-3))
    _, fresh = tls.issue_node_cert(*ca, "node1")
    assert tls.validity_problem(expired).startswith("expired on ")
    assert tls.validity_problem(future).startswith("not valid before ")
    assert tls.validity_problem(fresh) is None


def test_fingerprint_is_sha256_of_the_der(node):
    """fingerprint is "sha256:" and the hex SHA-256 of the certificate's DER."""
    cert = node[1]
    value = tls.fingerprint(cert)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", value)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert value == "sha256:" + hashlib.sha256(der).hexdigest()


def test_pem_round_trips_and_garbage_is_refused(node):
    """Keys, certificates and CSRs survive PEM; garbage raises TlsError."""
    key, cert = node
    assert tls.load_cert_pem(tls.cert_to_pem(cert)) == cert
    assert tls.fingerprint(tls.load_cert_pem(tls.cert_to_pem(cert).decode())) == tls.fingerprint(
        cert)
    assert tls.load_key_pem(tls.key_to_pem(key)).private_numbers() == key.private_numbers()
    csr = tls.create_csr(key, "n")
    assert tls.load_csr_pem(tls.csr_to_pem(csr)) == csr
    for loader in (tls.load_cert_pem, tls.load_key_pem, tls.load_csr_pem):
        with pytest.raises(errors.TlsError, match="invalid PEM"):
            loader(b"-----BEGIN NOTHING-----\ngarbage\n")


def test_node_name_of_refuses_a_san_that_disagrees(ca):
    """A certificate whose subjectAltName does not contain its CN names no node."""
    ca_key, ca_cert = ca
    key = tls.generate_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("node2")]), False)
            .sign(ca_key, hashes.SHA256()))
    assert tls.node_name_of(cert) is None


def test_write_pem_sets_exact_modes_even_under_a_strict_umask(tmp_path, node):
    """Keys are written 0600 and certificates 0644, whatever the umask, with no temp file left."""
    key, cert = node
    old = os.umask(0o077)
    try:
        tls.write_pem(str(tmp_path / "node.key"), tls.key_to_pem(key), True)
        tls.write_pem(str(tmp_path / "node.crt"), tls.cert_to_pem(cert), False)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "node.key").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "node.crt").st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["node.crt", "node.key"]
    assert (tmp_path / "node.crt").read_bytes() == tls.cert_to_pem(cert)


def test_credentials_load_a_tls_dir(tmp_path, ca, node):
    """Credentials.from_dir reads ca.crt, node.crt and node.key and knows the node's name."""
    path = write_tls_dir(tmp_path / "tls", ca[1], *node)
    creds = tls.Credentials.from_dir(path)
    assert creds.node_name == "node1.example.com"
    assert creds.fingerprint == tls.fingerprint(node[1])
    assert creds.key_path == os.path.join(path, "node.key")


def test_credentials_errors_name_the_missing_file(tmp_path, ca, node):
    """A missing file is reported by its path, one file after the other."""
    path = str(tmp_path)
    with pytest.raises(errors.TlsError, match=re.escape(os.path.join(path, "ca.crt")) +
                       " is missing"):
        tls.Credentials.from_dir(path)
    tls.write_pem(os.path.join(path, "ca.crt"), tls.cert_to_pem(ca[1]), False)
    tls.write_pem(os.path.join(path, "node.crt"), tls.cert_to_pem(node[1]), False)
    with pytest.raises(errors.TlsError, match=re.escape(os.path.join(path, "node.key"))):
        tls.Credentials.from_dir(path)


def test_credentials_refuse_bad_files_naming_them(tmp_path, ca, node):
    """Garbage, a key of another certificate, a foreign CA and an expired cert are refused."""
    path = write_tls_dir(tmp_path, ca[1], *node)
    crt, key = os.path.join(path, "node.crt"), os.path.join(path, "node.key")
    tls.write_pem(crt, b"garbage", False)
    with pytest.raises(errors.TlsError, match=re.escape(crt) + ": invalid PEM certificate"):
        tls.Credentials.from_dir(path)
    tls.write_pem(crt, tls.cert_to_pem(node[1]), False)
    tls.write_pem(key, tls.key_to_pem(tls.generate_key()), True)
    with pytest.raises(errors.TlsError, match="does not match"):
        tls.Credentials.from_dir(path)
    foreign_key, foreign_cert = tls.issue_node_cert(*tls.create_ca("other"), "node1")
    write_tls_dir(path, ca[1], foreign_key, foreign_cert)
    with pytest.raises(errors.TlsError, match="not signed by the CA"):
        tls.Credentials.from_dir(path)
    write_tls_dir(path, ca[1], *tls.issue_node_cert(*ca, "node1", days=1,
                                                     not_before=days_ago(5)))
    with pytest.raises(errors.TlsError, match=re.escape(crt) + " expired on"):
        tls.Credentials.from_dir(path)


def test_contexts_require_and_check_certificates(tmp_path, ca, node):
    """The client context checks host names against the CA; the server options require a cert."""
    creds = tls.Credentials.from_dir(write_tls_dir(tmp_path, ca[1], *node))
    context = creds.client_context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "cluster1"),), (("organizationalUnitName", "jqueue cluster CA"),))]
    options = creds.server_options()
    assert options.verify and options.requireCertificate


def test_the_server_context_writes_whole_slices(tmp_path, ca, node):
    """pyOpenSSL turns OpenSSL's partial writes on; the RPC server's context turns them
    off, so that one SSL_write encrypts all it is given (jqueue.cluster.rpc.server)."""
    creds = tls.Credentials.from_dir(write_tls_dir(tmp_path, ca[1], *node))
    context = creds.server_options().getContext()
    assert context.set_mode(0) & 0x1 == 0  # set_mode answers the mode it leaves
