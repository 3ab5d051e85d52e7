#!/usr/bin/env python3
"""kiln's AWS lab: moto's server with what moto 5.2.5 lacks for kiln's tests.

usage: lab.py PORT     -> moto_server on 127.0.0.1:PORT

Added to moto (each as AWS documents it):
- EC2 ImportImage / DescribeImportImageTasks / ImportSnapshot /
  DescribeImportSnapshotTasks / CancelImportTask. A task advances one step
  per Describe call: active/pending -> active/converting -> active/preparing
  ami -> completed (a real moto AMI and snapshot are made then). It ends
  `deleted` with a "ClientError: ..." message when the S3 object is missing
  or its first bytes are b"FAIL". ImportImage honours ClientToken (the same
  token gives the same task) and DescribeImportImageTasks the `tag:KEY`,
  `tag-key` and `task-state` filters.
- RunInstances honours ClientToken (idempotent: the same token returns the
  same reservation, as EC2 does), and DescribeInstances the `client-token`
  filter (moto answers 500 to it).
- LAB_CALL_LOG=FILE: one JSON line per API call (EC2, STS and S3): action,
  region, parameters (S3: bucket, key and query).
"""
import json
import os
import random
import re
import sys
import threading

from moto.core.responses import ActionResult, BaseResponse
from moto.ec2 import utils as ec2_utils
from moto.ec2.responses import EC2Response
from moto.s3.models import s3_backends
from moto.s3.responses import S3Response

_LOCK = threading.Lock()
_TASKS = {}  # (account, region) -> {task_id: dict}
_TOKENS = {}  # (account, region, kind, token) -> id
_STEPS = [("active", "pending", "2"), ("active", "converting", "28"),
          ("active", "preparing ami", "85"), ("completed", "", "")]


def _tasks(resp):
    return _TASKS.setdefault((resp.current_account, resp.region), {})


def _s3_check(account, bucket, key):
    try:
        obj = s3_backends[account]["aws"].get_object(bucket, key)
    except Exception:
        obj = None
    if obj is None:
        return None, "ClientError: Unable to read S3 object s3://%s/%s" % (bucket, key)
    if obj.value[:4] == b"FAIL":
        return None, "ClientError: Unknown OS / Missing OS files."
    return obj.size, None


def _new_snapshot(ec2, size_gb, desc):
    vol = ec2.create_volume(size=size_gb, zone_name=ec2.region_name + "a")
    snap = ec2.create_snapshot(vol.id, desc)
    ec2.delete_volume(vol.id)
    return snap


def _advance(resp, t):
    if t["Status"] in ("completed", "deleted"):
        return
    if t.get("_error"):
        t.update(Status="deleted", StatusMessage=t.pop("_error"))
        t.pop("Progress", None)
        return
    t["_step"] += 1
    st, msg, prog = _STEPS[t["_step"]]
    t["Status"] = st
    if msg:
        t["StatusMessage"], t["Progress"] = msg, prog
    else:
        t.pop("StatusMessage", None)
        t.pop("Progress", None)
    if st == "completed":
        ec2 = resp.ec2_backend
        if t["_kind"] == "image":
            ami = ec2.register_image(name=t["ImportTaskId"], description=t.get("Description"))
            ami.virtualization_type = "hvm"
            ami.architecture = t.get("Architecture", "x86_64")
            t["ImageId"] = ami.id
            for d in t["SnapshotDetails"]:
                d["SnapshotId"] = ami.ebs_snapshot.id
                d["Status"] = "completed"
        else:
            snap = _new_snapshot(ec2, 8, "Created by AWS-VMImport service for " + t["ImportTaskId"])
            t["SnapshotTaskDetail"].update(SnapshotId=snap.id, Status="completed")


def _public(t):
    return {k: v for k, v in t.items() if not k.startswith("_")}


