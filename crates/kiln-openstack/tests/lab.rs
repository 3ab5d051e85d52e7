//! The `openstack` builder and the `create_box` post-processor against real
//! OpenStack services (testlab/openstack), with kiln's own SSH
//! communicator. Run with `KILN_OPENSTACK_LAB=<root of a running lab>` and
//! `--include-ignored` (testlab/openstack/with-lab.sh and scripts/test.sh
//! do both). Every test ends by checking that the project holds no server,
//! floating IP, temporary key pair or image it did not hold before (the
//! lab has no Cinder: volumes are exercised in tests/mock_volume.rs).
//!
//! Builder configurations are decoded from the seed's template,
//! `examples/seed/openstack.json` verbatim, with each test's keys merged
//! into its builder object.
mod support;

use kiln_core::communicator::Communicator;
use kiln_core::{
    async_trait, Artifact, BuildCtx, BuildError, Builder, Hook, PostProcessCtx, PostProcessor,
};
use kiln_openstack::builder::{OpenStackBuilder, MARKER_KEY};
use kiln_openstack::client::AccessKeys;
use kiln_openstack::create_box::{self, CreateBox};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const SEED_IMAGE: &str = "82b55c8c-cce1-4301-92c4-b005180531de";

/// How long one API call may take in the fault tests (a hung request
/// fails after this long).
const FAULT_TIMEOUT: &str = "6";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The seed's template (examples/seed/openstack.json, verbatim).
fn seed_template() -> Value {
    let text = std::fs::read_to_string(repo().join("examples/seed/openstack.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The seed's builder, its image named after the test, with `overrides`
/// merged into its object (`null` removes a key), decoded as kiln decodes
/// a template: the builder's configuration and kiln's SSH communicator.
fn seed_builder(tag: &str, overrides: Value) -> OpenStackBuilder {
    use kiln_template::template::{parse, BUILDER_CORE_KEYS};
    use kiln_template::{Context, Decoder, Diagnostics, Source};
    let mut t = seed_template();
    let b = t["builders"][0].as_object_mut().unwrap();
    b.insert("image_name".into(), json!(format!("kiln {tag}")));
    for (k, v) in overrides.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            b.remove(&k);
        } else {
            b.insert(k, v);
        }
    }
    let text = serde_json::to_string_pretty(&t).unwrap();
    let tpl = parse(Arc::new(Source {
        path: "template.json".into(),
        text: text.clone(),
    }))
    .unwrap_or_else(|d| panic!("{d}\n{text}"));
    let ctx = Context::new(tpl.dir.clone());
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&tpl.builders[0].config, &ctx, &mut diags);
    d.ignore(BUILDER_CORE_KEYS);
    let config = kiln_openstack::decode_builder(&mut d);
    d.finish();
    assert!(diags.is_empty(), "{diags}\n{text}");
    OpenStackBuilder::new(config)
}

/// The seed's provisioners, over the communicator: its shell scripts (the
/// lab's harmless stand-ins) with `sudo bash`, then a check that /stash is
/// there for its file provisioner.
fn seed_hook() -> CommandsHook {
    let t = seed_template();
    let stand_ins = repo().join("testlab/openstack/seed");
    let mut cmds: Vec<String> = t["provisioners"][0]["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let script = std::fs::read_to_string(stand_ins.join(s.as_str().unwrap())).unwrap();
            format!("sudo bash -c '{}'", script.replace('\'', "'\\''"))
        })
        .collect();
    cmds.push("test -d /stash && test -w /stash && echo stash-ok".into());
    let refs: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
    CommandsHook::new(&refs)
}

async fn assert_clean(cloud: &kiln_openstack::Cloud, what: &str) {
    let h = holdings(cloud).await;
    assert_eq!(h, Holdings::default(), "left behind after {what}");
}

