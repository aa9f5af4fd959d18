"""The HTTP application: the site with every route (page, REST API, Coalition, metrics).

``make_site(backend, reactor, limits, authenticator, pool, ...)`` is what jq-masterd
listens with (jqueue.daemon.masterd's HttpService).
"""

from jqueue.http import api, auth, coalition, metrics, services
from jqueue.http.server import HttpSite, Route
from jqueue.luxi import methods


def page(call):
    """GET /: the page; sets the CSRF cookie its script sends back as a header."""
    response = call.site.static_response("index.html")
    call.request.addCookie(auth.CSRF_COOKIE, call.site.authenticator.csrf_token.encode(),
                           path=b"/", sameSite="strict", secure=call.request.isSecure())
    response.headers[b"Content-Security-Policy"] = (
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'")
    response.headers[b"X-Frame-Options"] = b"DENY"
    return response


def static(call, name):
    return call.site.static_response(name)


def routes():
    return ([Route("GET", "/", page, page=True),
             Route("GET", "/static/([^/]+)", static),
             Route("GET", "/metrics", metrics.get_metrics)]
            + api.routes() + services.routes() + coalition.routes())


def make_site(backend, reactor, limits, authenticator, pool, config_values=None,
              cluster=None, replication_status=None, access_log=None):
    """The site serving backend (a JobQueue) in reactor (access_log: a
    server.AccessLog, or None)."""
    context = {"dispatcher": methods.Dispatcher(backend, config_values or {}, cluster),
               "cluster": cluster, "config_values": config_values or {},
               "metrics": metrics.registry(backend, replication_status)}
    site = HttpSite(backend, reactor, limits, authenticator, pool, context, access_log)
    site.add_routes(routes())
    return site