def import_image(self):
    self.error_on_dryrun()
    token = self._get_param("ClientToken")
    with _LOCK:
        if token:
            tid = _TOKENS.get((self.current_account, self.region, "import-image", token))
            if tid:
                return ActionResult(_public(_tasks(self)[tid]))
    containers = self._get_param("DiskContainers", []) or []
    tid = "import-ami-%017x" % random.getrandbits(68)
    details, err = [], None
    for c in containers:
        ub = c.get("UserBucket") or {}
        size, e = _s3_check(self.current_account, ub.get("S3Bucket"), ub.get("S3Key"))
        err = err or e
        details.append({"DiskImageSize": float(size or 0), "Format": (c.get("Format") or "").upper(),
                        "UserBucket": ub, "Status": "active"})
    t = {"ImportTaskId": tid, "Status": "active", "StatusMessage": "pending", "Progress": "2",
         "Description": self._get_param("Description"), "LicenseType": self._get_param("LicenseType") or "AWS",
         "Architecture": self._get_param("Architecture") or "x86_64", "Platform": self._get_param("Platform") or "Linux",
         "SnapshotDetails": details, "_kind": "image", "_step": 0, "_error": err}
    if self._get_param("RoleName"):
        t["_role"] = self._get_param("RoleName")
    tags = [tag for spec in (self._get_param("TagSpecifications", []) or []) for tag in spec.get("Tags", [])]
    if tags:
        t["Tags"] = tags
    with _LOCK:
        _tasks(self)[tid] = t
        if token:
            _TOKENS[(self.current_account, self.region, "import-image", token)] = tid
        return ActionResult(_public(t))


def import_snapshot(self):
    self.error_on_dryrun()
    c = self._get_param("DiskContainer", {}) or {}
    ub = c.get("UserBucket") or {}
    size, err = _s3_check(self.current_account, ub.get("S3Bucket"), ub.get("S3Key"))
    tid = "import-snap-%017x" % random.getrandbits(68)
    t = {"ImportTaskId": tid, "Description": self._get_param("Description"), "Status": "active", "_kind": "snapshot",
         "_step": 0, "_error": err,
         "SnapshotTaskDetail": {"DiskImageSize": float(size or 0), "Format": (c.get("Format") or "").upper(),
                                "UserBucket": ub, "Status": "active", "StatusMessage": "pending", "Progress": "2"}}
    with _LOCK:
        _tasks(self)[tid] = t
        return ActionResult({"ImportTaskId": tid, "Description": t["Description"], "SnapshotTaskDetail": t["SnapshotTaskDetail"]})


def _task_matches(t, filters):
    tags = {x.get("Key"): x.get("Value") for x in t.get("Tags", [])}
    for f in filters:
        name, values = f.get("Name", ""), f.get("Values", []) or []
        if name == "task-state":
            ok = t["Status"] in values
        elif name == "tag-key":
            ok = any(v in tags for v in values)
        elif name.startswith("tag:"):
            ok = tags.get(name[4:]) in values
        else:
            ok = True
        if not ok:
            return False
    return True


def _describe(self, kind, out_key):
    ids = self._get_param("ImportTaskIds", []) or []
    filters = self._get_param("Filters", []) or []
    with _LOCK:
        res = []
        for tid, t in _tasks(self).items():
            if t["_kind"] != kind or (ids and tid not in ids):
                continue
            _advance(self, t)
            if not _task_matches(t, filters):
                continue
            if kind == "snapshot":  # status lives inside SnapshotTaskDetail
                d = t["SnapshotTaskDetail"]
                d["Status"] = t["Status"]
                if "StatusMessage" in t:
                    d["StatusMessage"] = t["StatusMessage"]
                else:
                    d.pop("StatusMessage", None)
                d.pop("Progress", None) if t["Status"] != "active" else d.update(Progress=t.get("Progress", "2"))
                res.append({"ImportTaskId": tid, "Description": t["Description"], "SnapshotTaskDetail": d})
            else:
                res.append(_public(t))
        return ActionResult({out_key: res})


