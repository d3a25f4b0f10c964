# Schemathesis hooks of Tests/suites/api-contract.sh: keep the run bounded and the daemon under test usable.
#  - GET /v1/events: never `watch` (the answer never ends by design) and long polls of at most 1 s.
#  - PUT /v1/site: always a dry run (a generated site must not reconfigure the daemon under test).
#  - Path parameters naming things: two cases in three use a name the daemon under test has (the network
#    "default", the storage plugin "local", ...), so that generated requests reach the handlers instead of a 404.
#    Chosen by a checksum of the generated value, so that a seed still gives the same run. Two exceptions keep the
#    site under test whole: a DELETE of a pool never names the network's "default" pool, and only "hello" is ever
#    disabled (a disabled network or storage plugin answers 503 by design, which would end testing its routes).
import zlib

import schemathesis

SITE_PLUGINS = ("default", "local", "stateful")
KNOWN = {"net": "default", "plugin": "local", "kind": "App", "pool": "default", "app": "web", "ordinal": "0"}


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@schemathesis.hook
def map_case(context, case):
    op = case.operation
    if op.method.upper() == "GET" and op.path == "/v1/events" and case.query:
        q = dict(case.query)
        if "watch" in q:
            q["watch"] = "false"
        w = _number(q.get("wait"))
        if w is not None and w > 1:
            q["wait"] = 1
        case.query = q
    if case.path_parameters:
        p = dict(case.path_parameters)
        for k, v in p.items():
            known = KNOWN.get(k)
            if k == "name":
                known = "hello" if op.path.startswith("/v1/plugins/") else "n1" if op.path.startswith("/v1/nodes/") else "web"
            if k == "pool" and op.method.upper() == "DELETE":
                known = None
            if known is not None and zlib.crc32(repr(v).encode()) % 3 != 0:
                p[k] = known
            if k == "name" and op.path == "/v1/plugins/{name}/disable" and p[k] in SITE_PLUGINS:
                p[k] = "hello"
        case.path_parameters = p
    if op.method.upper() == "PUT" and op.path == "/v1/site":
        q = dict(case.query or {})
        q["dryRun"] = "true"
        case.query = q
    return case


# GET /v1/networks/{net}/status is a readiness probe (what CNI STATUS asks): a network that cannot allocate answers
# 503 or 507 by design, with the plugin's reason, as GET /healthz answers 503 for a stopped store. Those answers
# are documented; any other 5xx there still fails.
@schemathesis.hook
def filter_failure(context, failure, case, response):
    op = case.operation
    if (op.method.upper() == "GET" and op.path == "/v1/networks/{net}/status" and response.status_code in (503, 507)
            and type(failure).__name__ == "ServerError"):
        try:
            status = (response.json().get("details") or {}).get("status")
        except Exception:
            return True
        if status in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
            return False
    return True
