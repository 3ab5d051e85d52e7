#!/usr/bin/env python3
"""Fault-injection proxy in front of the lab's moto server.

usage: faults.py LISTEN_PORT MOTO_PORT

Every request is forwarded to moto unchanged, unless a rule set by the tests
says otherwise. moto changes state instantly and never fails on its own, so
this is how kiln's tests make a call fail, throttle, hang or lose its answer.

Control API (on the same port, JSON):
  POST   /__faults          a rule or a list of rules   -> {"ids": [...]}
  GET    /__faults          {"rules": [...], "seen": [{"action","region","service","fault"}...]}
  DELETE /__faults          remove every rule (held requests are released)
  DELETE /__faults/ID       remove one rule (its held requests are released)
  POST   /__faults/release  release every held request (they go on to moto)

A rule:
  {"action": "RunInstances",      # the API action ("*": any); S3 actions are
                                  # derived from method and query (UploadPart...)
   "region": "us-west-2",         # optional: only requests signed for this region
   "bucket": "b1",                # optional: only S3 requests for this bucket
   "mode": "error",               # error | throttle | hold | drop | lose_answer | delay
   "status": 500, "code": "InternalError", "message": "...",   # for error
   "seconds": 2.0,                # for delay (and hold: release after this long)
   "after": 0,                    # let this many matching calls through first
   "times": 1}                    # how many calls the rule applies to (0: all)

Modes:
  error        answer status/code/message in the service's error format, moto never sees the call
  throttle     EC2/STS: 503 RequestLimitExceeded; S3: 503 SlowDown
  hold         hold the request until released (or `seconds`), then forward it
               (even if the client gave up: as a real cloud may carry out a
               request whose answer never arrived)
  drop         close the connection without an answer; moto never sees the call
  lose_answer  forward to moto (the call is carried out), then close without an answer
  delay        wait `seconds`, then forward
"""
import http.client
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_SCOPE = re.compile(r"Credential=[^/]*/[0-9]{8}/([^/]+)/([^/]+)/")

LOCK = threading.Lock()
RULES = []  # dicts with "id", "hits", "matched", "_event"
SEEN = []
NEXT = [0]
MOTO = ("127.0.0.1", 5055)
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "content-length"}


def s3_action(method, path, query):
    parts = [p for p in path.split("/") if p]
    has_key = len(parts) > 1
    q = set(query)
    if method == "PUT":
        if has_key:
            return "UploadPart" if "partNumber" in q else "PutObject"
        return "CreateBucket"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in q else "PostObject"
    if method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if has_key:
            return "ListParts" if "uploadId" in q else "GetObject"
        return "ListMultipartUploads" if "uploads" in q else "ListObjects"
    return method


def error_body(service, code, message):
    rid = str(uuid.uuid4())
    if service == "s3":
        return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message>"
                "<RequestId>%s</RequestId></Error>" % (code, message, rid)), rid
    if service == "sts":
        return ("<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                "<RequestId>%s</RequestId></ErrorResponse>" % (code, message, rid)), rid
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>%s</Code>"
            "<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>" % (code, message, rid)), rid


def public(r):
    return {k: v for k, v in r.items() if not k.startswith("_")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the call log is moto's
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _control(self, body):
        path = self.path.split("?")[0]
        with LOCK:
            if self.command == "GET":
                return self._json(200, {"rules": [public(r) for r in RULES], "seen": SEEN[-2000:]})
            if self.command == "POST" and path == "/__faults/release":
                for r in RULES:
                    r["_event"].set()
                return self._json(200, {"released": True})
            if self.command == "POST":
                new = json.loads(body or b"[]")
                new = new if isinstance(new, list) else [new]
                ids = []
                for r in new:
                    NEXT[0] += 1
                    r = dict(r, id=NEXT[0], hits=0, matched=0, held=0, _event=threading.Event())
                    r.setdefault("mode", "error")
                    r.setdefault("times", 1)
                    r.setdefault("after", 0)
                    RULES.append(r)
                    ids.append(r["id"])
                return self._json(200, {"ids": ids})
            if self.command == "DELETE":
                rid = path[len("/__faults/"):] if path.startswith("/__faults/") else ""
                keep = []
                for r in RULES:
                    if rid and str(r["id"]) != rid:
                        keep.append(r)
                    else:
                        r["_event"].set()
                RULES[:] = keep
                return self._json(200, {"rules": len(RULES)})
        return self._json(404, {"error": "unknown control path"})

    def _classify(self, body):
        m = _SCOPE.search(self.headers.get("Authorization", "") or "")
        region, service = (m.group(1), m.group(2)) if m else (None, None)
        u = urlsplit(self.path)
        if service == "s3" or (service is None and self.command != "POST"):
            q = parse_qs(u.query, keep_blank_values=True)
            parts = [p for p in u.path.split("/") if p]
            return "s3", region, s3_action(self.command, u.path, q), (parts[0] if parts else None)
        form = parse_qs(body.decode("utf-8", "replace")) if body else {}
        if not form:
            form = parse_qs(u.query)
        return service or "ec2", region, (form.get("Action") or ["?"])[0], None

    def _pick(self, service, region, action, bucket):
        with LOCK:
            for r in RULES:
                if r.get("action", "*") not in ("*", action):
                    continue
                if r.get("region") and r["region"] != region:
                    continue
                if r.get("bucket") and r["bucket"] != bucket:
                    continue
                if r.get("service") and r["service"] != service:
                    continue
                r["matched"] += 1
                if r["matched"] <= r["after"]:
                    continue
                if r["times"] and r["hits"] >= r["times"]:
                    continue
                r["hits"] += 1
                return r
        return None

    def _forward(self, body):
        conn = http.client.HTTPConnection(*MOTO, timeout=600)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        rheaders = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
        if self.command == "HEAD":  # no body: keep the object's length
            rheaders += [(k, v) for k, v in resp.getheaders() if k.lower() == "content-length"]
        conn.close()
        return resp.status, rheaders, data

    def _send(self, status, headers, data):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def _handle(self):
        body = self._body()
        if self.path.startswith("/__faults"):
            return self._control(body)
        service, region, action, bucket = self._classify(body)
        rule = self._pick(service, region, action, bucket)
        mode = rule["mode"] if rule else None
        with LOCK:
            SEEN.append({"action": action, "region": region, "service": service, "bucket": bucket,
                         "fault": mode, "rule": rule["id"] if rule else None, "t": time.time()})
        if mode in ("error", "throttle"):
            if mode == "throttle":
                code = "SlowDown" if service == "s3" else (rule.get("code") or "RequestLimitExceeded")
                status, message = rule.get("status", 503), rule.get("message", "Request limit exceeded.")
            else:
                code = rule.get("code", "InternalError")
                status, message = rule.get("status", 500), rule.get("message", "Injected by the lab's fault proxy")
            data, rid = error_body(service, code, message)
            hdrs = [("Content-Type", "text/xml"), ("x-amz-request-id", rid), ("x-amzn-RequestId", rid)]
            return self._send(status, hdrs, data.encode())
        if mode == "drop":
            return self._drop()
        if mode == "delay":
            time.sleep(float(rule.get("seconds", 1)))
        if mode == "hold":
            with LOCK:
                rule["held"] += 1
            rule["_event"].wait(float(rule["seconds"]) if rule.get("seconds") else None)
        status, headers, data = self._forward(body)
        if mode == "lose_answer":
            return self._drop()
        try:
            self._send(status, headers, data)
        except OSError:
            pass  # the client went away (e.g. it gave up on a held request)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5056
    globals()["MOTO"] = ("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 5055)
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