def describe_import_image_tasks(self):
    return _describe(self, "image", "ImportImageTasks")


def describe_import_snapshot_tasks(self):
    return _describe(self, "snapshot", "ImportSnapshotTasks")


def cancel_import_task(self):
    tid = self._get_param("ImportTaskId")
    with _LOCK:
        t = _tasks(self).get(tid)
        prev = t["Status"] if t else None
        if t and t["Status"] not in ("completed", "deleted"):
            t.update(Status="deleted", StatusMessage="User initiated task cancelation")
            t.pop("_error", None)
        return ActionResult({"ImportTaskId": tid, "PreviousState": prev, "State": "deleted"})


for _f in (import_image, import_snapshot, describe_import_image_tasks,
           describe_import_snapshot_tasks, cancel_import_task):
    setattr(EC2Response, _f.__name__, _f)

# RunInstances with a ClientToken is idempotent in EC2; moto makes new instances.
ec2_utils.filter_dict_attribute_mapping["client-token"] = "client_token"
_orig_run_instances = EC2Response.run_instances


def _run_instances(self):
    token = self._get_param("ClientToken")
    if token:
        with _LOCK:
            for r in self.ec2_backend.reservations.values():
                if any(getattr(i, "client_token", None) == token for i in r.instances):
                    return ActionResult(r)
    return _orig_run_instances(self)


EC2Response.run_instances = _run_instances


# ---- call log
_CALL_LOG = os.environ.get("LAB_CALL_LOG")
_SCOPE = re.compile(r"Credential=[^/]*/[0-9]{8}/([^/]+)/")


def _log(rec):
    try:
        with _LOCK, open(_CALL_LOG, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
    except Exception:
        pass


def s3_action(method, path, query):
    """The S3 API action of a path-style request (bucket in the path)."""
    parts = [p for p in path.split("/") if p]
    has_key = len(parts) > 1
    q = set(query)
    if method == "PUT":
        if has_key:
            return "UploadPart" if "partNumber" in q else "PutObject"
        return "CreateBucket" if not q else "PutBucket" + (sorted(q)[0].capitalize())
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        return "PostObject"
    if method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if not parts:
            return "ListBuckets"
        if has_key:
            return "ListParts" if "uploadId" in q else "GetObject"
        if "uploads" in q:
            return "ListMultipartUploads"
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return method


if _CALL_LOG:
    _orig_call_action = BaseResponse.call_action

    def _logged_call_action(self):
        try:
            _log({"region": self.region, "action": self._get_action(),
                  "params": {k: v for k, v in (self.querystring or {}).items() if k not in ("Action", "Version")}})
        except Exception:
            pass
        return _orig_call_action(self)

    BaseResponse.call_action = _logged_call_action

    def _s3_logged(orig):
        def wrapper(self, request, full_url, headers):
            try:
                from urllib.parse import parse_qs, urlsplit
                u = urlsplit(full_url)
                q = parse_qs(u.query, keep_blank_values=True)
                m = _SCOPE.search(request.headers.get("Authorization", "") or "")
                parts = [p for p in u.path.split("/") if p]
                params = {"Bucket": parts[0] if parts else None}
                if len(parts) > 1:
                    params["Key"] = "/".join(parts[1:])
                params.update({k: v for k, v in q.items() if k not in ("X-Amz-Signature",)})
                _log({"region": m.group(1) if m else None, "action": s3_action(request.method, u.path, q),
                      "service": "s3", "params": params})
            except Exception:
                pass
            return orig(self, request, full_url, headers)
        return wrapper

    S3Response.key_response = _s3_logged(S3Response.key_response)
    S3Response.bucket_response = _s3_logged(S3Response.bucket_response)

if __name__ == "__main__":
    from moto.server import main
    main(["-H", "127.0.0.1", "-p", sys.argv[1] if len(sys.argv) > 1 else "5055"])
