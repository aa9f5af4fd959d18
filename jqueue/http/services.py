"""The REST API's supervised services, ``/api/v1/services``.

Every endpoint is a LUXI service method (AddServices, ModifyService, RemoveService,
StartService, StopService, RestartService, QueryServices, ReadServiceLog) run through
the method table, so that jqctl service and HTTP check and answer alike. A service is
named in the path percent-encoded (names may hold a space); what it answers is
QueryServices' view (openapi.json's Service).
"""

import urllib.parse

from jqueue import constants
from jqueue.http import api
from jqueue.http.server import HttpError, Route, json_response

PREFIX = api.PREFIX + "/services"
_NAME = r"([^/]+)"
_ACTIONS = {"start": constants.LUXI_REQ_START_SERVICE,
            "stop": constants.LUXI_REQ_STOP_SERVICE,
            "restart": constants.LUXI_REQ_RESTART_SERVICE}


def routes():
    """The services' routes (see jqueue.http.server.Route)."""
    one = PREFIX + "/" + _NAME
    return [
        Route("GET", PREFIX, get_services),
        Route("POST", PREFIX, post_services, mutating=True),
        Route("GET", one, get_service),
        Route("PATCH", one, patch_service, mutating=True),
        Route("DELETE", one, delete_service, mutating=True),
        Route("POST", one + "/(start|stop|restart)", post_action, mutating=True),
        Route("GET", one + "/log", get_log),
    ]


def name_of(text):
    """A service's name from its path segment (percent-decoded)."""
    try:
        name = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "ParameterError", "a service name must be UTF-8") from None
    if not name:
        raise HttpError(400, "ParameterError", "empty service name")
    return name


def get_services(call):
    names = api.list_arg(call, "name")
    args = [names] if names else []
    return api.luxi(call, constants.LUXI_REQ_QUERY_SERVICES, args).addCallback(
        lambda views: json_response({"services": views}))


def get_service(call, text):
    return api.luxi(call, constants.LUXI_REQ_QUERY_SERVICES, [[name_of(text)]]).addCallback(
        lambda views: json_response(views[0]))


def post_services(call):
    """Add one service (a definition object) or several (``{"services": [...]}``, all or
    none); ``"start": true`` starts them at once. 201 and their views."""
    body = api.body_object(call)
    if "services" in body:
        api.only_keys(body, ("services", "start"))
        definitions = body["services"]
        if not isinstance(definitions, list) or not definitions:
            raise HttpError(400, "ParameterError", "services must be a non-empty list of "
                            "service definitions")
        start = body.get("start", False)
    else:
        start = body.get("start", False)
        definitions = [{key: value for key, value in body.items() if key != "start"}]
    if not isinstance(start, bool):
        raise HttpError(400, "ParameterError", "start must be true or false")
    added = api.luxi(call, constants.LUXI_REQ_ADD_SERVICES, [definitions, {"start": start}])

    def created(views):
        headers = {}
        if len(views) == 1:
            location = "%s/%s" % (PREFIX, urllib.parse.quote(views[0]["name"], safe=""))
            headers[b"Location"] = location.encode("ascii")
        return json_response({"services": views}, 201, headers)
    return added.addCallback(created)


def patch_service(call, text):
    changes = api.body_object(call)
    return api.luxi(call, constants.LUXI_REQ_MODIFY_SERVICE,
                    [name_of(text), changes]).addCallback(json_response)


def delete_service(call, text):
    name = name_of(text)
    return api.luxi(call, constants.LUXI_REQ_REMOVE_SERVICE, [name]).addCallback(
        lambda message: json_response({"name": name, "ok": True, "message": message}))


def post_action(call, text, action):
    name = name_of(text)
    api.only_keys(api.body_object(call, required=False), ())
    return api.luxi(call, _ACTIONS[action], [name]).addCallback(
        lambda answer: json_response({"name": name, "ok": True, "message": answer[1]}))


def get_log(call, text):
    return api.read_log(call, constants.LUXI_REQ_READ_SERVICE_LOG, name_of(text),
                        "read_service_log", "svclog")
