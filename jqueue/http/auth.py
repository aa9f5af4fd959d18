"""Who may call the HTTP server: loopback, tokens, client certificates, and CSRF tokens.

Without authentication the server listens on loopback addresses only (the daemon refuses
any other address unless tokens or TLS with client certificates are configured). A
request is authenticated by

- a token of the tokens file: ``Authorization: Bearer TOKEN``, ``?token=TOKEN`` (for
  Coalition's clients, which cannot send headers), or the ``jq_token`` cookie that the
  server sets when a page is opened with a valid ``?token=`` (so that the page's own
  requests and its event stream carry it);
- or a client certificate that the TLS handshake verified against the cluster's CA (its
  subject's CN names the caller).

The tokens file has one ``NAME TOKEN`` per line (``#`` starts a comment); NAME is the
caller's name, recorded as the owner of the jobs it submits. Tokens are compared in
constant time. jq-masterd reads the file again on SIGHUP.

Browsers: a request that a browser made (it carries ``Origin``, ``Sec-Fetch-Site`` or a
cookie) and that changes something must come from our own page: not from another site
(``Sec-Fetch-Site`` cross-site or same-site, or an ``Origin`` other than the ``Host``),
and a POST or DELETE must carry ``X-CSRF-Token`` with the daemon's CSRF token, which the
page reads from the ``jq_csrf`` cookie set when it is served. On loopback without
authentication, the ``Host`` header must name a loopback host, so that a site that
rebinds its DNS name to 127.0.0.1 cannot read or change anything.
"""

import hashlib
import hmac
import ipaddress
import logging
import os
import re

from jqueue import errors

logger = logging.getLogger(__name__)

#: Shortest token accepted in a tokens file.
MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"\A[A-Za-z0-9_.@+-]{1,64}\Z")
_TOKEN = re.compile(r"\A[\x21-\x7e]+\Z")
CSRF_HEADER = b"X-CSRF-Token"
CSRF_COOKIE = b"jq_csrf"
TOKEN_COOKIE = b"jq_token"


class AuthError(errors.GenericError):
    """A request is not authenticated (HTTP 401)."""


class Forbidden(errors.GenericError):
    """A request is authenticated but refused: another site's, or without a CSRF token
    (HTTP 403)."""


def read_tokens(path):
    """{token: name} from a tokens file; ConfigurationError naming the line if malformed."""
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as err:
        raise errors.ConfigurationError("tokens file %s: %s" % (
            path, getattr(err, "strerror", None) or err)) from None
    if mode & 0o077:
        logger.warning("tokens file %s is readable by others than its owner (mode %o)",
                       path, mode & 0o777)
    tokens = {}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if (len(parts) != 2 or not _NAME.match(parts[0]) or not _TOKEN.match(parts[1])
                or len(parts[1]) < MIN_TOKEN_LENGTH):
            raise errors.ConfigurationError(
                "tokens file %s line %d: expected NAME TOKEN (a name of letters, digits and "
                "_.@+-, a token of at least %d printable characters)" % (
                    path, number, MIN_TOKEN_LENGTH))
        if parts[1] in tokens:
            raise errors.ConfigurationError("tokens file %s line %d: a token given twice" % (
                path, number))
        tokens[parts[1]] = parts[0]
    if not tokens:
        raise errors.ConfigurationError("tokens file %s holds no token" % path)
    return tokens


