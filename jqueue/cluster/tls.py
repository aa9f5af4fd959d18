"""Certificates of a cluster (its CA, one key and certificate per node) and TLS contexts.

Every node has an EC P-256 key and a certificate signed by the cluster's CA, naming the
node in its subject CN and in a DNS subjectAltName. Node RPC runs over mutual TLS: the
server (Twisted) accepts only client certificates chained to the CA, and the client
(stdlib ssl) accepts only a server certificate chained to the CA and naming the node it
wanted to reach. Which nodes may call is decided above this module (jqueue.cluster.rpc.server).

Certificates are generated with ``cryptography``; Twisted and pyOpenSSL are imported only
to build the server's options, so that blocking clients need neither.
"""

import datetime
import ipaddress
import logging
import os
import re
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jqueue import constants, errors
from jqueue.store import fsutil

logger = logging.getLogger(__name__)

#: A node (or cluster) name: a host name or address, at most 64 characters (the CN limit).
_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
#: Backdating of notBefore, so that peers whose clocks lag a little accept new certificates.
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644


def _check_name(name, what="node name"):
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise errors.ParameterError("invalid %s %r: expected a host name of at most 64 "
                                    "letters, digits, '.', '-' or '_'" % (what, name))
    return name


def _utcnow():
    return datetime.datetime.now(datetime.UTC)


def _validity(days, not_before):
    """(notBefore, notAfter) for a certificate valid for days from not_before."""
    if not_before is None:
        not_before = _utcnow() - _CLOCK_SKEW
    elif not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=datetime.UTC)
    return not_before, not_before + datetime.timedelta(days=days)


def _hash_for(key):
    """The signature hash for key (none for the EdDSA keys)."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _public_der(key_or_cert):
    return key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# Generation


def generate_key():
    """A new EC P-256 private key (fast handshakes, small certificates)."""
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(cluster_name, days=constants.TLS_CA_DAYS):
    """A new cluster CA: (key, self-signed certificate) valid for days."""
    _check_name(cluster_name, "cluster name")
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cluster_name),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "jqueue cluster CA")])
    not_before, not_after = _validity(days, None)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(ca=True), critical=True)
               .add_extension(ski, critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                              critical=False))
    return key, builder.sign(key, _hash_for(key))


def _key_usage(ca):
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                         decipher_only=False)


def create_csr(key, node_name):
    """A certificate signing request for node_name, signed by key."""
    _check_name(node_name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        key, _hash_for(key))


def sign_csr(ca_key, ca_cert, csr, node_name, days=constants.TLS_NODE_DAYS, not_before=None):
    """A node certificate for node_name with the CSR's public key, signed by the CA.

    The CSR's own subject and extensions are ignored: the signer decides the name. A CSR
    whose signature does not verify (tampered, or not made with its key) is refused.
    """
    _check_name(node_name)
    if not csr.is_signature_valid:
        raise errors.TlsError("certificate signing request for %s: its signature does not "
                              "verify" % node_name)
    if _public_der(ca_key) != _public_der(ca_cert):
        raise errors.TlsError("the CA key does not match the CA certificate")
    not_before, not_after = _validity(days, not_before)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
               .issuer_name(ca_cert.subject).public_key(csr.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after))
    for extension, critical in _node_extensions(ca_cert, csr, node_name):
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca_key, _hash_for(ca_key))


def _node_extensions(ca_cert, csr, node_name):
    names = [x509.DNSName(node_name)]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(node_name)))
    except ValueError:
        pass
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(ca=False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        (x509.SubjectAlternativeName(names), False),
        (x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False),
        (_authority_key_id(ca_cert), False),
    ]


def _authority_key_id(ca_cert):
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_node_cert(ca_key, ca_cert, node_name, days=constants.TLS_NODE_DAYS, not_before=None):
    """A new key and its certificate for node_name, signed by the CA: (key, cert)."""
    key = generate_key()
    csr = create_csr(key, node_name)
    return key, sign_csr(ca_key, ca_cert, csr, node_name, days=days, not_before=not_before)


# PEM


def key_to_pem(key):
    """The private key as unencrypted PKCS#8 PEM bytes."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_to_pem(cert):
    """The certificate as PEM bytes."""
    return cert.public_bytes(serialization.Encoding.PEM)


def csr_to_pem(csr):
    """The certificate signing request as PEM bytes."""
    return csr.public_bytes(serialization.Encoding.PEM)


def _as_bytes(data):
    return data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)


