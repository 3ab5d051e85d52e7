//! `amazon-ebs` through the `kiln` binary against the AWS lab
//! (testlab/aws: moto behind the fault proxy, an sshd that lets in the key
//! pair of "the instance" with that private IP): the seed's `aws.json`
//! builds and leaves only its AMI; Packer 1.6.6 and kiln make the same
//! calls for the same template; a launch that fails or loses its answer,
//! a `CreateImage` that loses its answer, SSH never reachable, a real
//! SIGINT while `RunInstances` or `CreateImage` is held: each leaves no
//! instance running, no security group, no key pair, no AMI, no snapshot.
//! Each test has a region of its own; the tests that log in over SSH take
//! turns (the lab's sshd listens on 127.0.3.4-19 only).
//!
//! Needs a running lab: `testlab/aws/with-lab.sh ROOT cargo test ... --
//! --include-ignored` (scripts/test.sh does this).
#[path = "../../kiln-aws/tests/common/mod.rs"]
mod common;

use common::Lab;
use kiln_aws::Aws;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tests that SSH into "the instance" take turns.
static SSH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kiln_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(dir)
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "kiln-lab")
        .env("AWS_SECRET_ACCESS_KEY", "kiln-lab-secret")
        .env("AWS_POLL_DELAY_SECONDS", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION");
    c
}