def is_loopback_host(host):
    """Whether a listening host (a name or an address) is a loopback one."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(header):
    """The host of a Host header (without its port); None if malformed."""
    if header is None:
        return None
    text = header.decode("ascii", "replace").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[:end + 1] if end > 0 else None
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Authenticator:
    """Decides who a request is (see the module docstring).

    tokens: {token: name} (None: no tokens); loopback_open: requests need no
    authentication (the server listens on loopback only); secret: bytes the CSRF token
    is derived from (random per daemon start by default).
    """

    def __init__(self, tokens=None, loopback_open=True, secret=None):
        self._tokens = dict(tokens or {})
        self.loopback_open = loopback_open
        self._secret = secret if secret is not None else os.urandom(32)
        self.csrf_token = hmac.new(self._secret, b"jqueue csrf", hashlib.sha256).hexdigest()

    def set_tokens(self, tokens):
        """Replace the tokens ({token: name}): a reloaded tokens file."""
        self._tokens = dict(tokens)

    def identify(self, request, query_token=None):
        """(authenticated, name or None) of a request; AuthError if it needs one it lacks
        or gave a bad token; Forbidden for a loopback request naming a foreign Host."""
        token = _bearer(request) or query_token or _cookie(request, TOKEN_COOKIE)
        if token is not None:
            name = self._match(token)
            if name is None:
                raise AuthError("invalid token")
            return True, name
        name = _certificate_name(request)
        if name is not None:
            return True, name
        if not self.loopback_open:
            raise AuthError("authentication required: a token (Authorization: Bearer, or "
                            "?token=) or a client certificate of the cluster's CA")
        host = _host_of(request.getHeader(b"host"))
        if host is not None and not is_loopback_host(host):
            raise Forbidden("Host %s is not a loopback name: this server answers "
                            "unauthenticated requests for loopback names only" % host)
        return False, None

    def _match(self, token):
        found = None
        for known, name in self._tokens.items():
            if hmac.compare_digest(known.encode("utf-8", "replace"),
                                   token.encode("utf-8", "replace")):
                found = name
        return found

    def check_browser(self, request, mutating):
        """Forbidden if a browser's request that changes something did not come from our
        page (see the module docstring). Other requests pass."""
        if not mutating:
            return
        site = request.getHeader(b"sec-fetch-site")
        origin = request.getHeader(b"origin")
        cookie = request.getHeader(b"cookie")
        if site is None and origin is None and cookie is None:
            return  # not a browser: curl, control.py, scripts
        if site is not None and site.lower() in (b"cross-site", b"same-site"):
            raise Forbidden("a change requested by another site is refused")
        if origin is not None and _host_of(origin.split(b"://", 1)[-1]) != _host_of(
                request.getHeader(b"host")):
            raise Forbidden("a change requested from origin %s is refused" %
                            origin.decode("ascii", "replace"))
        method = request.method
        if method in (b"POST", b"PUT", b"DELETE", b"PATCH"):
            given = request.getHeader(CSRF_HEADER) or b""
            if not hmac.compare_digest(given, self.csrf_token.encode("ascii")):
                raise Forbidden("a browser's change needs the %s header of the page "
                                "(reload the page)" % CSRF_HEADER.decode("ascii"))


def _bearer(request):
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"bearer" or not value.strip():
        raise AuthError("unsupported Authorization header: use Bearer TOKEN")
    return value.strip().decode("utf-8", "replace")


def _cookie(request, name):
    value = request.received_cookies.get(name)
    return value.decode("utf-8", "replace") if value else None


def _certificate_name(request):
    """The CN of a client certificate the TLS handshake verified, or None."""
    transport = getattr(request.channel, "transport", None)
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        cert = get()
    except Exception:  # noqa: BLE001 - not TLS, or no certificate
        return None
    if cert is None:
        return None
    name = cert.get_subject().CN
    return name or None


def tls_options(cert, key, ca_cert):
    """Twisted TLS options: this server's certificate and key; a client certificate is
    asked for and, when given, must be signed by ca_cert (a client without one goes on,
    and must then give a token). cryptography objects; TLS 1.2 at least."""
    from OpenSSL import SSL, crypto
    from twisted.internet import ssl as twisted_ssl

    options = twisted_ssl.CertificateOptions(
        privateKey=key, certificate=cert, raiseMinimumTo=twisted_ssl.TLSVersion.TLSv1_2)
    context = options.getContext()
    context.get_cert_store().add_cert(crypto.X509.from_cryptography(ca_cert))
    context.set_verify(SSL.VERIFY_PEER, lambda conn, x509, errno, depth, ok: bool(ok))
    context.set_options(SSL.OP_NO_RENEGOTIATION)
    context.set_session_id(b"jqueue-http")
    return options