/// Lab set-up shared by every test: the seed's user, a clean project.
async fn start(root: &Path) -> kiln_openstack::Cloud {
    export_seedrc(root);
    let cloud = seed_cloud(root).await;
    sweep(&cloud).await;
    cloud
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn seed_template_builds_and_create_box_makes_qcow2() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let b = seed_builder("seed", json!({}));
    let hook = seed_hook();
    let art = b
        .run(&ctx, &hook)
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
        "compiler_tools.sh: running as root",
        "stash-ok",
        "Stopping server: ",
        "Creating the image: kiln seed",
        "Waiting for image kiln seed (image id: ",
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
    assert_eq!(raw.name, "kiln seed");

    // The seed's create_box step, built in; no credentials of its own: it
    // works with the builder's session.
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

/// Build `b` with `hook`, expect failure, then check that nothing is left.
/// Returns the failure and the transcript.
async fn fails_clean(
    cloud: &kiln_openstack::Cloud,
    b: &OpenStackBuilder,
    hook: &dyn Hook,
    what: &str,
) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let r = b.run(&ctx, hook).await;
    let text = out.captured();
    let err = match r {
        Ok(_) => panic!("{what}: the build succeeded:\n{text}"),
        Err(e) => e.to_string(),
    };
    assert!(
        ctx.ledger.live().is_empty(),
        "{what}: ledger {:?}\n{err}\n{text}",
        ctx.ledger.live()
    );
    let h = holdings(cloud).await;
    assert_eq!(h, Holdings::default(), "{what}: left behind\n{err}\n{text}");
    (err, text)
}

