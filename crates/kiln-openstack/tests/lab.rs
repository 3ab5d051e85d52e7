//! The `openstack` builder and the `create_box` post-processor against real
//! OpenStack services (testlab/openstack). Run with
//! `KILN_OPENSTACK_LAB=<root of a running lab>` and `--include-ignored`
//! (testlab/openstack/with-lab.sh and scripts/test.sh do both). Every test ends by checking that the project holds no server,
//! floating IP, temporary key pair or image it did not hold before (the
//! lab has no Cinder, so volumes are not exercised here).
mod support;

use kiln_core::{Artifact, BuildCtx, BuildError, Builder, Hook, PostProcessCtx, PostProcessor};
use kiln_openstack::builder::{CommSettings, Config, OpenStackBuilder, SourceImage};
use kiln_openstack::client::AccessKeys;
use kiln_openstack::create_box::{self, CreateBox};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const SEED_IMAGE: &str = "82b55c8c-cce1-4301-92c4-b005180531de";

/// The seed's template.json as a builder configuration (until the
/// template decoder is in, the same values by hand).
fn seed_config(tag: &str) -> Config {
    let name = format!("ubuntu precise {tag}");
    Config {
        flavor: "m1.small".into(),
        source: Some(SourceImage::Id(SEED_IMAGE.into())),
        image_name: name.clone(),
        instance_name: name,
        floating_ip_network: Some("nova".into()),
        security_groups: vec!["ssh".into()],
        comm: CommSettings {
            port: 22,
            username: "ubuntu".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn builder(config: Config, dir: &Path, ssh_timeout: Duration) -> OpenStackBuilder {
    OpenStackBuilder {
        config,
        connector: Arc::new(CliSsh {
            user: "ubuntu".into(),
            port: 22,
            timeout: ssh_timeout,
            dir: dir.to_path_buf(),
        }),
    }
}

/// The seed's provisioners, over the communicator: the shell scripts with
/// `sudo bash '{{.Path}}'`, then the data directory to /stash.
fn seed_hook() -> CommandsHook {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testlab/openstack/seed");
    let mut cmds: Vec<String> = ["update", "sudoers", "compiler_tools", "minimize"]
        .iter()
        .map(|s| {
            let script = std::fs::read_to_string(seed.join(format!("scripts/{s}.sh"))).unwrap();
            format!("sudo bash -c '{}'", script.replace('\'', "'\\''"))
        })
        .collect();
    cmds.push("test -d /stash && test -w /stash && echo stash-ok".into());
    let refs: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
    CommandsHook::new(&refs)
}

async fn run_build(
    b: &OpenStackBuilder,
    ctx: &BuildCtx,
    hook: &dyn Hook,
) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
    b.run(ctx, hook).await
}

async fn assert_clean(cloud: &kiln_openstack::Cloud, what: &str) {
    // Deletions the build waited for are done; give Neutron a moment for
    // nothing else.
    let h = holdings(cloud).await;
    assert_eq!(h, Holdings::default(), "left behind after {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn seed_template_builds_and_create_box_makes_qcow2() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let b = builder(seed_config("seed"), dir.path(), Duration::from_secs(60));
    let hook = seed_hook();
    let art = run_build(&b, &ctx, &hook)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", out.captured()))
        .expect("an artifact");
    let text = out.captured();
    for line in [
        "Loading flavor: m1.small",
        "Verified flavor. ID: 2",
        "Creating temporary keypair: packer_",
        "Launching server...",
        "Server ID: ",
        "Waiting for server to become ready...",
        "Created floating IP: '",
        "Added floating IP '",
        "Connected to SSH!",
        "update.sh: running as root",
        "minimize.sh: running as root",
        "Stopping server: ",
        "Creating the image: ubuntu precise seed",
        "Waiting for image ubuntu precise seed (image id: ",
        "Deleted temporary floating IP '",
        "Terminating the source server: ",
        "Deleting temporary keypair: packer_",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Packer's cleanup order.
    let p = |s: &str| text.find(s).unwrap();
    assert!(p("Deleted temporary floating IP") < p("Terminating the source server"));
    assert!(p("Terminating the source server") < p("Deleting temporary keypair"));
    assert_eq!(
        art.description(),
        format!("An image was created: {}", art.id())
    );
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    let raw = cloud.get_image(&art.id()).await.unwrap();
    assert_eq!(raw.status, "active");
    assert_eq!(raw.disk_format.as_deref(), Some("raw"));
    assert_eq!(raw.name, "ubuntu precise seed");

    // The seed's create_box step, built in.
    let pp = CreateBox {
        config: create_box::Config {
            name: Some("Packer example".into()),
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
            properties: [("os_distro".to_string(), "ubuntu".to_string())].into(),
            compression_level: 6,
            ..Default::default()
        },
    };
    let pctx = PostProcessCtx {
        build: &ctx,
        interp: Default::default(),
    };
    let res = pp
        .post_process(&pctx, art.clone())
        .await
        .unwrap_or_else(|e| panic!("create_box failed: {e}\n{}", out.captured()));
    assert!(!res.keep, "the raw original is not kept by default");
    let qa = res.artifact.expect("a new artifact");
    let q = cloud.get_image(&qa.id()).await.unwrap();
    assert_eq!(q.status, "active");
    assert_eq!(q.name, "Packer example");
    assert_eq!(q.disk_format.as_deref(), Some("qcow2"));
    assert_eq!(q.container_format.as_deref(), Some("bare"));
    assert_eq!(q.raw["os_distro"], "ubuntu");
    assert!(
        q.size.unwrap() < raw.size.unwrap(),
        "{:?} vs {:?}",
        q.size,
        raw.size
    );
    // What kiln's core does without keep_input_artifact.
    art.destroy().await.unwrap();
    assert!(cloud.get_image(&raw.id).await.unwrap_err().is_not_found());
    // The qcow2 holds the source image's bytes (the lab's snapshot is a copy).
    let src_p = dir.path().join("src.raw");
    let q_p = dir.path().join("out.qcow2");
    for (id, p) in [(SEED_IMAGE, &src_p), (q.id.as_str(), &q_p)] {
        let bytes = cloud
            .download_image(id)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(p, &bytes).unwrap();
    }
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&src_p)
        .arg(&q_p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // No local file left by create_box.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("create_box-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    qa.destroy().await.unwrap();
    assert_clean(&cloud, "the seed build").await;
}

/// Build with `config` and `hook`, expect failure, then check that nothing
/// is left. Returns the failure and the transcript.
async fn fails_clean(
    cloud: &kiln_openstack::Cloud,
    config: Config,
    hook: &dyn Hook,
    ssh_timeout: Duration,
    what: &str,
) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let b = builder(config, dir.path(), ssh_timeout);
    let r = run_build(&b, &ctx, hook).await;
    let text = out.captured();
    let err = match r {
        Ok(_) => panic!("{what}: the build succeeded:\n{text}"),
        Err(e) => e.to_string(),
    };
    assert!(
        ctx.ledger.live().is_empty(),
        "{what}: ledger {:?}\n{text}",
        ctx.ledger.live()
    );
    let h = holdings(cloud).await;
    assert_eq!(h, Holdings::default(), "{what}: left behind\n{text}");
    (err, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn provisioner_failure_cleans_up() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let hook = CommandsHook::new(&["echo about to fail", "exit 1"]);
    let mut c = seed_config("prov");
    c.source = Some(SourceImage::Name("Ubuntu precise".into()));
    let (err, text) = fails_clean(
        &cloud,
        c,
        &hook,
        Duration::from_secs(60),
        "provisioner exit 1",
    )
    .await;
    assert!(err.contains("non-zero exit status"), "{err}");
    assert!(text.contains("Deleting temporary keypair"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn ssh_never_reachable_cleans_up() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let mut c = seed_config("nossh");
    // Nothing listens there.
    c.comm.host = Some("127.0.0.250".into());
    let hook = CommandsHook::new(&["true"]);
    let (err, _) = fails_clean(
        &cloud,
        c,
        &hook,
        Duration::from_secs(3),
        "SSH never reachable",
    )
    .await;
    assert!(err.contains("Timeout waiting for SSH"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_provisioning_cleans_up() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let b = builder(seed_config("sigint"), dir.path(), Duration::from_secs(60));
    let hook = BlockingHook {
        started: tokio::sync::Notify::new(),
    };
    let cancel = ctx.cancel.clone();
    let (r, _) = tokio::join!(run_build(&b, &ctx, &hook), async {
        hook.started.notified().await;
        // What the CLI does on the first Ctrl-C.
        cancel.cancel();
    });
    assert!(matches!(r, Err(BuildError::Cancelled)), "{:?}", r.err());
    let text = out.captured();
    assert!(text.contains("Terminating the source server"), "{text}");
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    assert_clean(&cloud, "Ctrl-C").await;
}

/// One fault-injection case: the rule, and what the error must mention.
async fn with_fault(rules: Vec<Rule>, tag: &str, expect: &str) {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    std::env::set_var("KILN_OPENSTACK_REQUEST_TIMEOUT", "4");
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let proxy = FaultProxy::start(rules).await;
    let mut c = seed_config(tag);
    c.access = AccessKeys {
        identity_endpoint: Some(proxy.keystone_url.clone()),
        ..Default::default()
    };
    let hook = CommandsHook::new(&["true"]);
    let (err, text) = fails_clean(&cloud, c, &hook, Duration::from_secs(60), tag).await;
    std::env::remove_var("KILN_OPENSTACK_REQUEST_TIMEOUT");
    assert!(proxy.faulted() > 0, "{tag}: the fault never hit");
    assert!(err.contains(expect), "{tag}: {err}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_on_keypair() {
    with_fault(
        vec![Rule::new("POST", "/os-keypairs", Fault::Status500)],
        "kp500",
        "Error creating temporary keypair",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_on_server_create() {
    with_fault(
        vec![Rule::new("POST", "/v2.1/servers", Fault::Status500).once()],
        "srv500",
        "Error launching source server",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_timeout_on_server_create_after_creating_it() {
    with_fault(
        vec![Rule::new("POST", "/v2.1/servers", Fault::ForwardAndHang).once()],
        "srvhang",
        "timed out",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn neutron_timeout_on_floating_ip_after_creating_it() {
    with_fault(
        vec![Rule::new(
            "POST",
            "/v2.0/floatingips",
            Fault::ForwardAndHang,
        )],
        "fiphang",
        "Error creating floating IP",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_on_stop() {
    with_fault(
        vec![Rule::new("POST", "/action", Fault::Status500)],
        "stop500",
        "Error stopping server",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_timeout_on_create_image_after_creating_it() {
    // The first action is os-stop; the second, createImage, is carried out
    // but never answered.
    let mut r = Rule::new("POST", "/action", Fault::ForwardAndHang).once();
    r.skip = 1;
    with_fault(vec![r], "imghang", "Error creating image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn glance_500_while_waiting_for_the_image() {
    // The half-made image must go (Packer leaves it).
    with_fault(
        vec![Rule::new("GET", "/v2/images/", Fault::Status500)],
        "glance500",
        "Error waiting for image",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn create_box_failures_leave_nothing() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    // A raw image of the project's own, as the builder would leave it.
    let src = cloud
        .create_image(serde_json::json!({"name": "raw-for-create_box", "disk_format": "raw", "container_format": "bare"}))
        .await
        .unwrap();
    let mut data = vec![0u8; 6 << 20];
    data[..1 << 20]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    cloud
        .upload_image(
            &src.id,
            reqwest::Body::from(data.clone()),
            Some(data.len() as u64),
        )
        .await
        .unwrap();
    let art: Arc<dyn Artifact> = Arc::new(kiln_openstack::builder::ImageArtifact::new(
        cloud.clone(),
        src.id.clone(),
    ));
    for (rule, expect) in [
        (Rule::new("PUT", "/file", Fault::Status500), "uploading"),
        (Rule::new("GET", "/file", Fault::Status500), "downloading"),
        (
            Rule::new("POST", "/v2/images", Fault::Status500),
            "creating the image",
        ),
    ] {
        let proxy = FaultProxy::start(vec![rule]).await;
        let dir = tempfile::tempdir().unwrap();
        let (out, ctx) = support::ctx(dir.path());
        let pp = CreateBox {
            config: create_box::Config {
                access: AccessKeys {
                    identity_endpoint: Some(proxy.keystone_url.clone()),
                    ..Default::default()
                },
                disk_format: "qcow2".into(),
                container_format: "bare".into(),
                compression_level: 6,
                ..Default::default()
            },
        };
        let pctx = PostProcessCtx {
            build: &ctx,
            interp: Default::default(),
        };
        let err = match pp.post_process(&pctx, art.clone()).await {
            Ok(_) => panic!("create_box succeeded despite {expect} failing"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expect), "{err}\n{}", out.captured());
        let imgs: Vec<String> = holdings(&cloud).await.images;
        assert_eq!(imgs.len(), 1, "{expect}: {imgs:?}");
        assert!(imgs[0].starts_with(&src.id), "{imgs:?}");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(files.is_empty(), "{expect}: local files left: {files:?}");
    }
    // Ctrl-C while uploading (the upload hangs).
    let proxy = FaultProxy::start(vec![Rule::new("PUT", "/file", Fault::Hang)]).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let pp = CreateBox {
        config: create_box::Config {
            access: AccessKeys {
                identity_endpoint: Some(proxy.keystone_url.clone()),
                ..Default::default()
            },
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
            compression_level: 6,
            ..Default::default()
        },
    };
    let pctx = PostProcessCtx {
        build: &ctx,
        interp: Default::default(),
    };
    let cancel = ctx.cancel.clone();
    let (r, _) = tokio::join!(pp.post_process(&pctx, art.clone()), async {
        while proxy.faulted() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
    });
    assert!(
        matches!(r, Err(BuildError::Cancelled)),
        "{}",
        out.captured()
    );
    let imgs = holdings(&cloud).await.images;
    assert_eq!(imgs.len(), 1, "after Ctrl-C: {imgs:?}\n{}", out.captured());
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        files.is_empty(),
        "after Ctrl-C: local files left: {files:?}"
    );

    cloud.delete_image(&src.id).await.unwrap();
    assert_clean(&cloud, "create_box failures").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn create_box_publishes_local_images() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    // A raw disk as a local build would leave it: converted on the way.
    let raw = dir.path().join("disk.raw");
    let mut data = vec![0u8; 8 << 20];
    data[3 << 20..(3 << 20) + 100_000].fill(7);
    std::fs::write(&raw, &data).unwrap();
    // A qcow2 (the qemu builder's output): uploaded as it is.
    let q = dir.path().join("out-seed.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap();
    assert!(st.success());
    for (file, expect_size) in [
        (raw.clone(), None),
        (q.clone(), Some(std::fs::metadata(&q).unwrap().len())),
    ] {
        let (out, ctx) = support::ctx(dir.path());
        let art: Arc<dyn Artifact> = Arc::new(kiln_core::FileArtifact::new(
            "kiln.qemu",
            vec![file.clone()],
        ));
        let pp = CreateBox {
            config: create_box::Config {
                disk_format: "qcow2".into(),
                container_format: "bare".into(),
                compression_level: 6,
                ..Default::default()
            },
        };
        let pctx = PostProcessCtx {
            build: &ctx,
            interp: Default::default(),
        };
        let res = pp
            .post_process(&pctx, art)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()));
        assert!(res.keep, "a local file is kept unless asked otherwise");
        let a = res.artifact.unwrap();
        let img = cloud.get_image(&a.id()).await.unwrap();
        assert_eq!(img.status, "active");
        assert_eq!(img.disk_format.as_deref(), Some("qcow2"));
        assert_eq!(img.name, file.file_stem().unwrap().to_str().unwrap());
        if let Some(sz) = expect_size {
            assert_eq!(img.size, Some(sz));
        }
        // Same content as the raw disk.
        let back = dir.path().join("back.qcow2");
        let bytes = cloud
            .download_image(&img.id)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(&back, &bytes).unwrap();
        let o = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&back)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        a.destroy().await.unwrap();
    }
    assert!(raw.exists() && q.exists());
    assert_clean(&cloud, "publishing local images").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn run_and_image_options() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let private = cloud.network_id("private").await.unwrap();
    let nova = cloud.network_id("nova").await.unwrap();
    // reuse_ips: a free floating IP of the project's is used, and kept.
    let free = cloud.create_floating_ip(&nova, None).await.unwrap();
    let mut c = seed_config("options");
    c.source = Some(SourceImage::Filter(kiln_openstack::builder::ImageFilter {
        name: Some("Ubuntu precise".into()),
        visibility: Some("public".into()),
        most_recent: true,
        ..Default::default()
    }));
    c.instance_name = "kiln-options-instance".into();
    c.networks = vec![private.clone()];
    c.floating_ip_network = None;
    c.reuse_ips = true;
    c.user_data = Some("#cloud-config\n".into());
    c.config_drive = true;
    c.instance_metadata = [("purpose".to_string(), "test".to_string())].into();
    c.image_tags = vec!["kiln".into(), "seed".into()];
    c.image_visibility = Some("shared".into());
    c.image_members = vec!["5f1a2b3c4d5e6f708192a3b4c5d6e7f8".into()];
    c.image_min_disk = Some(3);
    c.image_metadata = [("os_distro".to_string(), "ubuntu".to_string())].into();
    c.ssh_interface = Some("private".into());
    c.comm.none = true;
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let b = builder(c, dir.path(), Duration::from_secs(5));
    let art = run_build(&b, &ctx, &kiln_core::component::NoHook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()))
        .unwrap();
    let text = out.captured();
    assert!(
        text.contains("Found Image ID: 82b55c8c-cce1-4301-92c4-b005180531de"),
        "{text}"
    );
    assert!(
        text.contains("Searching for unassociated floating IP"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Selected floating IP: '{}'", free.id)),
        "{text}"
    );
    assert!(
        !text.contains("Creating temporary keypair"),
        "no SSH, no key pair: {text}"
    );
    let img = cloud.get_image(&art.id()).await.unwrap();
    let mut tags = img.tags.clone();
    tags.sort();
    assert_eq!(tags, vec!["kiln", "seed"]);
    assert_eq!(img.visibility.as_deref(), Some("shared"));
    assert_eq!(img.min_disk, Some(3));
    assert_eq!(img.raw["os_distro"], "ubuntu");
    let members = cloud
        .session
        .json(
            kiln_openstack::client::Service::Image,
            reqwest::Method::GET,
            &format!("/images/{}/members", img.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        members["members"][0]["member_id"],
        "5f1a2b3c4d5e6f708192a3b4c5d6e7f8"
    );
    // The floating IP was not ours to delete: still there, free again.
    let f = cloud.get_floating_ip(&free.id).await.unwrap();
    assert_eq!(f.port_id, None);
    cloud.delete_floating_ip(&free.id).await.unwrap();
    art.destroy().await.unwrap();
    assert_clean(&cloud, "the options build").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn clouds_yaml_and_os_cloud() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let file = root.join("config/clouds.yaml").display().to_string();
    let env = [
        ("OS_CLOUD", "lab"),
        ("OS_CLIENT_CONFIG_FILE", file.as_str()),
    ];
    let o = kiln_openstack::client::auth::resolve(
        &AccessKeys::default(),
        &|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        },
        &|p| std::fs::read_to_string(p).ok(),
    )
    .unwrap();
    let s = kiln_openstack::Session::connect(o).await.unwrap();
    let f = kiln_openstack::Cloud::new(s)
        .find_flavor("m1.small")
        .await
        .unwrap();
    assert_eq!(f.id, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn token_and_application_credential_auth() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = seed_cloud(&root).await;
    let tok = cloud.session.token().await.unwrap();
    let rc = read_rc(&root.join("seedrc"));
    let auth_url = rc["OS_AUTH_URL"].clone();
    let resolve = |keys: AccessKeys| {
        let env = [("OS_AUTH_URL", auth_url.clone())];
        kiln_openstack::client::auth::resolve(
            &keys,
            &|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
            &|_| None,
        )
        .unwrap()
    };
    // `token` (rescoped to the project).
    let o = resolve(AccessKeys {
        token: Some(tok.id.clone()),
        tenant_name: Some("jb23".into()),
        ..Default::default()
    });
    let s = kiln_openstack::Session::connect(o).await.unwrap();
    assert_eq!(s.project_id().await.unwrap(), tok.project_id);
    // An application credential of jb23's.
    let user = tok.user_id.clone().unwrap();
    let url = format!(
        "{}/users/{user}/application_credentials",
        auth_url.trim_end_matches('/')
    );
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(&url)
        .header("X-Auth-Token", &tok.id)
        .json(&serde_json::json!({"application_credential": {"name": format!("kiln-{}", uuid::Uuid::new_v4())}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = v["application_credential"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let o = resolve(AccessKeys {
        application_credential_id: Some(id.clone()),
        application_credential_secret: Some(secret),
        ..Default::default()
    });
    let s = kiln_openstack::Session::connect(o).await.unwrap();
    let f = kiln_openstack::Cloud::new(s.clone())
        .find_flavor("m1.small")
        .await
        .unwrap();
    assert_eq!(f.id, "2");
    assert_eq!(s.project_id().await.unwrap(), tok.project_id);
    http.delete(format!("{url}/{id}"))
        .header("X-Auth-Token", &tok.id)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}