fn kiln(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = kiln_cmd(dir, args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// A VPC and a subnet of `cidr` in `aws`'s region (127.0.3.0/24: "the
/// instances" answer SSH there; anything else: nothing answers).
async fn subnet(aws: &Aws, cidr: &str) -> String {
    let b = aws
        .ec2_call(
            "CreateVpc",
            vec![("CidrBlock".into(), cidr.into())],
            kiln_aws::client::Retry::Idempotent,
        )
        .await
        .unwrap();
    let vpc = between(&b, "<vpcId>", "</vpcId>");
    let b = aws
        .ec2_call(
            "CreateSubnet",
            vec![("VpcId".into(), vpc), ("CidrBlock".into(), cidr.into())],
            kiln_aws::client::Retry::Idempotent,
        )
        .await
        .unwrap();
    between(&b, "<subnetId>", "</subnetId>")
}

fn between(s: &str, a: &str, b: &str) -> String {
    let i = s.find(a).unwrap_or_else(|| panic!("no {a} in {s}")) + a.len();
    s[i..i + s[i..].find(b).unwrap()].to_string()
}

/// Remove the proxy's rules for `regions` (a test that failed earlier
/// against the same lab may have left some).
async fn clear_faults(lab: &Lab, regions: &[&str]) {
    let http = kiln_aws::reqwest::Client::new();
    let body = http
        .get(format!("{}/__faults", lab.proxy))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| regions.iter().any(|g| r["region"] == json!(g)))
        .filter_map(|r| r["id"].as_u64())
        .collect();
    lab.remove_faults(&ids).await;
}

/// An amazon-ebs builder for the lab in `region`.
fn ebs(lab: &Lab, region: &str, subnet: &str, extra: Value) -> Value {
    let mut b = json!({
        "type": "amazon-ebs",
        "region": region,
        "custom_endpoint_ec2": lab.proxy,
        "skip_metadata_api_check": true,
        "source_ami_filter": {"filters": {"name": "lab/base-*"}, "owners": ["099720109477"], "most_recent": true},
        "instance_type": "t3.nano",
        "subnet_id": subnet,
        "ssh_interface": "private_ip",
        "ssh_username": lab.ssh_user,
        "ami_name": "kiln-ebs-{{timestamp}}",
        "max_retries": 2
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// What the lab holds in `region` that a build may leave: instances not
/// terminated, security groups but the VPCs' default ones, key pairs, this
/// account's AMIs, snapshots not in `snaps_before`.
async fn leftovers(aws: &Aws, snaps_before: &BTreeSet<String>) -> Vec<String> {
    let mut left = holdings(aws).await;
    left.retain(|l| {
        !l.strip_prefix("snapshot ")
            .is_some_and(|s| snaps_before.contains(s))
    });
    left
}

/// Everything [`leftovers`] looks at (snapshots included).
async fn holdings(aws: &Aws) -> Vec<String> {
    let ec2 = aws.ec2();
    let mut left = Vec::new();
    for i in ec2.describe_instances(&[], &[]).await.unwrap() {
        if i.state != "terminated" {
            left.push(format!("instance {} {}", i.id, i.state));
        }
    }
    for g in ec2.describe_security_groups(&[], &[]).await.unwrap() {
        if g.name != "default" {
            left.push(format!("security group {} {}", g.id, g.name));
        }
    }
    for k in ec2.describe_key_pairs(&[], &[]).await.unwrap() {
        left.push(format!("key pair {}", k.name));
    }
    for i in ec2
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap()
    {
        left.push(format!("AMI {} {}", i.id, i.name));
    }
    for s in snapshots(aws).await {
        left.push(format!("snapshot {s}"));
    }
    left
}

async fn snapshots(aws: &Aws) -> BTreeSet<String> {
    aws.ec2()
        .describe_snapshots(&[], &[], &[])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// A directory like the seed's: `aws.json`, harmless stand-ins for its
/// scripts ("the instance" of the lab is this machine) and its data.
fn seed_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = repo().join("testlab/openstack/seed");
    let o = Command::new("cp")
        .arg("-r")
        .arg(src.join("scripts"))
        .arg(src.join("data"))
        .arg(d.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::write(
        d.path().join("scripts/prepare_data.sh"),
        "#!/bin/bash\necho \"prepare_data.sh: running as $(id -un)\"\n",
    )
    .unwrap();
    std::fs::copy(
        repo().join("examples/seed/aws.json"),
        d.path().join("aws.json"),
    )
    .unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn seed_aws_template_builds_and_leaves_only_its_ami() {
    let lab = Lab::get();
    let region = "ap-southeast-2";
    let aws = lab.aws(region).await;
    let sub = subnet(&aws, "127.0.3.0/24").await;
    let snaps = snapshots(&aws).await;
    let d = seed_dir();
    let stash = d.path().join("stash");
    std::fs::create_dir(&stash).unwrap();
    std::fs::set_permissions(&stash, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let vars = [
        format!("region={region}"),
        format!("custom_endpoint_ec2={}", lab.proxy),
        format!("subnet_id={sub}"),
        "ssh_interface=private_ip".into(),
        format!("ssh_username={}", lab.ssh_user),
        "source_ami_name=lab/base-*".into(),
        format!("stash={}", stash.display()),
    ];
    let mut args = vec!["build", "-color=false"];
    for v in &vars {
        args.extend(["-var", v.as_str()]);
    }
    args.push("aws.json");
    let _ssh = SSH.lock().await;
    let t0 = Instant::now();
    let (ok, text) = kiln(d.path(), &args);
    eprintln!("seed build on the lab: {:.1} s", t0.elapsed().as_secs_f64());
    drop(_ssh);
    assert!(ok, "{text}");
    for line in [
        "==> seed: Prevalidating AMI Name: seed ",
        "    seed: Found Image ID: ami-",
        "==> seed: Creating temporary keypair: packer_",
        "==> seed: Authorizing access to port 22 from [0.0.0.0/0] in the temporary security groups...",
        "==> seed: Launching a source AWS instance...",
        "    seed: update.sh: running as root",
        "    seed: prepare_data.sh: running as root",
        "==> seed: Stopping the source instance...",
        "==> seed: Creating AMI seed ",
        "==> seed: Terminating the source AWS instance...",
        "==> seed: Deleting temporary security group...",
        "==> seed: Deleting temporary keypair...",
        &format!("--> seed: AMIs were created:\n{region}: ami-"),
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        stash.join("README").exists(),
        "the data was uploaded: {text}"
    );
    // The newest of the two lab images, and only the AMI is left.
    let calls = lab.calls(region);
    let run = calls.iter().find(|(a, _)| a == "RunInstances").unwrap();
    let base = aws
        .ec2()
        .describe_images(&[], &["099720109477".into()], &[])
        .await
        .unwrap()
        .into_iter()
        .max_by(|a, b| a.creation_date.cmp(&b.creation_date))
        .unwrap();
    assert_eq!(run.1["ImageId"], json!([base.id]));
    assert_eq!(run.1["InstanceType"], json!(["t3.nano"]));
    let left = leftovers(&aws, &snaps).await;
    let amis = aws
        .ec2()
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap();
    assert_eq!(amis.len(), 1, "{left:?}");
    let ami = &amis[0];
    assert!(ami.name.starts_with("seed "), "{ami:?}");
    assert_eq!(ami.tags.get("Built-By").map(String::as_str), Some("kiln"));
    let mut expect = vec![format!("AMI {} {}", ami.id, ami.name)];
    expect.extend(ami.snapshot_ids().iter().map(|s| format!("snapshot {s}")));
    assert_eq!(left, expect, "{text}");
    aws.ec2().destroy_image(&ami.id).await.unwrap();
    assert_eq!(leftovers(&aws, &snaps).await, Vec::<String>::new());
}

/// Ids, names, tokens and timestamps made comparable.
fn normalize(v: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let rest = &v[i..];
        let id = [
            "ami-", "snap-", "sg-", "i-", "vpc-", "subnet-", "vol-", "packer_",
        ]
        .into_iter()
        .find(|p| rest.starts_with(p) && !out.ends_with(|c: char| c.is_ascii_alphanumeric()));
        if let Some(p) = id {
            let n = rest[p.len()..]
                .bytes()
                .take_while(|c| c.is_ascii_hexdigit() || *c == b'-')
                .count();
            if n >= 8 {
                out.push_str(p);
                out.push('?');
                i += p.len() + n;
                continue;
            }
        }
        let digits = rest.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits >= 9 {
            out.push('T');
            i += digits;
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The calls that change something, from line `from` to `to` of the call
/// log, normalized: `regions` renamed, empty values, client tokens and the
/// key pair's material left out (Packer asks EC2 for a key pair, kiln
/// imports the public half of one it made), tags as sets.
fn changes(lab: &Lab, from: usize, to: usize, regions: &[(&str, &str)]) -> Vec<String> {
    let log = std::fs::read_to_string(&lab.call_log).unwrap();
    let calls: Vec<String> = log
        .lines()
        .skip(from)
        .take(to - from)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let a = v["action"].as_str().unwrap_or("");
            !a.starts_with("Describe") && regions.iter().any(|(r, _)| v["region"] == json!(r))
        })
        .map(|v| {
            let mut a = v["action"].as_str().unwrap().to_string();
            if a == "CreateKeyPair" || a == "ImportKeyPair" {
                a = "CreateKeyPair|ImportKeyPair".into();
            }
            let o = v["params"].as_object().unwrap();
            let mut kv: Vec<String> = o
                .iter()
                .filter(|(k, v)| {
                    let skip = matches!(
                        k.as_str(),
                        "Action" | "Version" | "ClientToken" | "PublicKeyMaterial"
                    ) || k.contains(".Tag.")
                        || (a == "CreateTags" && k.starts_with("Tag."))
                        || **v == json!([""]);
                    !skip
                })
                .map(|(k, v)| {
                    let mut s = normalize(&format!("{k}={v}"));
                    for (r, name) in regions {
                        s = s.replace(r, name);
                    }
                    // The subnet's availability zone: moto picks one.
                    for z in 'a'..='f' {
                        s = s.replace(&format!("REGION{z}"), "REGION?");
                    }
                    s
                })
                .collect();
            // Tags (Packer goes through Go maps: random order): as sets.
            for prefix in ["Tag.", "TagSpecification.1.Tag.", "TagSpecification.2.Tag."] {
                let mut tags: Vec<String> = (1..)
                    .map_while(|i| {
                        let k = o.get(&format!("{prefix}{i}.Key"))?;
                        Some(format!("{k}={}", o.get(&format!("{prefix}{i}.Value"))?))
                    })
                    .collect();
                if !tags.is_empty() {
                    tags.sort();
                    kv.push(format!("{prefix}*={tags:?}"));
                }
            }
            kv.sort();
            format!("{a} {}", kv.join(" "))
        })
        .collect();
    sort_runs(calls, |c| {
        c.starts_with("ModifyImageAttribute ")
            || c.starts_with("ModifySnapshotAttribute ")
            || c.starts_with("CreateTags ")
    })
}

/// Sort each run of consecutive items that `f` picks (Packer goes through
/// Go maps for them: their order is random).
fn sort_runs(v: Vec<String>, f: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for x in v {
        if f(&x) {
            run.push(x);
            continue;
        }
        run.sort();
        out.append(&mut run);
        out.push(x);
    }
    run.sort();
    out.append(&mut run);
    out
}

fn log_lines(lab: &Lab) -> usize {
    std::fs::read_to_string(&lab.call_log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Packer 1.6.6 as the oracle: the same amazon-ebs template (temporary key
/// pair and security group, SSH, a shell provisioner, a copy to another
/// region, description, launch and volume permissions, tags on the
/// instance, the AMI and the snapshots) through Packer and through kiln
/// against the lab: the calls that change something are the same, in the
/// same order, with the same parameters (but the key pair: Packer asks EC2
/// to make one, kiln imports its own public key); the messages too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn packer_and_kiln_make_the_same_ebs_calls() {
    let lab = Lab::get();
    let Some(packer) =
        kiln_testkit::require_tool("packer", "apt-get install packer (scripts/setup.sh)")
    else {
        return;
    };
    let copy = "af-south-1";
    let d = tempfile::tempdir().unwrap();
    let mut subnets = Vec::new();
    for region in ["ap-northeast-3", "ap-east-1"] {
        subnets.push(subnet(&lab.aws(region).await, "127.0.3.0/24").await);
    }
    let template = |region: &str, subnet: &str, endpoint: &str| {
        let mut b = ebs(
            &lab,
            region,
            subnet,
            json!({
                "ami_description": "from the lab", "ami_users": ["210987654321"], "ami_groups": ["all"],
                "snapshot_users": ["210987654321"], "ami_regions": [copy],
                "tags": {"Name": "oracle", "B": "2"}, "snapshot_tags": {"S": "t"},
                "run_tags": {"R": "1"}, "run_volume_tags": {"V": "1"},
                // Base64 already: sent as it is (Packer's rule).
                "user_data": "IyEvYmluL3NoCmVjaG8gaGkK",
                "launch_block_device_mappings": [{"device_name": "/dev/sdb", "volume_size": 2, "volume_type": "gp2", "delete_on_termination": true}]
            }),
        );
        b["custom_endpoint_ec2"] = json!(endpoint);
        b.as_object_mut().unwrap().remove("max_retries");
        json!({
            "builders": [b],
            "provisioners": [{"type": "shell", "inline": ["echo provisioned as $(id -un)"]}]
        })
        .to_string()
    };
    std::fs::write(
        d.path().join("packer.json"),
        template("ap-northeast-3", &subnets[0], &lab.endpoint),
    )
    .unwrap();
    std::fs::write(
        d.path().join("kiln.json"),
        template("ap-east-1", &subnets[1], &lab.endpoint),
    )
    .unwrap();
    let _ssh = SSH.lock().await;
    let l0 = log_lines(&lab);
    let t0 = Instant::now();
    let o = Command::new(packer)
        .current_dir(d.path())
        .args(["build", "-color=false", "packer.json"])
        .env("AWS_POLL_DELAY_SECONDS", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .env("AWS_ACCESS_KEY_ID", "kiln-lab")
        .env("AWS_SECRET_ACCESS_KEY", "kiln-lab-secret")
        .output()
        .unwrap();
    let packer_time = t0.elapsed();
    let ptext = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{ptext}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let l1 = log_lines(&lab);
    let t0 = Instant::now();
    let (ok, ktext) = kiln(d.path(), &["build", "-color=false", "kiln.json"]);
    let kiln_time = t0.elapsed();
    drop(_ssh);
    assert!(ok, "{ktext}");
    eprintln!(
        "amazon-ebs on the lab: Packer {:.1} s, kiln {:.1} s",
        packer_time.as_secs_f64(),
        kiln_time.as_secs_f64()
    );
    let l2 = log_lines(&lab);
    let p = changes(
        &lab,
        l0,
        l1,
        &[("ap-northeast-3", "REGION"), (copy, "COPY")],
    );
    let k = changes(&lab, l1, l2, &[("ap-east-1", "REGION"), (copy, "COPY")]);
    assert!(p.len() >= 15, "{p:#?}");
    assert_eq!(k, p, "kiln's calls (left) differ from Packer's (right)");
    // The same messages, in the same order (those both print).
    let lines = |t: &str| -> Vec<String> {
        let v = t
            .lines()
            .filter(|l| l.starts_with("==> amazon-ebs: ") || l.starts_with("    amazon-ebs: "))
            .map(|l| {
                normalize(
                    &l.replace("ap-northeast-3", "REGION")
                        .replace("ap-east-1", "REGION"),
                )
            })
            // Lines one of them prints and the other does not.
            .filter(|l| {
                !l.contains("Cleaning up any extra volumes")
                    && !l.contains("No volumes to clean up")
                    && !l.contains("SSH answered")
                    && !l.contains("Provisioning with shell script")
                    && !l.contains("Private IP")
                    && !l.contains("finished after")
                    && !l.contains("Running post-processor")
            })
            .collect();
        sort_runs(v, |l| {
            l.starts_with("    amazon-ebs: Adding tag: ")
                || l.starts_with("    amazon-ebs: Modifying: ")
                || l.contains("Modifying attributes on")
                || l.contains("Tagging snapshot")
                || l.contains("Adding tags to AMI")
                || l.contains("Creating AMI tags")
                || l.contains("Creating snapshot tags")
                || l.contains("Copying to: ")
                || l.contains("Waiting for all copies")
        })
    };
    assert_eq!(lines(&ktext), lines(&ptext));
    assert!(ktext.contains(&format!("--> amazon-ebs: AMIs were created:\n{copy}: ami-")));
    // Both left their two AMIs and nothing else.
    for region in ["ap-northeast-3", "ap-east-1"] {
        let aws = lab.aws(region).await;
        let left = leftovers(&aws, &BTreeSet::new()).await;
        assert!(
            left.iter()
                .all(|l| l.starts_with("AMI ") || l.starts_with("snapshot ")),
            "{region}: {left:?}"
        );
        for i in aws
            .ec2()
            .describe_images(&[], &["self".into()], &[])
            .await
            .unwrap()
        {
            aws.ec2().destroy_image(&i.id).await.unwrap();
        }
    }
    let aws = lab.aws(copy).await;
    for i in aws
        .ec2()
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap()
    {
        aws.ec2().destroy_image(&i.id).await.unwrap();
    }
}

/// Faults that end the build: each leaves nothing in its region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn failures_leave_nothing() {
    struct Case {
        region: &'static str,
        faults: Value,
        /// The instance's subnet (SSH answers on 127.0.3.0/24 only).
        cidr: &'static str,
        extra: Value,
        says: &'static [&'static str],
    }
    let cases = [
        // Refused: nothing made; the key pair and the group go.
        Case {
            region: "eu-south-2",
            faults: json!([{"action": "RunInstances", "mode": "error", "status": 400, "code": "InsufficientInstanceCapacity", "times": 0}]),
            cidr: "10.1.0.0/24",
            extra: json!({"communicator": "none"}),
            says: &[
                "Error launching source instance: ec2 RunInstances: InsufficientInstanceCapacity",
                "Deleting temporary security group...",
            ],
        },
        // Carried out, every answer lost: found by its client token.
        Case {
            region: "me-central-1",
            faults: json!([{"action": "RunInstances", "mode": "lose_answer", "times": 0}]),
            cidr: "10.2.0.0/24",
            extra: json!({"communicator": "none", "max_retries": 1}),
            says: &[
                "Error launching source instance",
                "Terminating the source AWS instance...",
                "Deleting temporary security group...",
            ],
        },
        // CreateImage carried out, its answer lost: found by its name,
        // deregistered, its snapshot deleted.
        Case {
            region: "il-central-1",
            faults: json!([{"action": "CreateImage", "mode": "lose_answer", "times": 0}]),
            cidr: "10.3.0.0/24",
            extra: json!({"communicator": "none"}),
            says: &[
                "Error creating AMI",
                "Deregistering the AMI and deleting associated snapshots because of cancellation, or error...",
                "Deregistered AMI id: ami-",
                "Terminating the source AWS instance...",
            ],
        },
        // A copy refused: the AMI in the build region and the copies go.
        Case {
            region: "ap-south-2",
            faults: json!([{"action": "CopyImage", "region": "ap-southeast-3", "mode": "error", "status": 400, "code": "InvalidParameterValue", "times": 0}]),
            cidr: "10.4.0.0/24",
            extra: json!({"communicator": "none", "ami_regions": ["ap-southeast-4", "ap-southeast-3"]}),
            says: &[
                "Error Copying AMI (ami-",
                "Deregistering the AMI copy and deleting its snapshots because of cancellation, or error...",
                "Deregistering the AMI and deleting associated snapshots because of cancellation, or error...",
            ],
        },
        // SSH never answers.
        Case {
            region: "eu-central-2",
            faults: json!([]),
            cidr: "10.5.0.0/24",
            extra: json!({"ssh_timeout": "3s"}),
            says: &[
                "Timeout waiting for SSH",
                "Terminating the source AWS instance...",
                "Deleting temporary security group...",
                "Deleting temporary keypair...",
            ],
        },
        // Several AMIs match and most_recent is not set: Packer's error.
        Case {
            region: "ca-west-1",
            faults: json!([]),
            cidr: "10.6.0.0/24",
            extra: json!({"communicator": "none", "source_ami_filter": {"filters": {"name": "lab/base-*"}, "owners": ["099720109477"]}}),
            says: &["Your query returned more than one result. Please try a more specific search, or set most_recent to true."],
        },
    ];
    let mut set = tokio::task::JoinSet::new();
    for c in cases {
        set.spawn(async move {
            let lab = &Lab::get();
            clear_faults(lab, &[c.region, "ap-southeast-3"]).await;
            let aws = lab.aws(c.region).await;
            let sub = subnet(&aws, c.cidr).await;
            let snaps = snapshots(&aws).await;
            // (What earlier runs against the same lab left is not this run's.)
            let held_before = holdings(&aws).await;
            let mut rules = c.faults.clone();
            for r in rules.as_array_mut().unwrap() {
                if r.get("region").is_none() {
                    r["region"] = json!(c.region);
                }
            }
            let mut before_copies = Vec::new();
            for r in c
                .extra
                .get("ami_regions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                before_copies.extend(holdings(&lab.aws(r.as_str().unwrap()).await).await);
            }
            let ids = if rules.as_array().unwrap().is_empty() {
                Vec::new()
            } else {
                lab.fault(rules).await
            };
            let d = tempfile::tempdir().unwrap();
            let t = json!({"builders": [ebs(lab, c.region, &sub, c.extra.clone())]});
            std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
            let dir = d.path().to_path_buf();
            let (ok, text) = tokio::task::spawn_blocking(move || {
                kiln(&dir, &["build", "-color=false", "t.json"])
            })
            .await
            .unwrap();
            lab.remove_faults(&ids).await;
            assert!(!ok, "{}: {text}", c.region);
            for s in c.says {
                assert!(text.contains(s), "{}: missing {s:?} in:\n{text}", c.region);
            }
            let mut left = leftovers(&aws, &snaps).await;
            left.retain(|l| !held_before.contains(l));
            if let Some(extra) = c.extra.get("ami_regions") {
                for r in extra.as_array().unwrap() {
                    let a = lab.aws(r.as_str().unwrap()).await;
                    left.extend(
                        leftovers(&a, &BTreeSet::new())
                            .await
                            .into_iter()
                            .filter(|l| !before_copies.contains(l)),
                    );
                }
            }
            assert_eq!(left, Vec::<String>::new(), "{}: {text}", c.region);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// `encrypt_boot`: the image is made under a random name, copied
/// encrypted (with `kms_key_id`) in its own region, and the intermediary
/// deregistered with its snapshot: one AMI is left, the encrypted copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn encrypt_boot_leaves_only_the_encrypted_copy() {
    let lab = Lab::get();
    // (Other tests use this region too: only what this build did counts.)
    let region = "eu-north-1";
    clear_faults(&lab, &[region]).await;
    let aws = lab.aws(region).await;
    let sub = subnet(&aws, "10.10.0.0/24").await;
    let before = holdings(&aws).await;
    let key = format!("arn:aws:kms:{region}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    let d = tempfile::tempdir().unwrap();
    let t = json!({"builders": [ebs(&lab, region, &sub, json!({
        "communicator": "none", "ami_name": "encrypted-{{timestamp}}", "encrypt_boot": true, "kms_key_id": key
    }))]});
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let l0 = log_lines(&lab);
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    assert!(ok, "{text}");
    let log = std::fs::read_to_string(&lab.call_log).unwrap();
    let calls: Vec<Value> = log
        .lines()
        .skip(l0)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["region"] == json!(region))
        .collect();
    let call = |a: &str| {
        calls
            .iter()
            .find(|v| v["action"] == json!(a))
            .unwrap_or_else(|| panic!("no {a}: {calls:?}"))["params"]
            .clone()
    };
    let tmp_name = call("CreateImage")["Name"][0].as_str().unwrap().to_string();
    assert_eq!(tmp_name.len(), 7, "a random intermediary name: {tmp_name}");
    let copy = call("CopyImage");
    assert_eq!(copy["Encrypted"], json!(["true"]));
    assert_eq!(copy["KmsKeyId"], json!([key]));
    assert_eq!(copy["SourceRegion"], json!([region]));
    let mut left = holdings(&aws).await;
    left.retain(|l| !before.contains(l));
    let amis: Vec<&String> = left.iter().filter(|l| l.starts_with("AMI ")).collect();
    assert_eq!(amis.len(), 1, "{left:?}");
    let ami = amis[0].split(' ').nth(1).unwrap().to_string();
    assert!(amis[0].contains(" encrypted-"), "{left:?}");
    assert!(
        text.contains(&format!(
            "--> amazon-ebs: AMIs were created:\n{region}: {ami}"
        )),
        "{text}"
    );
    aws.ec2().destroy_image(&ami).await.unwrap();
    let mut left = holdings(&aws).await;
    left.retain(|l| !before.contains(l));
    assert_eq!(left, Vec::<String>::new(), "{text}");
}

/// A real SIGINT while a create is held by the proxy: kiln waits for the
/// answer (released after the signal: carried out late), then undoes what
/// it made; exit 1, nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn sigint_during_a_create_leaves_nothing() {
    let lab = Lab::get();
    for (region, action, cidr) in [
        ("ap-southeast-5", "RunInstances", "10.7.0.0/24"),
        ("us-west-1", "CreateImage", "10.8.0.0/24"),
        ("ap-northeast-1", "CreateSecurityGroup", "10.9.0.0/24"),
    ] {
        clear_faults(&lab, &[region]).await;
        let aws = lab.aws(region).await;
        let sub = subnet(&aws, cidr).await;
        let snaps = snapshots(&aws).await;
        let held_before = holdings(&aws).await;
        let f = lab
            .fault(json!({"action": action, "region": region, "mode": "hold", "times": 0}))
            .await;
        let d = tempfile::tempdir().unwrap();
        let t = json!({"builders": [ebs(&lab, region, &sub, json!({"communicator": "none"}))]});
        std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
        let log = d.path().join("kiln.log");
        let mut c = kiln_cmd(d.path(), &["build", "-color=false", "t.json"]);
        c.stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        let held = |seen: Vec<(String, Option<String>)>| {
            seen.iter()
                .filter(|(a, m)| a == action && m.as_deref() == Some("hold"))
                .count()
        };
        // (The proxy remembers earlier runs against the same lab.)
        let before = held(lab.seen(region).await);
        let mut child = kiln_testkit::ProcessGuard::spawn(&mut c).unwrap();
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let start = Instant::now();
        while held(lab.seen(region).await) == before {
            assert!(
                child.try_wait().is_none(),
                "kiln ended before {action}:\n{}",
                read_log()
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{action} never came:\n{}",
                read_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let start = Instant::now();
        while !read_log().contains("Waiting for the answer to the") {
            assert!(start.elapsed() < Duration::from_secs(60), "{}", read_log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lab.remove_faults(&f).await; // the held call goes through, late
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "kiln did not stop:\n{}",
                read_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = read_log();
        assert_eq!(status.code(), Some(1), "{text}");
        assert!(
            text.contains("Deleting temporary security group..."),
            "{text}"
        );
        let mut left = leftovers(&aws, &snaps).await;
        left.retain(|l| !held_before.contains(l));
        assert_eq!(left, Vec::<String>::new(), "{action}: {text}");
    }
}

#[test]
fn validate_refuses_unsupported_and_bad_keys_by_name() {
    let d = tempfile::tempdir().unwrap();
    let t = r#"{
  "builders": [{"type": "amazon-ebs", "region": "us-east-1", "instance_type": "t3.nano",
    "source_ami_filter": {"filters": {"name": "x-*"}}, "spot_price": "auto", "tenancy": "dedicated",
    "ssh_interface": "session_manager", "shutdown_behavior": "halt", "ssh_username": "u",
    "temporary_security_group_source_cidrs": ["10.0.0.0/33"], "kms_key_id": "k", "ami_nmae": "x"}]
}"#;
    std::fs::write(d.path().join("t.json"), t).unwrap();
    let (ok, text) = kiln(d.path(), &["validate", "t.json"]);
    assert!(!ok);
    for m in [
        "`spot_price` is not supported by kiln's amazon-ebs builder",
        "`tenancy` is not supported by kiln's amazon-ebs builder",
        "ssh_interface `session_manager` is not supported",
        "shutdown_behavior only accepts 'stop' or 'terminate' values.",
        "ami_name must be specified",
        "unknown key `ami_nmae`",
        "For security reasons, your source AMI filter must declare an owner.",
        "Error parsing CIDR in temporary_security_group_source_cidrs",
        "encrypt_boot must also be true",
    ] {
        assert!(text.contains(m), "missing {m:?} in:\n{text}");
    }
    let seed = repo().join("examples/seed");
    let (ok, text) = kiln(&seed, &["validate", "aws.json"]);
    assert!(ok, "{text}");
}
