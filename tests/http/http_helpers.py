"""Helpers of the HTTP tests: a jq-masterd with --http, a plain HTTP client, the OpenAPI check.

``HttpClient`` speaks HTTP/1.1 with the standard library (one keep-alive connection);
``check_schema`` validates an answer against the component of jqueue/http/openapi.json
that the endpoint's documentation names for its status, so that the document and the
server cannot drift apart.
"""

import http.client
import json
import os
import time

import jsonschema
from cluster_helpers import free_port

from jqueue.http import api

with open(api.OPENAPI_PATH, encoding="utf-8") as _stream:
    OPENAPI = json.load(_stream)


def start_http_daemon(factory, *args, port=None, **kwargs):
    """Start a jq-masterd serving HTTP on loopback; (daemon, HttpClient)."""
    port = port or free_port()
    daemon = factory(args=["--http", "127.0.0.1:%d" % port, *args], **kwargs)
    client = HttpClient(port)
    client.wait_ready()
    return daemon, client


class Answer:
    """An HTTP answer: status, headers (lower-case names), body bytes."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        return "<Answer %d %r>" % (self.status, self.body[:300])


class HttpClient:
    """A small HTTP/1.1 client on one keep-alive connection (reopened when closed)."""

    def __init__(self, port, host="127.0.0.1", headers=None):
        self.port, self.host = port, host
        self.headers = dict(headers or {})
        self._conn = None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, path, body=None, headers=None, timeout=30):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        all_headers = dict(self.headers, **(headers or {}))
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self._conn.request(method, path, body=body, headers=all_headers)
                response = self._conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
                continue
            headers = {}
            for name, value in response.getheaders():  # repeated ones joined (Set-Cookie)
                name = name.lower()
                headers[name] = headers[name] + ", " + value if name in headers else value
            answer = Answer(response.status, headers, data)
            if answer.headers.get("connection") == "close":
                self.close()
            return answer

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body=body, **kwargs)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get("/api/v1/info")
            except OSError:
                self.close()
                assert time.monotonic() < deadline, "the HTTP server did not answer"
                time.sleep(0.05)

    def wait_job(self, job_id, statuses=("canceled", "success", "error"), timeout=30):
        """Poll GET /api/v1/jobs/ID until its status is one of statuses; the job."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get("/api/v1/jobs/%d" % job_id).json()
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.05)


def schema_of(path, method, status):
    """The response schema the OpenAPI document gives for path (a template) and status."""
    operation = OPENAPI["paths"][path][method.lower()]
    response = operation["responses"][str(status)]
    content = response["content"]
    return content.get("application/json", next(iter(content.values())))["schema"]


def check_schema(answer, path, method):
    """Validate an answer against the document (and that its status is documented)."""
    schema = schema_of(path, method, answer.status)
    resolver_doc = dict(schema, components=OPENAPI["components"])
    jsonschema.validate(answer.json(), resolver_doc,
                        cls=jsonschema.Draft202012Validator)
    return answer


def token_file(tmp_path, **tokens):
    """A tokens file (mode 0600) of NAME TOKEN lines; its path as text."""
    path = tmp_path / "tokens"
    path.write_text("# test tokens\n" + "".join("%s %s\n" % item for item in tokens.items()))
    os.chmod(path, 0o600)
    return str(path)
