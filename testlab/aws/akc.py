#!/usr/bin/python3
# sshd AuthorizedKeysCommand for kiln's AWS lab.
# usage: akc.py MOTO_PORT LOCAL_ADDR
# Prints the public key of the key pair of the running moto instance whose
# private IP is LOCAL_ADDR (the address the client connected to), in any
# region (moto keeps one backend per region, chosen by the credential scope
# of the request's signature; moto does not check signatures).
import html, re, sys, urllib.parse, urllib.request

EP = "http://127.0.0.1:%s/" % sys.argv[1]
local_ip = sys.argv[2]


def ec2(region, params):
    params = dict(params, Version="2016-11-15")
    req = urllib.request.Request(EP, data=urllib.parse.urlencode(params).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "AWS4-HMAC-SHA256 Credential=lab/20200101/%s/ec2/aws4_request, SignedHeaders=host, Signature=0" % region})
    return urllib.request.urlopen(req, timeout=5).read().decode()


regions = re.findall(r"<regionName>([^<]+)</regionName>", ec2("us-east-1", {"Action": "DescribeRegions"}))
first = ["us-east-1", "eu-west-1", "us-west-2"]  # asked first: the regions tests use most
for region in first + [r for r in regions if r not in first]:
    x = ec2(region, {"Action": "DescribeInstances", "Filter.1.Name": "private-ip-address", "Filter.1.Value.1": local_ip,
                     "Filter.2.Name": "instance-state-name", "Filter.2.Value.1": "running"})
    for key in sorted(set(re.findall(r"<keyName>([^<]+)</keyName>", x))):
        k = ec2(region, {"Action": "DescribeKeyPairs", "KeyName.1": key, "IncludePublicKey": "true"})
        for pk in re.findall(r"<publicKey>([^<]+)</publicKey>", k):
            print(html.unescape(pk).strip())
    if "<instanceId>" in x:
        break  # an address belongs to one running instance