/// Build `b`, expect success, delete the image, check that nothing is left.
async fn succeeds_clean(
    cloud: &kiln_openstack::Cloud,
    b: &OpenStackBuilder,
    hook: &dyn Hook,
    what: &str,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let art = b
        .run(&ctx, hook)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", out.captured()))
        .expect("an artifact");
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    art.destroy().await.unwrap();
    assert_clean(cloud, what).await;
    out.captured()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn provisioner_failure_cleans_up() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let hook = CommandsHook::new(&["echo about to fail", "exit 1"]);
    let b = seed_builder(
        "prov",
        json!({"source_image": null, "source_image_name": "Ubuntu precise"}),
    );
    let (err, text) = fails_clean(&cloud, &b, &hook, "provisioner exit 1").await;
    assert!(err.contains("non-zero exit status"), "{err}");
    assert!(text.contains("Found Image ID: 82b55c8c"), "{text}");
    assert!(text.contains("Deleting temporary keypair"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn ssh_never_reachable_cleans_up() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    // Nothing listens there.
    let b = seed_builder(
        "nossh",
        json!({"ssh_host": "127.0.0.250", "ssh_timeout": "3s"}),
    );
    let hook = CommandsHook::new(&["true"]);
    let (err, _) = fails_clean(&cloud, &b, &hook, "SSH never reachable").await;
    assert!(err.contains("Timeout waiting for SSH"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_provisioning_cleans_up() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let b = seed_builder("sigint", json!({}));
    let hook = BlockingHook {
        started: tokio::sync::Notify::new(),
    };
    let cancel = ctx.cancel.clone();
    let (r, _) = tokio::join!(b.run(&ctx, &hook), async {
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

/// Nova puts the server in ERROR while kiln waits for SSH (for up to 10
/// minutes): the build fails at the next look at the server, with the
/// machine's death as its typed error (a timeout would be another error),
/// and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn server_in_error_while_waiting_for_ssh_fails_at_once() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let admin = admin_cloud(&root).await;
    // Nothing listens there: SSH never answers.
    let b = seed_builder(
        "error",
        json!({"ssh_host": "127.0.0.250", "ssh_timeout": "10m"}),
    );
    let hook = CommandsHook::new(&["true"]);
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let done = std::sync::atomic::AtomicBool::new(false);
    let (r, _) = tokio::join!(
        async {
            let r = b.run(&ctx, &hook).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        },
        async {
            while !out.captured().contains("Using ssh communicator to connect")
                && !done.load(std::sync::atomic::Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !done.load(std::sync::atomic::Ordering::SeqCst) {
                let id = ctx.generated()["ID"].clone();
                admin
                    .server_action(&id, json!({"os-resetState": {"state": "error"}}))
                    .await
                    .unwrap();
            }
        }
    );
    let text = out.captured();
    let e = match r {
        Ok(_) => panic!("the build succeeded:\n{text}"),
        Err(e) => e,
    };
    let stopped = e
        .find::<kiln_commonsteps::MachineStopped>()
        .unwrap_or_else(|| panic!("not a MachineStopped: {e}\n{text}"));
    assert!(
        stopped
            .report
            .contains("stopped while waiting for SSH: server is in ERROR"),
        "{e}"
    );
    assert!(text.contains("Terminating the source server"), "{text}");
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    assert_clean(&cloud, "a server in ERROR").await;
}

/// The seed's builder through a fault proxy (`overrides` merged in).
fn through(proxy: &FaultProxy, tag: &str, mut overrides: Value) -> OpenStackBuilder {
    overrides["identity_endpoint"] = json!(proxy.keystone_url);
    seed_builder(tag, overrides)
}

/// One fault-injection case that must fail: the rules, extra builder keys,
/// and what the error must mention. Returns the proxy (for its log) and
/// the transcript.
async fn with_fault(
    rules: Vec<Rule>,
    tag: &str,
    overrides: Value,
    expect: &str,
) -> Option<(FaultProxy, String)> {
    let root = lab()?;
    let _g = SERIAL.lock().await;
    let _t = EnvVar::set("KILN_OPENSTACK_REQUEST_TIMEOUT", FAULT_TIMEOUT);
    let cloud = start(&root).await;
    let proxy = FaultProxy::start(rules).await;
    let b = through(&proxy, tag, overrides);
    let hook = CommandsHook::new(&["true"]);
    let (err, text) = fails_clean(&cloud, &b, &hook, tag).await;
    assert!(proxy.faulted() > 0, "{tag}: the fault never hit\n{text}");
    assert!(err.contains(expect), "{tag}: {err}\n{text}");
    Some((proxy, text))
}

/// One fault-injection case the build must survive.
async fn survives_fault(rules: Vec<Rule>, tag: &str) {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let _t = EnvVar::set("KILN_OPENSTACK_REQUEST_TIMEOUT", FAULT_TIMEOUT);
    let cloud = start(&root).await;
    let proxy = FaultProxy::start(rules).await;
    let b = through(&proxy, tag, json!({}));
    let hook = CommandsHook::new(&["true"]);
    let text = succeeds_clean(&cloud, &b, &hook, tag).await;
    assert!(proxy.faulted() > 0, "{tag}: the fault never hit\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_on_keypair() {
    with_fault(
        vec![Rule::new("POST", "/os-keypairs", Fault::Status500)],
        "kp500",
        json!({}),
        "Error creating temporary keypair",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn glance_500_on_source_image_lookup() {
    with_fault(
        vec![Rule::new("GET", "/v2/images?", Fault::Status500)],
        "src500",
        json!({"source_image": null, "source_image_name": "Ubuntu precise"}),
        "Error querying image",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_on_server_create() {
    with_fault(
        vec![Rule::new("POST", "/v2.1/servers", Fault::Status500).once()],
        "srv500",
        json!({}),
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
        json!({}),
        "timed out",
    )
    .await;
}

/// Without a temporary key pair (an existing key pair, or a password), a
/// server whose create got no answer is still found (by kiln's marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_timeout_on_server_create_without_a_temporary_key_pair() {
    let Some(root) = lab() else { return };
    let key = root.join("ssh/id_test").display().to_string();
    for (tag, keys) in [
        (
            "srvhang-kp",
            json!({"ssh_keypair_name": "testkey", "ssh_private_key_file": key}),
        ),
        ("srvhang-pw", json!({"ssh_password": "not-used"})),
    ] {
        let (proxy, text) = with_fault(
            vec![Rule::new("POST", "/v2.1/servers", Fault::ForwardAndHang).once()],
            tag,
            keys,
            "Error launching source server",
        )
        .await
        .unwrap();
        assert!(proxy.requests("/os-keypairs").is_empty(), "{text}");
        assert!(text.contains("Terminating the source server"), "{text}");
        let cloud = seed_cloud(&root).await;
        let kps = cloud.keypair_names().await.unwrap();
        assert!(kps.contains(&"testkey".to_string()), "{kps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_while_waiting_for_active() {
    with_fault(
        vec![Rule::new("GET", "/v2.1/servers/", Fault::Status500)
            .times(4)
            .after("POST", "/v2.1/servers")],
        "active500",
        json!({}),
        "to become ready",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_hang_while_waiting_for_active_is_survived() {
    // One status request never answered: retried, the build goes on.
    survives_fault(
        vec![Rule::new("GET", "/v2.1/servers/", Fault::Hang)
            .once()
            .after("POST", "/v2.1/servers")],
        "activehang",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn neutron_500_on_floating_ip() {
    with_fault(
        vec![Rule::new("POST", "/v2.0/floatingips", Fault::Status500)],
        "fip500",
        json!({}),
        "Error creating floating IP",
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
        json!({}),
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
        json!({}),
        "Error stopping server",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_500_while_waiting_for_shutoff() {
    with_fault(
        vec![Rule::new("GET", "/v2.1/servers/", Fault::Status500)
            .times(4)
            .after("POST", "/action")],
        "shutoff500",
        json!({}),
        "to stop",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn nova_hang_while_waiting_for_shutoff_is_survived() {
    survives_fault(
        vec![Rule::new("GET", "/v2.1/servers/", Fault::Hang)
            .once()
            .after("POST", "/action")],
        "shutoffhang",
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
    with_fault(vec![r], "imghang", json!({}), "Error creating image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn glance_500_while_waiting_for_the_image() {
    // The half-made image must go (Packer leaves it).
    with_fault(
        vec![Rule::new("GET", "/v2/images/", Fault::Status500)],
        "glance500",
        json!({}),
        "Error waiting for image",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn glance_500_on_image_properties() {
    // The image is active but its properties could not be set: not the
    // image asked for, so it is deleted.
    let (_, text) = with_fault(
        vec![Rule::new("PATCH", "/v2/images/", Fault::Status500)],
        "patch500",
        json!({"image_tags": ["kiln"], "image_min_disk": 2}),
        "Error updating image",
    )
    .await
    .unwrap();
    assert!(text.contains("Deleting the unfinished image"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn glance_hang_on_image_properties() {
    with_fault(
        vec![Rule::new("PATCH", "/v2/images/", Fault::Hang)],
        "patchhang",
        json!({"image_visibility": "shared"}),
        "Error updating image",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn glance_500_on_image_members() {
    with_fault(
        vec![Rule::new("POST", "/members", Fault::Status500)],
        "member500",
        json!({"image_visibility": "shared", "image_members": ["5f1a2b3c4d5e6f708192a3b4c5d6e7f8"]}),
        "Error adding member",
    )
    .await;
}

/// Let the held answer through once cleanup says it waits for it (or once
/// the build is over without having waited: the test then fails).
async fn release_when_waited_for(
    proxy: &FaultProxy,
    out: &kiln_core::ui::Output,
    done: &std::sync::atomic::AtomicBool,
) {
    while !out.captured().contains("Waiting for the answer to the")
        && !done.load(std::sync::atomic::Ordering::SeqCst)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.release();
}

/// Ctrl-C while a create request is on its way: the proxy carries it out
/// but holds the cloud's answer; the build is cancelled (the step's future
/// is dropped); the answer is let through once cleanup waits for it. With
/// `answer: false` the answer never comes (cleanup then finds the resource
/// by its marker). Either way nothing may be left.
async fn cancel_while_held(rule: Rule, tag: &str, answer: bool) {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let _t = EnvVar::set("KILN_OPENSTACK_REQUEST_TIMEOUT", FAULT_TIMEOUT);
    let cloud = start(&root).await;
    let what = rule.path.clone();
    let proxy = FaultProxy::start(vec![rule]).await;
    let b = through(&proxy, tag, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let hook = CommandsHook::new(&["true"]);
    let cancel = ctx.cancel.clone();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (r, _) = tokio::join!(
        async {
            let r = b.run(&ctx, &hook).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        },
        async {
            // The cloud has done the work; kiln has no answer yet.
            while proxy.forwarded() == 0 && !done.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
            if answer {
                release_when_waited_for(&proxy, &out, &done).await;
            }
        }
    );
    let text = out.captured();
    assert!(
        matches!(r, Err(BuildError::Cancelled)),
        "{tag}: {:?}\n{text}",
        r.err()
    );
    assert!(
        text.contains("Waiting for the answer to the"),
        "{tag}: cleanup did not wait for the {what} request\n{text}"
    );
    assert!(
        ctx.ledger.live().is_empty(),
        "{tag}: {:?}\n{text}",
        ctx.ledger.live()
    );
    let h = holdings(&cloud).await;
    assert_eq!(h, Holdings::default(), "{tag}: left behind\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_keypair_create() {
    cancel_while_held(
        Rule::new("POST", "/os-keypairs", Fault::Hold).once(),
        "kp-cancel",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_server_create() {
    cancel_while_held(
        Rule::new("POST", "/v2.1/servers", Fault::Hold).once(),
        "srv-cancel",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_server_create_never_answered() {
    cancel_while_held(
        Rule::new("POST", "/v2.1/servers", Fault::ForwardAndHang).once(),
        "srv-cancel-hang",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_floating_ip_create() {
    cancel_while_held(
        Rule::new("POST", "/v2.0/floatingips", Fault::Hold).once(),
        "fip-cancel",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn cancel_during_image_create() {
    // The second action: createImage (the first is os-stop).
    let mut r = Rule::new("POST", "/action", Fault::Hold).once();
    r.skip = 1;
    cancel_while_held(r, "img-cancel", true).await;
}

/// A raw image of the project's own, as the builder would leave it.
async fn raw_image(cloud: &kiln_openstack::Cloud) -> (kiln_openstack::client::api::Image, usize) {
    let src = cloud
        .create_image(
            json!({"name": "raw-for-create_box", "disk_format": "raw", "container_format": "bare"}),
        )
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
    (src, data.len())
}

fn proxied_create_box(proxy: &FaultProxy) -> CreateBox {
    CreateBox {
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn create_box_failures_leave_nothing() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let _t = EnvVar::set("KILN_OPENSTACK_REQUEST_TIMEOUT", FAULT_TIMEOUT);
    let cloud = start(&root).await;
    let (src, _) = raw_image(&cloud).await;
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
        (
            Rule::new("POST", "/v2/images", Fault::ForwardAndHang),
            "creating the image",
        ),
    ] {
        let proxy = FaultProxy::start(vec![rule]).await;
        let dir = tempfile::tempdir().unwrap();
        let (out, ctx) = support::ctx(dir.path());
        let pp = proxied_create_box(&proxy);
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
        assert_eq!(imgs.len(), 1, "{expect}: {imgs:?}\n{}", out.captured());
        assert!(imgs[0].starts_with(&src.id), "{imgs:?}");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(files.is_empty(), "{expect}: local files left: {files:?}");
    }
    // Ctrl-C while uploading (the upload hangs), and while the create
    // request's answer is held.
    for (rule, hold) in [
        (Rule::new("PUT", "/file", Fault::Hang), false),
        (Rule::new("POST", "/v2/images", Fault::Hold), true),
    ] {
        let proxy = FaultProxy::start(vec![rule]).await;
        let dir = tempfile::tempdir().unwrap();
        let (out, ctx) = support::ctx(dir.path());
        let pp = proxied_create_box(&proxy);
        let pctx = PostProcessCtx {
            build: &ctx,
            interp: Default::default(),
        };
        let cancel = ctx.cancel.clone();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (r, _) = tokio::join!(
            async {
                let r = pp.post_process(&pctx, art.clone()).await;
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                r
            },
            async {
                let hit = || {
                    if hold {
                        proxy.forwarded()
                    } else {
                        proxy.faulted()
                    }
                };
                while hit() == 0 && !done.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cancel.cancel();
                if hold {
                    release_when_waited_for(&proxy, &out, &done).await;
                }
            }
        );
        assert!(
            matches!(r, Err(BuildError::Cancelled)),
            "{}",
            out.captured()
        );
        if hold {
            assert!(
                out.captured().contains("Waiting for the answer to the"),
                "{}",
                out.captured()
            );
        }
        let imgs = holdings(&cloud).await.images;
        assert_eq!(imgs.len(), 1, "after Ctrl-C: {imgs:?}\n{}", out.captured());
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            files.is_empty(),
            "after Ctrl-C: local files left: {files:?}"
        );
    }

    cloud.delete_image(&src.id).await.unwrap();
    assert_clean(&cloud, "create_box failures").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn create_box_publishes_local_images() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
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

/// While provisioning, reads the server as Nova has it (before it is
/// deleted).
struct InspectServer {
    cloud: kiln_openstack::Cloud,
    server: Mutex<Value>,
    then: CommandsHook,
}

#[async_trait]
impl Hook for InspectServer {
    async fn provision(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let id = ctx.generated()["ID"].clone();
        let v = self
            .cloud
            .session
            .json(
                kiln_openstack::client::Service::Compute,
                reqwest::Method::GET,
                &format!("/servers/{id}"),
                None,
            )
            .await
            .map_err(BuildError::from)?;
        *self.server.lock().unwrap() = v["server"].clone();
        if comm.is_some() {
            self.then.provision(ctx, comm).await?;
        }
        Ok(())
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn run_and_image_options() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let private = cloud.network_id("private").await.unwrap();
    let nova = cloud.network_id("nova").await.unwrap();
    // reuse_ips: a free floating IP of the project's is used, and kept.
    let free = cloud.create_floating_ip(&nova, None).await.unwrap();
    let proxy = FaultProxy::start(vec![]).await;
    let b = through(
        &proxy,
        "options",
        json!({
            "source_image": null,
            "source_image_filter": {"filters": {"name": "Ubuntu precise", "visibility": "public"}, "most_recent": true},
            "instance_name": "kiln-options-instance",
            "networks": [private],
            "floating_ip_pool": null,
            "reuse_ips": true,
            "user_data": "#cloud-config\n",
            "config_drive": true,
            "instance_metadata": {"purpose": "test"},
            "image_tags": ["kiln", "seed"],
            "image_visibility": "shared",
            "image_members": ["5f1a2b3c4d5e6f708192a3b4c5d6e7f8"],
            "image_min_disk": 3,
            "metadata": {"os_distro": "ubuntu"},
            "ssh_interface": "private",
            "communicator": "none",
        }),
    );
    let hook = InspectServer {
        cloud: cloud.clone(),
        server: Mutex::new(Value::Null),
        then: CommandsHook::new(&[]),
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let art = b
        .run(&ctx, &hook)
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
    // What kiln asked Nova for...
    let sent: Vec<Value> = proxy
        .bodies("POST :8774/v2.1/servers")
        .into_iter()
        .filter(|b| b.get("server").is_some())
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let s = &sent[0]["server"];
    assert_eq!(s["name"], "kiln-options-instance");
    assert_eq!(s["networks"], json!([{"uuid": private}]));
    assert_eq!(s["user_data"], b64("#cloud-config\n"));
    assert_eq!(s["config_drive"], true);
    assert_eq!(s["metadata"]["purpose"], "test");
    assert_eq!(s["security_groups"], json!([{"name": "ssh"}]));
    assert!(s.get("key_name").is_none(), "{s}");
    // ...and what Nova made of it.
    let sv = hook.server.lock().unwrap().clone();
    assert_eq!(sv["name"], "kiln-options-instance");
    assert_eq!(sv["metadata"]["purpose"], "test");
    assert_eq!(sv["metadata"][MARKER_KEY], s["metadata"][MARKER_KEY]);
    assert!(
        sv["config_drive"] == "True" || sv["config_drive"] == true,
        "{sv}"
    );
    let nets: Vec<&String> = sv["addresses"].as_object().unwrap().keys().collect();
    assert_eq!(nets, ["private"], "{sv}");
    assert_eq!(sv["security_groups"][0]["name"], "ssh", "{sv}");

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

/// `ports`, `availability_zone`, `user_data_file`, an explicit
/// `floating_ip`, `ssh_keypair_name` and `force_delete`, with SSH over the
/// given floating IP and the existing key pair's private key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn ports_zone_user_data_file_floating_ip_keypair_force_delete() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let private = cloud.network_id("private").await.unwrap();
    let nova = cloud.network_id("nova").await.unwrap();
    let net = kiln_openstack::client::Service::Network;
    let port = cloud
        .session
        .json(
            net,
            reqwest::Method::POST,
            "/ports",
            Some(json!({"port": {"network_id": private, "name": "kiln-test-port"}})),
        )
        .await
        .unwrap()["port"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fip = cloud.create_floating_ip(&nova, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, "#!/bin/sh\necho from a user_data_file\n").unwrap();
    let proxy = FaultProxy::start(vec![]).await;
    let b = through(
        &proxy,
        "ports",
        json!({
            "ports": [port],
            "availability_zone": "nova",
            "user_data_file": ud.display().to_string(),
            "floating_ip": fip.id,
            "floating_ip_pool": null,
            "ssh_keypair_name": "testkey",
            "ssh_private_key_file": root.join("ssh/id_test").display().to_string(),
            "force_delete": true,
        }),
    );
    let hook = InspectServer {
        cloud: cloud.clone(),
        server: Mutex::new(Value::Null),
        then: CommandsHook::new(&["echo over-the-given-floating-ip"]),
    };
    let (out, ctx) = support::ctx(dir.path());
    let art = b
        .run(&ctx, &hook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()))
        .unwrap();
    let text = out.captured();
    assert!(text.contains("over-the-given-floating-ip"), "{text}");
    assert!(
        text.contains(&format!("Selected floating IP: '{}'", fip.id)),
        "{text}"
    );
    assert!(text.contains("Using existing SSH private key"), "{text}");
    assert!(
        ctx.generated()["Host"] == fip.address,
        "{:?}",
        ctx.generated()
    );
    let sent: Vec<Value> = proxy
        .bodies("POST :8774/v2.1/servers")
        .into_iter()
        .filter(|b| b.get("server").is_some())
        .collect();
    let s = &sent[0]["server"];
    assert_eq!(s["networks"], json!([{"port": port}]));
    assert_eq!(s["availability_zone"], "nova");
    assert_eq!(
        s["user_data"],
        b64("#!/bin/sh\necho from a user_data_file\n")
    );
    assert_eq!(s["key_name"], "testkey");
    let sv = hook.server.lock().unwrap().clone();
    assert_eq!(sv["key_name"], "testkey");
    assert_eq!(sv["OS-EXT-AZ:availability_zone"], "nova", "{sv}");
    // No temporary key pair; the user's key pair is not kiln's to delete.
    assert!(proxy.requests("/os-keypairs").is_empty());
    assert!(cloud
        .keypair_names()
        .await
        .unwrap()
        .contains(&"testkey".to_string()));
    // force_delete: Nova's forceDelete action, no DELETE of the server.
    let id = sv["id"].as_str().unwrap();
    assert!(
        proxy
            .bodies(&format!("/servers/{id}/action"))
            .contains(&json!({"forceDelete": null})),
        "{:?}",
        proxy.log.lock().unwrap()
    );
    assert!(
        !proxy
            .requests(&format!("/servers/{id}"))
            .iter()
            .any(|l| l.starts_with("DELETE ")),
        "{:?}",
        proxy.log.lock().unwrap()
    );
    // The given floating IP is not deleted.
    cloud.get_floating_ip(&fip.id).await.unwrap();
    art.destroy().await.unwrap();
    cloud.delete_floating_ip(&fip.id).await.unwrap();
    cloud
        .session
        .request(
            net,
            reqwest::Method::DELETE,
            &format!("/ports/{port}"),
            kiln_openstack::client::session::Body::None,
        )
        .await
        .unwrap();
    assert_clean(&cloud, "the ports build").await;
}

/// A build longer than Keystone's tokens live: the lab's second Keystone
/// issues short-lived tokens (same users, same keys); the provisioner
/// sleeps past the first token's expiry, and the build still finishes,
/// having asked Keystone for a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab: scripts/test.sh runs it with --include-ignored"]
async fn token_expires_mid_build() {
    let Some(root) = lab() else { return };
    let _g = SERIAL.lock().await;
    let cloud = start(&root).await;
    let short: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("short-keystone.json")).unwrap())
            .unwrap();
    let port = short["port"].as_u64().unwrap() as u16;
    let life = short["token_expiration"].as_u64().unwrap();
    let proxy = FaultProxy::start_with(port, vec![]).await;
    let b = through(&proxy, "short-token", json!({}));
    let sleep = format!("sleep {}", life + 2);
    let hook = CommandsHook::new(&[sleep.as_str()]);
    let dir = tempfile::tempdir().unwrap();
    let (out, ctx) = support::ctx(dir.path());
    let art = b
        .run(&ctx, &hook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()))
        .unwrap();
    assert!(
        proxy.token_requests() >= 2,
        "no new token: {:?}",
        proxy.log.lock().unwrap()
    );
    // Keystone really issues tokens that short-lived there.
    let mut rc = read_rc(&root.join("seedrc"));
    rc.insert("OS_AUTH_URL".into(), format!("http://127.0.0.1:{port}/v3"));
    let o = kiln_openstack::client::auth::resolve(
        &AccessKeys::default(),
        &|k| rc.get(k).cloned(),
        &|_| None,
    )
    .unwrap();
    let t = kiln_openstack::Session::connect(o)
        .await
        .unwrap()
        .token()
        .await
        .unwrap();
    let lived = t.expires_at.unwrap() - t.issued_at;
    assert!(lived.whole_seconds() <= life as i64, "{lived}");
    // create_box goes on with the builder's session, whose token expired
    // again meanwhile.
    let before = proxy.token_requests();
    tokio::time::sleep(Duration::from_secs(life + 1)).await;
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
        .post_process(&pctx, art.clone())
        .await
        .unwrap_or_else(|e| panic!("create_box failed: {e}\n{}", out.captured()));
    assert!(proxy.token_requests() > before);
    res.artifact.unwrap().destroy().await.unwrap();
    art.destroy().await.unwrap();
    assert_clean(&cloud, "the short-token build").await;
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
    let v: Value = http
        .post(&url)
        .header("X-Auth-Token", &tok.id)
        .json(
            &json!({"application_credential": {"name": format!("kiln-{}", uuid::Uuid::new_v4())}}),
        )
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