def load_key_pem(data):
    """A private key from PEM (str or bytes); TlsError if it is not one."""
    try:
        return serialization.load_pem_private_key(_as_bytes(data), password=None)
    except (ValueError, TypeError) as err:
        raise errors.TlsError("invalid PEM private key: %s" % err) from None


def load_cert_pem(data):
    """A certificate from PEM (str or bytes); TlsError if it is not one."""
    try:
        return x509.load_pem_x509_certificate(_as_bytes(data))
    except ValueError as err:
        raise errors.TlsError("invalid PEM certificate: %s" % err) from None


def load_csr_pem(data):
    """A certificate signing request from PEM (str or bytes); TlsError if it is not one."""
    try:
        return x509.load_pem_x509_csr(_as_bytes(data))
    except ValueError as err:
        raise errors.TlsError("invalid PEM certificate signing request: %s" % err) from None


def write_pem(path, data, private):
    """Write PEM bytes to path atomically: mode 0600 if private (a key), 0644 otherwise."""
    mode = _PRIVATE_MODE if private else _PUBLIC_MODE
    fsutil.write_file(path, data, mode=mode)
    # The umask may have narrowed the mode of the new file: set it exactly.
    os.chmod(path, mode)


# Inspection


def fingerprint(cert):
    """The SHA-256 fingerprint of the certificate's DER: "sha256:<hex>"."""
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def node_name_of(cert):
    """The node a certificate names: its CN, if the subjectAltName (if any) agrees; or None."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        return None
    name = cns[0].value
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return name
    except ValueError:  # a malformed extension
        return None
    return name if name in san.get_values_for_type(x509.DNSName) else None


def is_ca(cert):
    """Whether the certificate may sign others (BasicConstraints CA=True)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def verify_signed_by(cert, ca_cert):
    """Whether cert was issued by ca_cert (issuer name and signature check)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: all "no"
        return False
    return True


def validity_problem(cert, now=None):
    """Why the certificate is not valid at now (default: the current time), or None."""
    now = now if now is not None else _utcnow()
    if now > cert.not_valid_after_utc:
        return "expired on %s" % cert.not_valid_after_utc.isoformat()
    if now < cert.not_valid_before_utc:
        return "not valid before %s" % cert.not_valid_before_utc.isoformat()
    return None


def clock_note():
    """What to add to a certificate refused for its dates: this node's clock may be wrong."""
    return "by this node's clock, %s UTC: is it right?" % _utcnow().strftime("%Y-%m-%d %H:%M:%S")


#: OpenSSL's verification errors (X509_V_ERR_*) a node's TLS may meet, in words.
_VERIFY_ERRORS = {
    2: "its issuer is not this cluster's CA", 20: "its issuer is not this cluster's CA",
    21: "its issuer is not this cluster's CA", 18: "self-signed, not this cluster's CA's",
    19: "signed by a CA that is not this cluster's", 7: "its signature does not verify",
}
#: X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED (a node's or the CA's).
DATE_ERRORS = (9, 10)


def verify_problem(cert, errnum):
    """Why a peer's certificate (cryptography's) failed OpenSSL's verification errnum."""
    name = node_name_of(cert) or "?"
    what = ("the CA certificate of cluster %s" if is_ca(cert) else "the certificate of %s") % (
        name)
    if errnum in DATE_ERRORS:
        problem = validity_problem(cert) or "not valid (OpenSSL's error %d)" % errnum
        return "%s is %s %s" % (what, problem, clock_note())
    return "%s is refused: %s" % (
        what, _VERIFY_ERRORS.get(errnum, "OpenSSL's verification error %d" % errnum))


def _keep_refusal(conn, cert, errnum, depth, ok):
    """pyOpenSSL's verify callback of the RPC server: OpenSSL's verdict stands; the first
    refusal's reason is kept on the connection's TLS protocol (``jq_refusal``) for the
    line that logs the failed handshake."""
    if not ok:
        protocol = conn.get_app_data()
        if protocol is not None and getattr(protocol, "jq_refusal", None) is None:
            try:
                protocol.jq_refusal = verify_problem(cert.to_cryptography(), errnum)
            except Exception:  # noqa: BLE001 - only a log line's detail; never the handshake
                protocol.jq_refusal = "OpenSSL's verification error %d" % errnum
    return bool(ok)


# A node's credentials


#: OpenSSL's SSL_MODE_ENABLE_PARTIAL_WRITE (pyOpenSSL does not name it).
_PARTIAL_WRITE = 0x1


