//! kiln-aws's calls against the AWS lab (moto plus the fault proxy), one
//! region per test so tests run in parallel without seeing each other.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[id.clone()]` reads better in tests
mod common;

use common::{unique, Lab};
use kiln_aws::ec2::{
    BlockDeviceMapping, CopyImage, Filter, ImageAttribute, ImportImage, RunInstances, TagSpec,
};
use kiln_aws::error::AwsError;
use kiln_aws::s3::Sse;
use kiln_aws::{AccessConfig, Aws, Env};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LAB: &str = "needs the AWS lab (testlab/aws)";

fn tags(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn reads_security_groups_and_key_pairs() {
    let _ = LAB;
    let lab = Lab::get();
    let aws = lab.aws("us-east-2").await;
    let ec2 = aws.ec2();
    let regions = ec2.describe_regions().await.unwrap();
    assert!(regions.iter().any(|r| r.name == "eu-west-1"), "{regions:?}");
    // The lab's AMIs: owners and filters.
    let imgs = ec2
        .describe_images(
            &[],
            &["099720109477".into()],
            &[Filter::new("name", &["lab/base-*"])],
        )
        .await
        .unwrap();
    let mut names: Vec<_> = imgs.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["lab/base-2020-01-01", "lab/base-2021-06-01"]);
    assert!(imgs
        .iter()
        .all(|i| i.creation_date.is_some() && i.root_device_type.as_deref() == Some("ebs")));
    let none = ec2
        .describe_images(
            &[],
            &["099720109477".into()],
            &[Filter::new("name", &["nothing-*"])],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    // VPCs and subnets with filters.
    let vpcs = ec2
        .describe_vpcs(&[], &[Filter::new("is-default", &["true"])])
        .await
        .unwrap();
    assert_eq!(vpcs.len(), 1, "{vpcs:?}");
    let subnets = ec2
        .describe_subnets(&[], &[Filter::new("vpc-id", &[&vpcs[0].id])])
        .await
        .unwrap();
    assert!(!subnets.is_empty() && subnets.iter().all(|s| s.vpc_id == vpcs[0].id));
    // A security group: create, authorize, describe, delete.
    let name = unique("kiln-sg");
    let sg = ec2
        .create_security_group(
            &name,
            "kiln test",
            Some(&vpcs[0].id),
            &tags(&[("Owner", "kiln")]),
        )
        .await
        .unwrap();
    ec2.authorize_ingress_tcp(&sg, 22, &["10.0.0.0/8".into(), "192.0.2.1/32".into()])
        .await
        .unwrap();
    let found = ec2
        .describe_security_groups(&[], &[Filter::new("group-name", &[&name])])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, sg);
    assert_eq!(found[0].tags.get("Owner").map(String::as_str), Some("kiln"));
    let dup = ec2
        .create_security_group(&name, "again", Some(&vpcs[0].id), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(dup.is_duplicate(), "{dup}");
    assert!(!dup.outcome_unknown());
    ec2.delete_security_group(&sg).await.unwrap();
    assert!(ec2
        .describe_security_groups(&[sg.clone()], &[])
        .await
        .map(|v| v.is_empty())
        .unwrap_or(true));
    ec2.delete_security_group(&sg).await.unwrap(); // gone already: done
                                                   // Key pairs: create (private key returned), import, describe, delete.
    let k1 = unique("kiln-key");
    let kp = ec2
        .create_key_pair(&k1, Some("ed25519"), &BTreeMap::new())
        .await
        .unwrap();
    assert!(kp.material.as_deref().unwrap_or("").contains("PRIVATE KEY"));
    assert!(
        !format!("{kp:?}").contains("PRIVATE KEY"),
        "Debug hides the key"
    );
    let k2 = unique("kiln-imported");
    let pubkey =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kiln";
    ec2.import_key_pair(&k2, pubkey, &tags(&[("k", "v")]))
        .await
        .unwrap();
    let listed = ec2
        .describe_key_pairs(&[k1.clone(), k2.clone()], &[])
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    let imported = listed.iter().find(|k| k.name == k2).unwrap();
    assert!(
        imported
            .public_key
            .as_deref()
            .unwrap_or("")
            .starts_with("ssh-ed25519 AAAAC3Nza"),
        "{imported:?}"
    );
    ec2.delete_key_pair(&k1).await.unwrap();
    ec2.delete_key_pair(&k2).await.unwrap();
    assert!(ec2.describe_key_pairs(&[k1], &[]).await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn instances_images_snapshots_copies() {
    let lab = Lab::get();
    let aws = lab.aws("us-west-1").await;
    let ec2 = aws.ec2();
    let cancel = CancellationToken::new();
    let token = unique("tok");
    let req = RunInstances {
        image_id: "ami-0000000000000new".into(),
        instance_type: "t2.micro".into(),
        client_token: token.clone(),
        user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
        block_device_mappings: vec![BlockDeviceMapping {
            device_name: "/dev/sda1".into(),
            volume_size: Some(10),
            delete_on_termination: Some(true),
            ..Default::default()
        }],
        tag_specs: vec![TagSpec {
            resource_type: "instance".into(),
            tags: tags(&[("Name", "kiln-test")]),
        }],
        ..Default::default()
    };
    let i1 = ec2.run_instance(&req).await.unwrap();
    let i2 = ec2.run_instance(&req).await.unwrap();
    assert_eq!(
        i1.id, i2.id,
        "the same client token gives the same instance"
    );
    let found = ec2.find_instances_by_client_token(&token).await.unwrap();
    assert_eq!(
        found.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [i1.id.clone()]
    );
    let running = aws.wait_instance(&i1.id, "running", &cancel).await.unwrap();
    assert_eq!(
        running.tags.get("Name").map(String::as_str),
        Some("kiln-test")
    );
    assert!(running.private_ip.is_some());
    ec2.set_ena_support(&i1.id, true).await.unwrap();
    ec2.stop_instances(&[i1.id.clone()], false).await.unwrap();
    aws.wait_instance(&i1.id, "stopped", &cancel).await.unwrap();
    // An image of it, tagged at creation.
    let name = unique("kiln-ami");
    let ami = ec2
        .create_image(
            &i1.id,
            &name,
            Some("made by kiln"),
            &[],
            &[TagSpec {
                resource_type: "image".into(),
                tags: tags(&[("Built", "kiln")]),
            }],
        )
        .await
        .unwrap();
    let img = aws.wait_image_available(&ami, &cancel).await.unwrap();
    assert_eq!(img.name, name);
    assert_eq!(ec2.find_own_images_by_name(&name).await.unwrap().len(), 1);
    let snaps = img.snapshot_ids();
    assert!(!snaps.is_empty(), "{img:?}");
    let snap = aws
        .wait_snapshot_completed(&snaps[0], &cancel)
        .await
        .unwrap();
    assert_eq!(snap.state, "completed");
    ec2.create_tags(&[ami.clone(), snaps[0].clone()], &tags(&[("T", "1")]))
        .await
        .unwrap();
    let tagged = ec2
        .describe_snapshots(&[snaps[0].clone()], &[], &[])
        .await
        .unwrap();
    assert_eq!(tagged[0].tags.get("T").map(String::as_str), Some("1"));
    ec2.share_snapshot(&snaps[0], &["210987654321".into()], &[])
        .await
        .unwrap();
    ec2.modify_image_attribute(&ami, &ImageAttribute::Description("new description".into()))
        .await
        .unwrap();
    ec2.modify_image_attribute(&ami, &ImageAttribute::AddUsers(vec!["210987654321".into()]))
        .await
        .unwrap();
    ec2.modify_image_attribute(&ami, &ImageAttribute::AddGroups(vec!["all".into()]))
        .await
        .unwrap();
    // (moto ignores a new description: what was sent is checked in the call log below)
    let perms = aws
        .ec2_call(
            "DescribeImageAttribute",
            vec![
                ("ImageId".into(), ami.clone()),
                ("Attribute".into(), "launchPermission".into()),
            ],
            kiln_aws::Retry::Idempotent,
        )
        .await
        .unwrap();
    assert!(perms.contains("210987654321"), "{perms}");
    // Copied to another region (idempotent by client token).
    let other = aws.in_region("ca-central-1");
    let copy = CopyImage {
        source_image_id: ami.clone(),
        source_region: "us-west-1".into(),
        name: format!("{name}-copy"),
        client_token: unique("copy"),
        ..Default::default()
    };
    let copied = other.ec2().copy_image(&copy).await.unwrap();
    other.wait_image_available(&copied, &cancel).await.unwrap();
    assert!(
        ec2.image(&copied).await.unwrap().is_none(),
        "the copy is in the other region"
    );
    other.ec2().destroy_image(&copied).await.unwrap();
    assert!(other.ec2().image(&copied).await.unwrap().is_none());
    // Deregister and delete snapshots; the instance goes.
    ec2.destroy_image(&ami).await.unwrap();
    assert!(ec2.image(&ami).await.unwrap().is_none());
    assert!(ec2.snapshot(&snaps[0]).await.unwrap().is_none());
    let _ = ec2.console_output(&i1.id).await.unwrap();
    ec2.terminate_instances(&[i1.id.clone()]).await.unwrap();
    aws.wait_instance(&i1.id, "terminated", &cancel)
        .await
        .unwrap();
    assert!(ec2
        .find_instances_by_client_token(&token)
        .await
        .unwrap()
        .is_empty());
    // What moto received, as the Query API names it.
    let calls = lab.calls("us-west-1");
    let run = calls.iter().find(|(a, _)| a == "RunInstances").unwrap();
    assert_eq!(run.1["ClientToken"], json!([token]));
    assert_eq!(run.1["BlockDeviceMapping.1.Ebs.VolumeSize"], json!(["10"]));
    assert_eq!(
        run.1["TagSpecification.1.ResourceType"],
        json!(["instance"])
    );
    assert!(calls.iter().any(|(a, p)| a == "ModifyImageAttribute"
        && p["Description.Value"] == json!(["new description"])));
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn s3_objects_and_streamed_multipart() {
    let lab = Lab::get();
    let aws = lab.aws("eu-west-2").await;
    let s3 = aws.s3();
    let bucket = unique("kiln-s3");
    s3.create_bucket(&bucket).await.unwrap();
    s3.put_object(
        &bucket,
        "dir/a b+c.txt",
        bytes::Bytes::from_static(b"hello"),
        &Sse::default(),
    )
    .await
    .unwrap();
    let h = s3
        .head_object(&bucket, "dir/a b+c.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.size, 5);
    s3.delete_object(&bucket, "dir/a b+c.txt").await.unwrap();
    assert!(s3
        .head_object(&bucket, "dir/a b+c.txt")
        .await
        .unwrap()
        .is_none());
    // 13 MiB streamed in 5 MiB parts, 2 at a time, from odd-sized chunks.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let total: usize = 13 << 20;
    let feeder = tokio::spawn(async move {
        let mut sent = 0;
        let mut i = 0u8;
        while sent < total {
            let n = (777_777).min(total - sent);
            tx.send(Ok(bytes::Bytes::from(vec![i; n]))).await.unwrap();
            sent += n;
            i = i.wrapping_add(1);
        }
    });
    let progressed = std::sync::atomic::AtomicU64::new(0);
    let ids = std::sync::Mutex::new(Vec::new());
    let n = s3
        .upload_stream(
            &bucket,
            "big.raw",
            rx,
            5 << 20,
            2,
            &Sse::default(),
            &|b| {
                progressed.fetch_add(b, std::sync::atomic::Ordering::SeqCst);
            },
            &|id| ids.lock().unwrap().push(id.to_string()),
        )
        .await
        .unwrap();
    feeder.await.unwrap();
    assert_eq!(n, total as u64);
    assert_eq!(
        progressed.load(std::sync::atomic::Ordering::SeqCst),
        total as u64
    );
    assert_eq!(ids.lock().unwrap().len(), 1);
    assert_eq!(
        s3.head_object(&bucket, "big.raw")
            .await
            .unwrap()
            .unwrap()
            .size,
        total as u64
    );
    let parts = lab
        .calls("eu-west-2")
        .iter()
        .filter(|(a, p)| a == "UploadPart" && p["Key"] == json!("big.raw"))
        .count();
    assert_eq!(parts, 3);
    // A failing part aborts the upload: nothing is left.
    let f = lab.fault(json!({"action": "UploadPart", "region": "eu-west-2", "mode": "error", "status": 400, "code": "InvalidPart", "after": 1, "times": 0})).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..4 {
            if tx
                .send(Ok(bytes::Bytes::from(vec![7u8; 3 << 20])))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let e = s3
        .upload_stream(
            &bucket,
            "fails.raw",
            rx,
            5 << 20,
            1,
            &Sse::default(),
            &|_| {},
            &|_| {},
        )
        .await
        .unwrap_err();
    lab.remove_faults(&f).await;
    assert_eq!(e.code(), Some("InvalidPart"), "{e}");
    assert!(
        s3.list_uploads(&bucket, "fails.raw")
            .await
            .unwrap()
            .is_empty(),
        "aborted"
    );
    assert!(s3
        .head_object(&bucket, "fails.raw")
        .await
        .unwrap()
        .is_none());
    // An upload left behind is found and removed by its key.
    let id = s3
        .create_multipart_upload(&bucket, "left.raw", &Sse::default())
        .await
        .unwrap();
    let ups = s3.list_uploads(&bucket, "left.raw").await.unwrap();
    assert_eq!(
        ups.iter().map(|u| u.upload_id.clone()).collect::<Vec<_>>(),
        [id]
    );
    s3.remove_object_and_uploads(&bucket, "left.raw")
        .await
        .unwrap();
    assert!(s3
        .list_uploads(&bucket, "left.raw")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn import_tasks() {
    let lab = Lab::get();
    let aws = lab.aws("eu-west-3").await;
    let (ec2, s3) = (aws.ec2(), aws.s3());
    let bucket = unique("kiln-imp");
    s3.create_bucket(&bucket).await.unwrap();
    s3.put_object(
        &bucket,
        "ok.raw",
        bytes::Bytes::from(vec![1u8; 4096]),
        &Sse::default(),
    )
    .await
    .unwrap();
    s3.put_object(
        &bucket,
        "bad.raw",
        bytes::Bytes::from_static(b"FAIL and more"),
        &Sse::default(),
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let req = |key: &str| ImportImage {
        format: "raw".into(),
        s3_bucket: bucket.clone(),
        s3_key: key.into(),
        client_token: unique("imp"),
        license_type: Some("BYOL".into()),
        tags: tags(&[("kiln-import-token", key)]),
        ..Default::default()
    };
    let ok = req("ok.raw");
    let t = ec2.import_image(&ok).await.unwrap();
    assert_eq!(
        ec2.import_image(&ok).await.unwrap().id,
        t.id,
        "same client token, same task"
    );
    let seen = std::sync::Mutex::new(Vec::new());
    let done = aws
        .wait_import_task(&t.id, &cancel, &|t| {
            seen.lock().unwrap().push(t.status.clone())
        })
        .await
        .unwrap();
    assert_eq!(done.status, "completed");
    let ami = done.image_id.clone().unwrap();
    assert!(ec2.image(&ami).await.unwrap().is_some());
    assert!(seen.lock().unwrap().iter().any(|s| s == "active"));
    let by_tag = ec2
        .describe_import_image_tasks(&[], &[Filter::tag("kiln-import-token", "ok.raw")])
        .await
        .unwrap();
    assert_eq!(
        by_tag.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        [t.id.clone()]
    );
    ec2.destroy_image(&ami).await.unwrap();
    // An import that fails: the wait ends with the lab's message.
    let bad = ec2.import_image(&req("bad.raw")).await.unwrap();
    let e = aws
        .wait_import_task(&bad.id, &cancel, &|_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("ClientError: Unknown OS / Missing OS files."),
        "{e}"
    );
    // Cancelled while active.
    let c = ec2.import_image(&req("ok.raw")).await.unwrap();
    ec2.cancel_import_task(&c.id).await.unwrap();
    let after = ec2
        .describe_import_image_tasks(&[c.id.clone()], &[])
        .await
        .unwrap();
    assert_eq!(after[0].status, "deleted");
    assert!(after[0].image_id.is_none());
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn throttling_and_server_errors_are_retried() {
    let lab = Lab::get();
    let region = "eu-central-1";
    let aws = lab.aws(region).await;
    let ec2 = aws.ec2();
    let f = lab.fault(json!([
        {"action": "DescribeRegions", "region": region, "mode": "throttle", "times": 3},
        {"action": "DescribeImages", "region": region, "mode": "error", "status": 500, "code": "InternalError", "times": 2},
        {"action": "DescribeVpcs", "region": region, "mode": "error", "status": 503, "code": "Unavailable", "times": 2}
    ])).await;
    assert!(!ec2.describe_regions().await.unwrap().is_empty());
    ec2.describe_images(&[], &["099720109477".into()], &[])
        .await
        .unwrap();
    ec2.describe_vpcs(&[], &[]).await.unwrap();
    lab.remove_faults(&f).await;
    let seen = lab.seen(region).await;
    let count = |a: &str, m: Option<&str>| {
        seen.iter()
            .filter(|(x, f)| x == a && f.as_deref() == m)
            .count()
    };
    assert_eq!(count("DescribeRegions", Some("throttle")), 3);
    assert_eq!(count("DescribeRegions", None), 1);
    assert_eq!(count("DescribeImages", Some("error")), 2);
    assert_eq!(count("DescribeVpcs", Some("error")), 2);
    // A create without a client token is not sent again after a 500:
    // the caller must look for what it may have made.
    let f = lab.fault(json!({"action": "CreateSecurityGroup", "region": region, "mode": "error", "status": 500, "code": "InternalError", "times": 0})).await;
    let e = ec2
        .create_security_group(&unique("sg"), "d", None, &BTreeMap::new())
        .await
        .unwrap_err();
    lab.remove_faults(&f).await;
    assert!(e.outcome_unknown() && !e.unanswered(), "{e:?}");
    assert_eq!(e.status(), Some(500));
    assert!(e.request_id().is_some());
    let seen = lab.seen(region).await;
    assert_eq!(
        seen.iter()
            .filter(|(a, _)| a == "CreateSecurityGroup")
            .count(),
        1
    );
    // ... but after throttling it is (AWS did nothing).
    let f = lab.fault(json!({"action": "CreateSecurityGroup", "region": region, "mode": "throttle", "times": 2})).await;
    ec2.create_security_group(&unique("sg"), "d", None, &BTreeMap::new())
        .await
        .unwrap();
    lab.remove_faults(&f).await;
    // A refusal is final.
    let f = lab.fault(json!({"action": "DescribeSubnets", "region": region, "mode": "error", "status": 400, "code": "InvalidParameterValue", "times": 0})).await;
    let e = ec2.describe_subnets(&[], &[]).await.unwrap_err();
    lab.remove_faults(&f).await;
    assert_eq!(e.code(), Some("InvalidParameterValue"));
    assert!(!e.outcome_unknown());
    assert_eq!(
        lab.seen(region)
            .await
            .iter()
            .filter(|(a, _)| a == "DescribeSubnets")
            .count(),
        1
    );
    // Throttling that never ends: max_retries + 1 attempts, then the error.
    let mut few = lab.access(region);
    few.max_retries = Some(2);
    let mut aws2 = Aws::connect_with(&few, Env::default()).await.unwrap();
    aws2.transport.retry.throttle_base = Duration::from_millis(5);
    let f = lab
        .fault(
            json!({"action": "DescribeKeyPairs", "region": region, "mode": "throttle", "times": 0}),
        )
        .await;
    let e = aws2.ec2().describe_key_pairs(&[], &[]).await.unwrap_err();
    lab.remove_faults(&f).await;
    assert!(e.is_throttle(), "{e}");
    assert_eq!(
        lab.seen(region)
            .await
            .iter()
            .filter(|(a, _)| a == "DescribeKeyPairs")
            .count(),
        3
    );
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn no_answer_is_told_from_refused_and_found_by_client_token() {
    let lab = Lab::get();
    let region = "eu-north-1";
    let mut aws = lab.aws(region).await;
    aws.transport.retry.max_attempts = 1;
    let ec2 = aws.ec2();
    // The call is carried out, its answer lost: unanswered; the instance
    // is found by its client token.
    let f = lab
        .fault(json!({"action": "RunInstances", "region": region, "mode": "lose_answer"}))
        .await;
    let token = unique("lost");
    let req = RunInstances {
        image_id: "ami-0000000000000new".into(),
        instance_type: "t2.micro".into(),
        client_token: token.clone(),
        ..Default::default()
    };
    let e = ec2.run_instance(&req).await.unwrap_err();
    lab.remove_faults(&f).await;
    assert!(e.unanswered() && e.outcome_unknown(), "{e:?}");
    let found = ec2.find_instances_by_client_token(&token).await.unwrap();
    assert_eq!(found.len(), 1);
    // Sent again with the same token: the same instance (EC2's idempotency).
    assert_eq!(ec2.run_instance(&req).await.unwrap().id, found[0].id);
    ec2.terminate_instances(&[found[0].id.clone()])
        .await
        .unwrap();
    // Held past the request timeout: unanswered too.
    aws.set_request_timeout(Duration::from_millis(800));
    let f = lab
        .fault(json!({"action": "DescribeRegions", "region": region, "mode": "hold", "seconds": 5}))
        .await;
    let e = aws.ec2().describe_regions().await.unwrap_err();
    lab.remove_faults(&f).await;
    assert!(e.unanswered(), "{e:?}");
    // Nothing listening: certainly not sent.
    let mut nowhere = lab.access(region);
    nowhere.custom_endpoint_ec2 = Some("http://127.0.0.1:9".into());
    let mut a = Aws::connect_with(&nowhere, Env::default()).await.unwrap();
    a.transport.retry.max_attempts = 1;
    let e = a.ec2().describe_regions().await.unwrap_err();
    assert!(
        matches!(e, AwsError::Transport { sent: false, .. }),
        "{e:?}"
    );
    assert!(!e.unanswered() && !e.outcome_unknown());
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn waiters_stop_on_cancel_and_time_out() {
    let lab = Lab::get();
    let region = "ap-south-1";
    let aws = lab.aws(region).await;
    let i = aws
        .ec2()
        .run_instance(&RunInstances {
            image_id: "ami-0000000000000new".into(),
            instance_type: "t2.micro".into(),
            client_token: unique("w"),
            ..Default::default()
        })
        .await
        .unwrap();
    // Hold every DescribeInstances: the waiter is stuck until cancelled.
    let f = lab
        .fault(json!({"action": "DescribeInstances", "region": region, "mode": "hold", "times": 0}))
        .await;
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c2.cancel();
    });
    let t0 = std::time::Instant::now();
    let e = aws
        .wait_instance(&i.id, "running", &cancel)
        .await
        .unwrap_err();
    lab.remove_faults(&f).await;
    assert!(matches!(e, AwsError::Cancelled), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    // A state never reached within aws_polling's budget: the last state is told.
    let mut quick = lab.access(region);
    quick.polling.delay_seconds = Some(1);
    quick.polling.max_attempts = Some(2);
    let a = Aws::connect_with(&quick, Env::default()).await.unwrap();
    let e = a
        .wait_instance(&i.id, "stopped", &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("last state: running"), "{e}");
    aws.ec2()
        .terminate_instances(&[i.id.clone()])
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn credentials_from_sts_and_instance_metadata() {
    let lab = Lab::get();
    let region = "ap-northeast-1";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        "[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = base-secret\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/kiln-deploy\nsource_profile = base\nrole_session_name = kiln-test\nregion = {region}\n"
        ),
    )
    .unwrap();
    let env = Env::default()
        .with(
            "AWS_SHARED_CREDENTIALS_FILE",
            &dir.path().join("credentials").to_string_lossy(),
        )
        .with(
            "AWS_CONFIG_FILE",
            &dir.path().join("config").to_string_lossy(),
        )
        .with("AWS_PROFILE", "deploy")
        .with("AWS_ENDPOINT_URL", &lab.proxy)
        .with("AWS_EC2_METADATA_DISABLED", "true");
    let aws = Aws::connect_with(&AccessConfig::default(), env.clone())
        .await
        .unwrap();
    assert_eq!(aws.region, region, "the profile's region");
    let c = aws.creds.get().await.unwrap();
    assert!(
        c.source
            .contains("assumed role arn:aws:iam::123456789012:role/kiln-deploy"),
        "{}",
        c.source
    );
    assert_ne!(c.access_key_id, "AKIDBASE");
    assert!(c.session_token.is_some() && c.expires.is_some());
    aws.ec2().describe_regions().await.unwrap();
    let calls = lab.calls(region);
    let ar = calls
        .iter()
        .find(|(a, _)| a == "AssumeRole")
        .expect("AssumeRole reached STS");
    assert_eq!(ar.1["RoleSessionName"], json!(["kiln-test"]));
    // The template's assume_role on top of the template's keys.
    let mut t = lab.access(region);
    t.assume_role = Some(kiln_aws::config::AssumeRoleConfig {
        role_arn: "arn:aws:iam::123456789012:role/other".into(),
        session_name: Some("packer-style".into()),
        duration_seconds: Some(900),
        ..Default::default()
    });
    let a2 = Aws::connect_with(&t, Env::default().with("AWS_ENDPOINT_URL_STS", &lab.proxy))
        .await
        .unwrap();
    let c2 = a2.creds.get().await.unwrap();
    assert!(
        c2.source
            .starts_with("assumed role arn:aws:iam::123456789012:role/other (from template"),
        "{}",
        c2.source
    );
    // Instance metadata (moto answers IMDSv2 like EC2).
    let env = Env::default()
        .with("AWS_REGION", region)
        .with("AWS_CONFIG_FILE", "/nonexistent")
        .with("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .with("AWS_EC2_METADATA_SERVICE_ENDPOINT", &lab.endpoint)
        .with("AWS_ENDPOINT_URL", &lab.proxy);
    let a3 = Aws::connect_with(&AccessConfig::default(), env.clone())
        .await
        .unwrap();
    let c3 = a3.creds.get().await.unwrap();
    assert!(c3.source.starts_with("instance metadata"), "{}", c3.source);
    // ... unless skip_metadata_api_check.
    let skip = AccessConfig {
        skip_metadata_api_check: true,
        ..Default::default()
    };
    let e = Aws::connect_with(&skip, env).await.unwrap_err();
    assert!(e.to_string().contains("No valid credential sources"), "{e}");
}

#[tokio::test]
#[ignore = "needs the AWS lab (testlab/aws)"]
async fn lab_sshd_lets_in_the_instance_key_only() {
    let lab = Lab::get();
    let region = "eu-west-1";
    let aws = lab.aws(region).await;
    let ec2 = aws.ec2();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    let other = dir.path().join("other");
    for k in [&key, &other] {
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(k)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let name = unique("kiln-ssh");
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    ec2.import_key_pair(&name, &pubkey, &BTreeMap::new())
        .await
        .unwrap();
    let vpc = aws
        .ec2_call(
            "CreateVpc",
            vec![("CidrBlock".into(), "127.0.3.0/24".into())],
            kiln_aws::Retry::Never,
        )
        .await
        .unwrap();
    let vpc_id = vpc
        .split("<vpcId>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let sn = aws
        .ec2_call(
            "CreateSubnet",
            vec![
                ("VpcId".into(), vpc_id),
                ("CidrBlock".into(), "127.0.3.0/24".into()),
            ],
            kiln_aws::Retry::Never,
        )
        .await
        .unwrap();
    let subnet = sn
        .split("<subnetId>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let i = ec2
        .run_instance(&RunInstances {
            image_id: "ami-0000000000000new".into(),
            instance_type: "t2.micro".into(),
            client_token: unique("ssh"),
            key_name: Some(name.clone()),
            subnet_id: Some(subnet),
            ..Default::default()
        })
        .await
        .unwrap();
    let ip = i.private_ip.clone().unwrap();
    assert!(ip.starts_with("127.0.3."), "{ip}");
    let ssh = |k: &std::path::Path| {
        std::process::Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-i",
            ])
            .arg(k)
            .arg(format!("{}@{ip}", lab.ssh_user))
            .arg("id -un")
            .output()
            .unwrap()
    };
    let ok = ssh(&key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), lab.ssh_user);
    assert!(!ssh(&other).status.success(), "another key is refused");
    ec2.terminate_instances(&[i.id.clone()]).await.unwrap();
    ec2.delete_key_pair(&name).await.unwrap();
}
