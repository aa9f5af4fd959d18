"""The HTTP protocol of jq-masterd: a REST API, Coalition v3's API, the web page, metrics.

``server`` is the Twisted web server (bounded requests, authentication, CSRF, routing,
errors as JSON); ``api`` serves ``/api/v1`` (jobs, logs, actions, nodes, Server-Sent
Events), ``coalition`` serves Coalition's ``/json/*`` and ``/xmlrpc/addjob``, ``jobs``
renders job rows for both, ``auth`` checks tokens, client certificates and CSRF tokens,
``metrics`` exposes Prometheus metrics; ``static/`` holds the page's files and
``openapi.json`` the API's description.

Like luxi/, it serves a JobQueue-like backend handed to it (through LUXI's method checks:
jqueue.luxi.methods), so it may import the vocabulary, the job model and luxi/, never the
queue's internals, the cluster or the daemons.
"""