def _read(path, loader, what):
    try:
        data = fsutil.read_file(path)
    except FileNotFoundError:
        raise errors.TlsError("%s %s is missing" % (what, path)) from None
    except OSError as err:
        raise errors.TlsError("cannot read %s %s: %s" % (what, path, err.strerror)) from None
    try:
        return loader(data)
    except errors.TlsError as err:
        raise errors.TlsError("%s %s: %s" % (what, path, errors.error_message(err))) from None


class Credentials:
    """A node's TLS files: the cluster CA certificate, its own certificate and key.

    The files are read and checked when the object is made (TlsError names the file and
    the problem): the key matches the certificate, which is signed by the CA, names a
    node and has not expired.
    """

    def __init__(self, ca_cert_path, cert_path, key_path):
        self.ca_cert_path = ca_cert_path
        self.cert_path = cert_path
        self.key_path = key_path
        self.ca_cert = _read(ca_cert_path, load_cert_pem, "CA certificate")
        self.cert = _read(cert_path, load_cert_pem, "node certificate")
        self.key = _read(key_path, load_key_pem, "node key")
        self._node_name = self._check()

    @classmethod
    def from_dir(cls, tls_dir):
        """The credentials in the layout <state>/tls/{ca.crt,node.crt,node.key}."""
        return cls(os.path.join(tls_dir, constants.CA_CERT_FILE),
                   os.path.join(tls_dir, constants.NODE_CERT_FILE),
                   os.path.join(tls_dir, constants.NODE_KEY_FILE))

    def _check(self):
        if not is_ca(self.ca_cert):
            raise errors.TlsError("CA certificate %s is not a CA" % self.ca_cert_path)
        if _public_der(self.key) != _public_der(self.cert):
            raise errors.TlsError("node key %s does not match node certificate %s" % (
                self.key_path, self.cert_path))
        if not verify_signed_by(self.cert, self.ca_cert):
            raise errors.TlsError("node certificate %s is not signed by the CA of %s" % (
                self.cert_path, self.ca_cert_path))
        name = node_name_of(self.cert)
        if name is None or is_ca(self.cert):
            raise errors.TlsError("node certificate %s names no node" % self.cert_path)
        for path, cert in ((self.ca_cert_path, self.ca_cert), (self.cert_path, self.cert)):
            problem = validity_problem(cert)
            if problem is not None and problem.startswith("expired"):
                raise errors.TlsError("certificate %s %s" % (path, problem))
            if problem is not None:
                logger.warning("certificate %s is %s (is the clock right?)", path, problem)
        return name

    @property
    def node_name(self):
        """The name of this node, from its certificate."""
        return self._node_name

    @property
    def fingerprint(self):
        """The fingerprint of this node's certificate."""
        return fingerprint(self.cert)

    def server_options(self):
        """Twisted TLS options for listening: a client certificate from the CA is required.

        A client without a certificate, with one from another CA, or with an expired
        one fails the handshake. TLS 1.2 at least, no renegotiation.
        """
        from OpenSSL import SSL, crypto
        from twisted.internet import ssl as twisted_ssl

        ca = twisted_ssl.Certificate(crypto.X509.from_cryptography(self.ca_cert))
        options = twisted_ssl.CertificateOptions(
            privateKey=self.key,  # pyOpenSSL takes cryptography objects (its own: deprecated)
            certificate=self.cert,
            # A trust root makes Twisted verify the peer and require its certificate.
            trustRoot=twisted_ssl.trustRootFromCertificates([ca]),
            raiseMinimumTo=twisted_ssl.TLSVersion.TLSv1_2)
        # The peer's certificate is the one of the handshake, for the whole connection
        # (TLS 1.2 renegotiation could change it): the RPC server checks it once.
        context = options.getContext()
        context.set_options(SSL.OP_NO_RENEGOTIATION)
        # One SSL_write encrypts all it is given (jqueue.cluster.rpc.server's TLS layer
        # hands it large slices): pyOpenSSL turns partial writes on.
        context.clear_mode(_PARTIAL_WRITE)
        # Twisted's flags, and a callback keeping why a certificate is refused.
        context.set_verify(context.get_verify_mode(), _keep_refusal)
        return options

    def client_context(self):
        """An ssl.SSLContext for calling other nodes (server_hostname: the node's name).

        The CA is the only trust root; this node's certificate is presented; the server's
        certificate must name the node called. TLS 1.2 at least.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        try:
            context.load_verify_locations(cadata=cert_to_pem(self.ca_cert).decode("ascii"))
            context.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as err:
            raise errors.TlsError("cannot load %s and %s: %s" % (
                self.cert_path, self.key_path, err)) from None
        return context
