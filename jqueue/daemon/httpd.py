"""jq-masterd's HTTP service: the jqueue.http site over the queue, on --http HOST:PORT.

Started after the LUXI server, stopped after it: submissions are refused from the stop's
start, event streams are closed, then the listener and the connections.
"""

import logging
import os

from twisted.application import service
from twisted.internet import defer, error
from twisted.python import threadpool

from jqueue import errors
from jqueue.daemon import common
from jqueue.http import app, auth, server
from jqueue.http.server import HttpLimits

logger = logging.getLogger(__name__)

#: Seconds connections get at stop to take their last answers before being cut.
CLOSE_TIMEOUT = 2.0


def parse_address(text):
    """(host, port) of HOST:PORT or [V6ADDR]:PORT; StartupError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise common.StartupError("--http %s: expected HOST:PORT" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class HttpService(service.Service):
    """Serves jqueue.http's site over the queue of a QueueService (off without --http)."""

    name = "http"

    def __init__(self, config, reactor, queue_service, luxi_service):
        self._config = config
        self._reactor = reactor
        self._queue_service = queue_service
        self._luxi_service = luxi_service
        self.site = None
        self.port = None
        self._pool = None

    def limits(self):
        c = self._config
        return HttpLimits(max_body=c.http_max_body, max_headers=c.http_max_headers,
                          request_timeout=c.http_request_timeout,
                          idle_timeout=c.http_idle_timeout,
                          max_connections=self._luxi_service.connection_caps["HTTP"] or 1,
                          threads=c.http_threads)

    def startService(self):
        if not self._config.http:
            return
        host, port = parse_address(self._config.http)
        tokens = None
        try:
            if self._config.http_tokens:
                tokens = auth.read_tokens(self._config.http_tokens)
            tls = self._tls_options()
        except errors.GenericError as err:
            raise common.StartupError(errors.error_message(err)) from None
        loopback = auth.is_loopback_host(host)
        if not loopback and tokens is None and tls is None:
            raise common.StartupError(
                "--http %s is not a loopback address: give http_tokens or http_tls = "
                "cluster so that callers must authenticate" % self._config.http)
        try:
            access_log = (server.AccessLog(self._config.http_access_log)
                          if self._config.http_access_log else None)
        except OSError as err:
            raise common.StartupError("cannot open the HTTP access log %s: %s" % (
                self._config.http_access_log, err.strerror)) from None
        authenticator = auth.Authenticator(tokens, loopback_open=tokens is None and loopback)
        limits = self.limits()
        self._pool = threadpool.ThreadPool(0, limits.threads, name="http")
        cluster = self._luxi_service.cluster
        self.site = app.make_site(
            self._queue_service.queue, self._reactor, limits, authenticator, self._pool,
            config_values=self._luxi_service.config_values(), cluster=cluster,
            replication_status=cluster.replicator.status if cluster is not None else None,
            access_log=access_log)
        try:
            if tls is not None:
                self.port = self._reactor.listenSSL(port, self.site, tls, backlog=1024,
                                                    interface=host)
            else:
                self.port = self._reactor.listenTCP(port, self.site, backlog=1024,
                                                    interface=host)
        except error.CannotListenError as err:
            raise common.StartupError("cannot listen on %s: %s" % (
                self._config.http, err.socketError)) from None
        self._pool.start()
        super().startService()
        address = self.port.getHost()
        host_text = "[%s]" % address.host if ":" in address.host else address.host
        logger.info("HTTP on %s://%s:%d/ (%s)", "https" if tls else "http", host_text,
                    address.port, "tokens" if tokens else "client certificates" if tls and
                    not loopback else "loopback, no authentication" if loopback and not tls
                    else "loopback")

    def reload(self):
        """SIGHUP (common.reload_daemon): reopen the access log, read the tokens file
        again; whether there was either."""
        if self.site is None:
            return False
        access_log = self.site.access_log
        if access_log is not None:
            try:
                access_log.reopen()
                logger.info("SIGHUP: reopened the HTTP access log %s", access_log.path)
            except OSError as err:
                logger.error("SIGHUP: kept the HTTP access log open as it was: cannot open "
                             "%s: %s", access_log.path, err.strerror)
        if self._config.http_tokens:
            self.reload_tokens()
        return access_log is not None or bool(self._config.http_tokens)

    def reload_tokens(self):
        """Read the tokens file again (SIGHUP): its tokens replace the old ones; a file
        that does not parse changes nothing (the error is logged)."""
        if self.site is None:
            return
        try:
            tokens = auth.read_tokens(self._config.http_tokens)
        except errors.GenericError as err:
            logger.error("SIGHUP: kept the HTTP tokens: %s", errors.error_message(err))
            return
        self.site.authenticator.set_tokens(tokens)
        closed = self.site.recheck_streams()
        logger.info("SIGHUP: read %d HTTP tokens from %s%s", len(tokens),
                    self._config.http_tokens,
                    "; closed %d event stream(s) of revoked tokens" % closed if closed else "")

    def _tls_options(self):
        if self._config.http_tls != "cluster":
            return None
        from jqueue.cluster import tls
        credentials = tls.Credentials.from_dir(os.path.join(
            os.path.abspath(self._config.state_dir), "tls"))
        return auth.tls_options(credentials.cert, credentials.key, credentials.ca_cert)

    def abort(self):
        """The start failed: listen no more."""
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        if self._pool is not None and self._pool.started:
            self._pool.stop()

    def stop_accepting_submissions(self):
        if self.site is not None:
            self.site.accepting = False

    @defer.inlineCallbacks
    def stopService(self):
        if not self.running:
            return
        super().stopService()
        yield common.close_server(self._reactor, self.port, self.site.connections, self._pool,
                                  CLOSE_TIMEOUT, first=self.site.stop_streams)
        if self.site.access_log is not None:
            self.site.access_log.close()
