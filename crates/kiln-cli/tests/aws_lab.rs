//! `amazon-import` through the `kiln` binary against the AWS lab
//! (testlab/aws: moto with VM import, behind the fault proxy): a qcow2
//! streamed as raw and a raw file become AMIs with their name and tags, the
//! manifest records them, the S3 object is gone; a failed import, retried
//! faults, a lost import or copy answer and a real SIGINT while a call is
//! held each leave nothing behind; an import task that cannot be looked
//! for is listed as possibly left. Each test has a region of its own.
//!
//! Needs a running lab: `testlab/aws/with-lab.sh ROOT cargo test ... --
//! --include-ignored` (scripts/test.sh does this).
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[id.clone()]` reads better in tests
#[path = "../../kiln-aws/tests/common/mod.rs"]
mod common;

use common::{unique, Lab};
use kiln_aws::Aws;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kiln(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(dir)
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The amazon-import keys for the lab in `region`.
fn import_pp(lab: &Lab, region: &str, bucket: &str, extra: Value) -> Value {
    let mut pp = json!({
        "type": "amazon-import",
        "region": region,
        "access_key": "kiln-lab",
        "secret_key": "kiln-lab-secret",
        "custom_endpoint_ec2": lab.proxy,
        "skip_metadata_api_check": true,
        "s3_bucket_name": bucket,
        "s3_part_size_mb": 5
    });
    for (k, v) in extra.as_object().unwrap() {
        pp[k] = v.clone();
    }
    pp
}

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A raw disk of `mib` MiB with some data in it, and its qcow2.
fn make_disk(dir: &Path, mib: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let raw = dir.join("disk.raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    f.set_len(mib << 20).unwrap();
    for (i, at) in [0u64, 3 << 20, 9 << 20, (mib << 20) - 65536]
        .into_iter()
        .enumerate()
    {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&vec![(i as u8 + 1) * 17; 65536]).unwrap();
    }
    drop(f);
    let (r, q) = (
        raw.to_string_lossy().into_owned(),
        dir.join("disk.qcow2").to_string_lossy().into_owned(),
    );
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", &r, &q]);
}

fn sha256_file(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The SHA-256 of an S3 object, read by the AWS CLI (a peer) from moto.
fn s3_sha256(lab: &Lab, region: &str, bucket: &str, key: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}/bin/aws s3 cp --endpoint-url {} s3://{bucket}/{key} - | sha256sum",
            lab.venv.display(),
            lab.endpoint
        ))
        .env("AWS_ACCESS_KEY_ID", "kiln-lab")
        .env("AWS_SECRET_ACCESS_KEY", "kiln-lab-secret")
        .env("AWS_DEFAULT_REGION", region)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// What the lab holds in `region` that an import may leave: AMIs of this
/// account, import tasks not yet over, objects and uploads in `bucket`.
async fn leftovers(aws: &Aws, bucket: &str, key: &str) -> Vec<String> {
    let mut left = Vec::new();
    for i in aws
        .ec2()
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap()
    {
        left.push(format!("AMI {} {}", i.id, i.name));
    }
    for t in aws
        .ec2()
        .describe_import_image_tasks(&[], &[])
        .await
        .unwrap()
    {
        if t.status != "deleted" && t.status != "completed" {
            left.push(format!("import task {} {}", t.id, t.status));
        }
    }
    if aws.s3().head_object(bucket, key).await.unwrap().is_some() {
        left.push(format!("object {key}"));
    }
    for u in aws.s3().list_uploads(bucket, "").await.unwrap() {
        left.push(format!("upload {} {}", u.key, u.upload_id));
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn qcow2_streamed_as_raw_becomes_a_named_tagged_ami() {
    let lab = Lab::get();
    let region = "us-east-2";
    let aws = lab.aws(region).await;
    let bucket = unique("kiln-import");
    aws.s3().create_bucket(&bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    make_disk(d.path(), 24);
    let t = json!({
        "builders": [{"type": "file", "source": "disk.qcow2", "target": "out/disk.qcow2"}],
        "post-processors": [[
            import_pp(&lab, region, &bucket, json!({
                "format": "raw", "s3_key_name": "imports/{{build_name}}-{{timestamp}}.raw",
                "ami_name": "kiln-imported-{{timestamp}}", "ami_description": "from kiln",
                "ami_users": ["210987654321"], "ami_groups": ["all"], "license_type": "BYOL",
                "role_name": "vmimport", "tags": {"Imported": "yes", "By": "kiln"}
            })),
            {"type": "manifest", "output": "manifest.json"}
        ]]
    });
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    assert!(ok, "{text}");
    for line in [
        "(amazon-import): Uploading out/disk.qcow2 to s3://",
        "(qcow2 converted to raw on the way)",
        "Setting license type to 'BYOL'",
        "Starting rename of AMI",
        "Destroying intermediary AMI...",
        "Adding tag \"Imported\": \"yes\"",
        "Modifying: description",
        "Deleting import source s3://",
        "--> file: AMIs were created:\nus-east-2: ami-",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The AMI: renamed, tagged (snapshot too), described, shared.
    let imgs = aws
        .ec2()
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap();
    assert_eq!(imgs.len(), 1, "the intermediary AMI is gone: {imgs:?}");
    let ami = &imgs[0];
    assert!(ami.name.starts_with("kiln-imported-"), "{ami:?}");
    assert_eq!(ami.tags.get("Imported").map(String::as_str), Some("yes"));
    let snaps = ami.snapshot_ids();
    let s = aws
        .ec2()
        .describe_snapshots(&snaps, &[], &[])
        .await
        .unwrap();
    assert!(
        s.iter()
            .all(|s| s.tags.get("By").map(String::as_str) == Some("kiln")),
        "{s:?}"
    );
    // The manifest records it as Packer's does.
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        m["builds"][0]["artifact_id"],
        json!(format!("us-east-2:{}", ami.id))
    );
    assert_eq!(m["builds"][0]["builder_type"], json!("file"));
    // What EC2 received, as Packer sends it.
    let calls = lab.calls(region);
    let imp = calls.iter().find(|(a, _)| a == "ImportImage").unwrap();
    assert_eq!(imp.1["DiskContainer.1.Format"], json!(["raw"]));
    assert_eq!(imp.1["LicenseType"], json!(["BYOL"]));
    assert_eq!(imp.1["RoleName"], json!(["vmimport"]));
    let key = imp.1["DiskContainer.1.UserBucket.S3Key"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("imports/file-"), "{key}");
    let parts = calls
        .iter()
        .filter(|(a, p)| a == "UploadPart" && p["Key"] == json!(key))
        .count();
    assert_eq!(parts, 5, "24 MiB of raw in 5 MiB parts");
    // Nothing else is left: the object is deleted.
    assert_eq!(
        leftovers(&aws, &bucket, &key).await,
        [format!("AMI {} {}", ami.id, ami.name)]
    );
    aws.ec2().destroy_image(&ami.id).await.unwrap();

    // skip_clean keeps the object: it is the raw disk, byte for byte; a raw
    // file artifact is sent as it is.
    for (src, fmt) in [("disk.qcow2", "raw"), ("disk.raw", "raw")] {
        let key = format!("kept-{src}.raw");
        let t = json!({
            "builders": [{"type": "file", "source": src, "target": format!("k/{src}")}],
            "post-processors": [import_pp(&lab, region, &bucket, json!({"format": fmt, "s3_key_name": key, "skip_clean": true}))]
        });
        std::fs::write(d.path().join("k.json"), t.to_string()).unwrap();
        let (ok, text) = kiln(d.path(), &["build", "-color=false", "k.json"]);
        assert!(ok, "{text}");
        assert_eq!(
            s3_sha256(&lab, region, &bucket, &key),
            sha256_file(&d.path().join("disk.raw")),
            "{src}"
        );
        aws.s3().delete_object(&bucket, &key).await.unwrap();
    }
    // format vmdk: the qcow2 travels as a stream-optimized VMDK (its data
    // only, compressed), which reads back as the disk.
    let t = json!({
        "builders": [{"type": "file", "source": "disk.qcow2", "target": "v/disk.qcow2"}],
        "post-processors": [import_pp(&lab, region, &bucket, json!({"format": "vmdk", "s3_key_name": "kept.vmdk", "skip_clean": true}))]
    });
    std::fs::write(d.path().join("v.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "v.json"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("(qcow2 converted to a stream-optimized VMDK on the way)"),
        "{text}"
    );
    let size = aws
        .s3()
        .head_object(&bucket, "kept.vmdk")
        .await
        .unwrap()
        .unwrap()
        .size;
    assert!(
        size < 2 << 20,
        "{size} bytes for 24 MiB with 256 KiB of data"
    );
    let got = d.path().join("got.vmdk");
    let o = Command::new(lab.venv.join("bin/aws"))
        .args([
            "s3",
            "cp",
            "--quiet",
            "--endpoint-url",
            &lab.endpoint,
            &format!("s3://{bucket}/kept.vmdk"),
        ])
        .arg(&got)
        .env("AWS_ACCESS_KEY_ID", "kiln-lab")
        .env("AWS_SECRET_ACCESS_KEY", "kiln-lab-secret")
        .env("AWS_DEFAULT_REGION", region)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(d.path().join("disk.raw"))
        .arg(&got)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    aws.s3().delete_object(&bucket, "kept.vmdk").await.unwrap();
    for i in aws
        .ec2()
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap()
    {
        aws.ec2().destroy_image(&i.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn failed_import_fails_the_build_and_leaves_nothing() {
    let lab = Lab::get();
    let region = "us-west-2";
    let aws = lab.aws(region).await;
    let bucket = unique("kiln-fail");
    aws.s3().create_bucket(&bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let t = json!({
        "builders": [{"type": "file", "content": "FAIL: not a disk", "target": "disk.ova"}],
        "post-processors": [import_pp(&lab, region, &bucket, json!({"s3_key_name": "bad.ova", "ami_name": "never"}))]
    });
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("failed with status message: ClientError: Unknown OS / Missing OS files."),
        "{text}"
    );
    assert!(text.contains("Deleting s3://"), "{text}");
    assert_eq!(
        leftovers(&aws, &bucket, "bad.ova").await,
        Vec::<String>::new(),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn throttled_and_failing_calls_are_retried() {
    let lab = Lab::get();
    let region = "ca-central-1";
    let aws = lab.aws(region).await;
    let bucket = unique("kiln-retry");
    aws.s3().create_bucket(&bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    make_disk(d.path(), 12);
    let faults = lab
        .fault(json!([
            {"action": "UploadPart", "region": region, "mode": "error", "status": 500, "code": "InternalError", "after": 1},
            {"action": "CreateMultipartUpload", "region": region, "mode": "throttle"},
            {"action": "ImportImage", "region": region, "mode": "throttle", "times": 2},
            {"action": "DescribeImportImageTasks", "region": region, "mode": "error", "status": 503, "code": "Unavailable"},
            {"action": "CopyImage", "region": region, "mode": "error", "status": 500, "code": "InternalError"},
            {"action": "CreateTags", "region": region, "mode": "throttle"}
        ]))
        .await;
    let t = json!({
        "builders": [{"type": "file", "source": "disk.qcow2", "target": "o/disk.qcow2"}],
        "post-processors": [import_pp(&lab, region, &bucket, json!({"format": "raw", "s3_key_name": "r.raw", "ami_name": "retried", "tags": {"a": "b"}}))]
    });
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    lab.remove_faults(&faults).await;
    assert!(ok, "{text}");
    let seen = lab.seen(region).await;
    for (action, times) in [
        ("UploadPart", 1),
        ("CreateMultipartUpload", 1),
        ("ImportImage", 2),
        ("DescribeImportImageTasks", 1),
        ("CopyImage", 1),
        ("CreateTags", 1),
    ] {
        let n = seen
            .iter()
            .filter(|(a, f)| a == action && f.is_some())
            .count();
        assert_eq!(n, times, "{action} faults hit: {seen:?}");
    }
    let imgs = aws
        .ec2()
        .describe_images(&[], &["self".into()], &[])
        .await
        .unwrap();
    assert_eq!(
        imgs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["retried"],
        "one copy only (client token)"
    );
    assert_eq!(imgs[0].tags.get("a").map(String::as_str), Some("b"));
    aws.ec2().destroy_image(&imgs[0].id).await.unwrap();
    assert_eq!(
        leftovers(&aws, &bucket, "r.raw").await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn lost_import_answer_is_found_by_its_tag_and_cancelled() {
    let lab = Lab::get();
    let region = "eu-south-1";
    let aws = lab.aws(region).await;
    let bucket = unique("kiln-lost");
    aws.s3().create_bucket(&bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let f = lab
        .fault(
            json!({"action": "ImportImage", "region": region, "mode": "lose_answer", "times": 0}),
        )
        .await;
    let t = json!({
        "builders": [{"type": "file", "content": "a disk", "target": "disk.vmdk"}],
        "post-processors": [import_pp(&lab, region, &bucket, json!({"format": "vmdk", "s3_key_name": "lost.vmdk", "max_retries": 1}))]
    });
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    lab.remove_faults(&f).await;
    assert!(!ok, "{text}");
    assert!(text.contains("Failed to start import from s3://"), "{text}");
    assert!(
        text.contains("Cancelling import task import-ami-"),
        "{text}"
    );
    let tasks = aws
        .ec2()
        .describe_import_image_tasks(&[], &[])
        .await
        .unwrap();
    assert!(
        !tasks.is_empty() && tasks.iter().all(|t| t.status == "deleted"),
        "{tasks:?}"
    );
    assert!(!text.contains("may have been left behind"), "{text}");
    assert_eq!(
        leftovers(&aws, &bucket, "lost.vmdk").await,
        Vec::<String>::new()
    );
}

/// CopyImage (the rename to `ami_name`) carried out but its answers lost
/// (the client's retry too): the copy is looked for by its name and
/// deregistered with the imported AMI, the object is deleted, and the
/// build lists nothing as left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn lost_copy_answer_is_found_by_its_name_and_deleted() {
    let lab = Lab::get();
    let region = "ap-east-2";
    let aws = lab.aws(region).await;
    let bucket = unique("kiln-lostcopy");
    aws.s3().create_bucket(&bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let f = lab
        .fault(json!({"action": "CopyImage", "region": region, "mode": "lose_answer", "times": 0}))
        .await;
    let t = json!({
        "builders": [{"type": "file", "content": "a disk", "target": "disk.vmdk"}],
        "post-processors": [import_pp(&lab, region, &bucket, json!({"format": "vmdk", "s3_key_name": "lostcopy.vmdk", "ami_name": "kiln-lost-copy", "max_retries": 1}))]
    });
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    let seen = lab.seen(region).await;
    lab.remove_faults(&f).await;
    assert!(!ok, "{text}");
    assert!(
        seen.iter()
            .any(|(a, m)| a == "CopyImage" && m.as_deref() == Some("lose_answer")),
        "{seen:?}"
    );
    assert!(text.contains("Error Copying AMI (ami-"), "{text}");
    // The copies (one per try) and the imported AMI.
    let deregistered = text
        .matches("(amazon-import): Deregistering AMI ami-")
        .count();
    assert!(deregistered >= 2, "{text}");
    assert!(text.contains("Deleting s3://"), "{text}");
    assert!(!text.contains("may have been left behind"), "{text}");
    assert!(!text.contains("Could not"), "{text}");
    assert_eq!(
        leftovers(&aws, &bucket, "lostcopy.vmdk").await,
        Vec::<String>::new()
    );
}

/// The answer to ImportImage lost, and the search for the task it started
/// refused: the cleanup says so and the build lists the task as possibly
/// left behind (it no longer claims nothing is left); the test cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn an_import_task_that_cannot_be_looked_for_is_listed_as_left() {
    let lab = Lab::get();
    let region = "mx-central-1";
    let aws = lab.aws(region).await;
    let bucket = unique("kiln-unfound");
    aws.s3().create_bucket(&bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let f = lab
        .fault(json!([
            {"action": "ImportImage", "region": region, "mode": "lose_answer", "times": 0},
            {"action": "DescribeImportImageTasks", "region": region, "mode": "error", "status": 403, "code": "UnauthorizedOperation", "times": 0}
        ]))
        .await;
    let t = json!({
        "builders": [{"type": "file", "content": "a disk", "target": "disk.vmdk"}],
        "post-processors": [import_pp(&lab, region, &bucket, json!({"format": "vmdk", "s3_key_name": "unfound.vmdk", "max_retries": 1}))]
    });
    std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
    let (ok, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    lab.remove_faults(&f).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "Error looking for the import task that may have been started (tag kiln-import-token="
        ),
        "{text}"
    );
    assert!(text.contains("may have been left behind"), "{text}");
    assert!(text.contains("import task from s3://"), "{text}");
    // The rest was cleaned up; the task is the test's to cancel.
    assert!(text.contains("Deleting s3://"), "{text}");
    let tasks = aws
        .ec2()
        .describe_import_image_tasks(&[], &[])
        .await
        .unwrap();
    assert!(!tasks.is_empty(), "the task was started");
    for t in tasks {
        aws.ec2().cancel_import_task(&t.id).await.unwrap();
    }
    assert_eq!(
        leftovers(&aws, &bucket, "unfound.vmdk").await,
        Vec::<String>::new()
    );
}

/// A real SIGINT while ImportImage is held by the proxy: kiln waits for
/// the answer (released after the signal, so the task is made late),
/// cancels the task, deletes the object, exits 1; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn sigint_while_a_call_is_held_leaves_nothing() {
    let lab = Lab::get();
    for (region, action) in [
        ("ap-northeast-2", "ImportImage"),
        ("ap-southeast-1", "UploadPart"),
    ] {
        let aws = lab.aws(region).await;
        let bucket = unique("kiln-int");
        aws.s3().create_bucket(&bucket).await.unwrap();
        let d = tempfile::tempdir().unwrap();
        make_disk(d.path(), 12);
        let f = lab
            .fault(json!({"action": action, "region": region, "mode": "hold", "times": 0}))
            .await;
        let t = json!({
            "builders": [{"type": "file", "source": "disk.qcow2", "target": "o/disk.qcow2"}],
            "post-processors": [import_pp(&lab, region, &bucket, json!({"format": "raw", "s3_key_name": "int.raw"}))]
        });
        std::fs::write(d.path().join("t.json"), t.to_string()).unwrap();
        let log = d.path().join("kiln.log");
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.current_dir(d.path())
            .args(["build", "-color=false", "t.json"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        let mut child = kiln_testkit::ProcessGuard::spawn(&mut c).unwrap();
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let start = Instant::now();
        while !lab
            .seen(region)
            .await
            .iter()
            .any(|(a, m)| a == action && m.as_deref() == Some("hold"))
        {
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
        if action == "ImportImage" {
            // kiln waits for the answer before cleaning up; let the call through late.
            let start = Instant::now();
            while !read_log().contains("Waiting for the answer to the import task create request") {
                assert!(start.elapsed() < Duration::from_secs(60), "{}", read_log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        lab.remove_faults(&f).await; // releases what is held
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
        assert!(text.contains("Deleting s3://"), "{text}");
        if action == "ImportImage" {
            assert!(
                text.contains("Cancelling import task import-ami-"),
                "{text}"
            );
        }
        assert_eq!(
            leftovers(&aws, &bucket, "int.raw").await,
            Vec::<String>::new(),
            "{text}"
        );
    }
}

#[test]
fn validate_refuses_bad_keys_by_name() {
    let d = tempfile::tempdir().unwrap();
    let t = r#"{
  "builders": [{"type": "file", "content": "x", "target": "disk.ova"}],
  "post-processors": [{"type": "amazon-import", "region": "us-east-1", "s3_bucket_nmae": "b",
    "format": "qcow2", "mfa_code": "123456", "s3_encryption": "rot13", "access_key": "a"}]
}"#;
    std::fs::write(d.path().join("t.json"), t).unwrap();
    let (ok, text) = kiln(d.path(), &["validate", "t.json"]);
    assert!(!ok);
    for m in [
        "unknown key `s3_bucket_nmae`",
        "did you mean `s3_bucket_name`?",
        "s3_bucket_name must be set",
        "invalid format 'qcow2'",
        "mfa_code is not supported by kiln",
        "invalid s3 encryption format 'rot13'",
        "`access_key` and `secret_key` must both be either set or not set.",
    ] {
        assert!(text.contains(m), "missing {m:?} in:\n{text}");
    }
    let ok_t = r#"{
  "builders": [{"type": "file", "content": "x", "target": "disk.ova"}],
  "post-processors": [{"type": "amazon-import", "region": "us-east-1", "s3_bucket_name": "b",
    "ami_name": "x-{{timestamp}}", "tags": {"a": "b"}, "aws_polling": {"delay_seconds": 5, "max_attempts": 3},
    "assume_role": {"role_arn": "arn:aws:iam::1:role/r", "session_name": "s"}, "skip_clean": true}]
}"#;
    std::fs::write(d.path().join("ok.json"), ok_t).unwrap();
    let (ok, text) = kiln(d.path(), &["validate", "ok.json"]);
    assert!(ok, "{text}");
}

/// Ids, timestamps and kiln's own additions made comparable.
fn normalize(v: &str) -> String {
    let mut out = String::new();
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &v[i..];
        let id = ["import-ami-", "ami-", "snap-"]
            .into_iter()
            .find(|p| rest.starts_with(p));
        if let Some(p) = id {
            let n = rest[p.len()..]
                .bytes()
                .take_while(|c| c.is_ascii_hexdigit())
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

/// The calls that change something (not the Describe polling), with their
/// parameters normalized; kiln's additions for finding lost answers
/// (ClientToken, the import task's tag) left out.
fn changes(lab: &Lab, region: &str) -> Vec<String> {
    let calls: Vec<String> = lab
        .calls(region)
        .into_iter()
        .filter(|(a, _)| {
            !a.starts_with("Describe") && !a.starts_with("Head") && !a.starts_with("List")
        })
        .map(|(a, p)| {
            let o = p.as_object().unwrap();
            let mut kv: Vec<String> = o
                .iter()
                .filter(|(k, _)| *k != "ClientToken" && !k.starts_with("TagSpecification"))
                .filter(|(k, _)| !(a == "CreateTags" && k.starts_with("Tag.")))
                .map(|(k, v)| normalize(&format!("{k}={v}")).replace(region, "REGION"))
                .collect();
            if a == "CreateTags" {
                // Packer sends the tags in Go's map order (random): as a set.
                let mut tags: Vec<String> = (1..)
                    .map_while(|i| {
                        let k = o.get(&format!("Tag.{i}.Key"))?;
                        Some(format!("{k}={}", o.get(&format!("Tag.{i}.Value"))?))
                    })
                    .collect();
                tags.sort();
                kv.push(format!("tags={tags:?}"));
            }
            kv.sort();
            format!("{a} {}", kv.join(" "))
        })
        .collect();
    sort_runs(calls, |c| c.starts_with("ModifyImageAttribute "))
}

/// Sort each run of consecutive items that `f` picks (Packer goes through
/// a Go map for them: their order is random).
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

/// Packer 1.6.6 as the oracle: the same amazon-import through Packer and
/// through kiln against the lab (Packer reaches the lab's S3 through
/// `custom_endpoint_ec2`, which its Go SDK session applies to S3 too, with
/// a bucket name that is not DNS-compatible so it addresses it
/// path-style); the calls that change something must be the same, in the
/// same order, with the same parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn packer_and_kiln_make_the_same_calls() {
    let lab = Lab::get();
    let Some(packer) =
        kiln_testkit::require_tool("packer", "apt-get install packer (scripts/setup.sh)")
    else {
        return;
    };
    let bucket = "Kiln_Packer_Oracle";
    let aws = lab.aws("us-east-1").await;
    aws.s3().create_bucket(bucket).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let template = |region: &str| {
        json!({
            "builders": [{"type": "file", "target": "disk.ova", "content": "not really an ova"}],
            "post-processors": [{
                "type": "amazon-import", "region": region,
                "access_key": "kiln-lab", "secret_key": "kiln-lab-secret",
                "custom_endpoint_ec2": lab.endpoint, "skip_metadata_api_check": true,
                "s3_bucket_name": bucket, "format": "ova", "license_type": "BYOL", "role_name": "vmimport",
                "ami_name": "imported-{{timestamp}}", "ami_description": "from the lab",
                "ami_users": ["210987654321"], "ami_groups": ["all"], "tags": {"Imported": "yes", "B": "2"}
            }]
        })
        .to_string()
    };
    std::fs::write(d.path().join("packer.json"), template("sa-east-1")).unwrap();
    std::fs::write(d.path().join("kiln.json"), template("me-south-1")).unwrap();
    let o = Command::new(packer)
        .current_dir(d.path())
        .args(["build", "-color=false", "packer.json"])
        .env("AWS_POLL_DELAY_SECONDS", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    let ptext = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{ptext}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (ok, ktext) = kiln(d.path(), &["build", "-color=false", "kiln.json"]);
    assert!(ok, "{ktext}");
    let (p, k) = (changes(&lab, "sa-east-1"), changes(&lab, "me-south-1"));
    assert!(p.len() >= 9, "{p:#?}");
    assert_eq!(k, p, "kiln's calls (left) differ from Packer's (right)");
    // The same messages, in the same order.
    let lines = |t: &str| -> Vec<String> {
        let v = t
            .lines()
            .filter(|l| l.contains("(amazon-import): "))
            .map(|l| normalize(l.split("(amazon-import): ").nth(1).unwrap()))
            // kiln's own progress lines (the task's status as it changes)
            .filter(|l| !l.starts_with("Import task import-ami-?: "))
            .filter(|l| !l.starts_with("Uploading: "))
            .collect();
        sort_runs(v, |l| {
            l.starts_with("Adding tag ") || l.starts_with("Modifying: ")
        })
    };
    assert_eq!(lines(&ktext), lines(&ptext));
    // Both made one AMI per region, and the artifact line is Packer's.
    assert!(
        ptext.contains("--> file: AMIs were created:\nsa-east-1: ami-"),
        "{ptext}"
    );
    assert!(
        ktext.contains("--> file: AMIs were created:\nme-south-1: ami-"),
        "{ktext}"
    );
}
