//! The seed's template, verbatim, through the `kiln` binary against real
//! OpenStack services (testlab/openstack), authenticated by the seed-style
//! `OS_*` variables of a non-admin user; then the same builders and
//! provisioners with the built-in `create_box` post-processor, which
//! replaces the raw snapshot with a qcow2 image. Afterwards the project
//! holds nothing it did not hold before.
//!
//! Also: a real SIGINT sent to `kiln build` while it provisions leaves the
//! project as it was, and `create_box` works with the builder's
//! credentials when they are only in the builder's keys.
//!
//! Needs a running lab: `testlab/openstack/with-lab.sh ROOT cargo test ...
//! -- --include-ignored` (scripts/test.sh does this).
#[path = "../../kiln-openstack/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A working directory like the seed's `Packer/openstack`: the template,
/// `scripts/` and `data/` (harmless stand-in scripts: "the instance" of the
/// lab is this machine).
fn seed_dir(template: &str) -> tempfile::TempDir {
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
    std::fs::write(d.path().join("template.json"), template).unwrap();
    d
}

fn kiln_build(root: &Path, dir: &Path) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(dir)
        .args(["build", "-color=false", "template.json"])
        .env_remove("OS_CLOUD");
    for (k, v) in support::read_rc(&root.join("seedrc")) {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn seed_template() -> String {
    std::fs::read_to_string(repo().join("examples/seed/openstack.json")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab (scripts/test.sh runs it)"]
async fn seed_template_verbatim_builds_then_create_box_replaces_the_raw_image() {
    let root = support::lab().expect("KILN_OPENSTACK_LAB must name a running lab");
    let _g = support::SERIAL.lock().await;
    let cloud = support::seed_cloud(&root).await;
    support::sweep(&cloud).await;
    let before = support::holdings(&cloud).await;

    // 1. The seed's template exactly as the seed writes it.
    let verbatim = seed_template();
    assert!(verbatim.contains("\"floating_ip_pool\" : \"nova\""));
    let d = seed_dir(&verbatim);
    let (ok, text) = kiln_build(&root, d.path());
    assert!(ok, "{text}");
    for line in [
        "==> openstack: Loading flavor: m1.small",
        "==> openstack: Creating temporary keypair",
        "==> openstack: Launching server...",
        "Created floating IP",
        "==> openstack: Connected to SSH!",
        "==> openstack: Provisioning with shell script: scripts/update.sh",
        "==> openstack: Uploading ./data/ => /stash",
        "==> openstack: Creating the image: image built by Packer",
        "Deleted temporary floating IP",
        "==> openstack: Terminating the source server",
        "==> openstack: Deleting temporary keypair",
        "--> openstack: An image was created: ",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let id = text
        .split("An image was created: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let raw = cloud.get_image(&id).await.unwrap();
    assert_eq!(raw.status, "active");
    assert_eq!(raw.name, "image built by Packer");
    let mut after = support::holdings(&cloud).await;
    after.images.retain(|i| !i.starts_with(&id));
    assert_eq!(after, before, "the build left something behind:\n{text}");
    cloud.delete_image(&id).await.unwrap();

    // 2. The same build with the seed's create_box step built in.
    let mut t: serde_json::Value = serde_json::from_str(&verbatim).unwrap();
    t["post-processors"] = serde_json::json!([{
        "type": "create_box",
        "name": "Packer example",
        "disk_format": "qcow2",
        "container_format": "bare"
    }]);
    let d = seed_dir(&serde_json::to_string_pretty(&t).unwrap());
    let (ok, text) = kiln_build(&root, d.path());
    assert!(ok, "{text}");
    let summary = text.split("Builds finished").nth(1).unwrap_or_default();
    assert_eq!(summary.matches("\n--> ").count(), 1, "{text}");
    let after = support::holdings(&cloud).await;
    let new: Vec<&String> = after
        .images
        .iter()
        .filter(|i| !before.images.contains(i))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "exactly the qcow2 image is left: {new:?}\n{text}"
    );
    let qid = new[0].split(' ').next().unwrap();
    let q = cloud.get_image(qid).await.unwrap();
    assert_eq!(q.name, "Packer example");
    assert_eq!(q.disk_format.as_deref(), Some("qcow2"));
    assert_eq!(q.status, "active");
    assert!(summary.contains(qid), "{text}");
    cloud.delete_image(qid).await.unwrap();
    assert_eq!(support::holdings(&cloud).await, before);
}

/// Ctrl-C (a real SIGINT) while the seed's build runs a provisioner:
/// kiln cleans up every step, says what it cleaned, exits 1, and the
/// project holds what it held before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab (scripts/test.sh runs it)"]
async fn sigint_during_provisioning_leaves_the_project_as_it_was() {
    let root = support::lab().expect("KILN_OPENSTACK_LAB must name a running lab");
    let _g = support::SERIAL.lock().await;
    let cloud = support::seed_cloud(&root).await;
    support::sweep(&cloud).await;
    let before = support::holdings(&cloud).await;

    // "The instance" is this machine: the provisioner leaves its pid here.
    let mark = std::env::temp_dir().join(format!("kiln-sigint-{}", uuid::Uuid::new_v4()));
    let mut t: serde_json::Value = serde_json::from_str(&seed_template()).unwrap();
    t["provisioners"] = serde_json::json!([{
        "type": "shell",
        "inline": [format!("echo $$ > {0}.tmp && mv {0}.tmp {0} && exec sleep 300", mark.display())]
    }]);
    let d = seed_dir(&serde_json::to_string_pretty(&t).unwrap());
    let log = d.path().join("kiln.log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(d.path())
        .args(["build", "-color=false", "template.json"])
        .env_remove("OS_CLOUD")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ));
    for (k, v) in support::read_rc(&root.join("seedrc")) {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let start = Instant::now();
    while !mark.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("kiln ended ({st}) before provisioning:\n{}", read_log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the provisioner never ran:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let remote_pid = std::fs::read_to_string(&mark).unwrap().trim().to_string();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "kiln did not stop after SIGINT:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The provisioner's remote command is this test's to stop.
    let _ = Command::new("kill").arg(&remote_pid).status();
    let _ = std::fs::remove_file(&mark);
    let text = read_log();
    assert_eq!(status.code(), Some(1), "{text}");
    for line in [
        "Cleaned up: ",
        "Terminating the source server",
        "Deleted temporary floating IP",
        "Deleting temporary keypair",
        "Cleanly cancelled builds after being interrupted",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("Creating the image"), "{text}");
    assert_eq!(support::holdings(&cloud).await, before, "{text}");
}

/// Credentials only in the builder's keys (no OS_*, no clouds.yaml):
/// create_box, which has none of its own, works with the builder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenStack lab (scripts/test.sh runs it)"]
async fn create_box_uses_the_builders_credentials() {
    let root = support::lab().expect("KILN_OPENSTACK_LAB must name a running lab");
    let _g = support::SERIAL.lock().await;
    let cloud = support::seed_cloud(&root).await;
    support::sweep(&cloud).await;
    let before = support::holdings(&cloud).await;
    let rc = support::read_rc(&root.join("seedrc"));
    let mut t: serde_json::Value = serde_json::from_str(&seed_template()).unwrap();
    let b = t["builders"][0].as_object_mut().unwrap();
    for (k, env) in [
        ("identity_endpoint", "OS_AUTH_URL"),
        ("username", "OS_USERNAME"),
        ("password", "OS_PASSWORD"),
        ("tenant_name", "OS_TENANT_NAME"),
        ("domain_name", "OS_USER_DOMAIN_NAME"),
    ] {
        b.insert(k.into(), serde_json::json!(rc[env]));
    }
    b.insert("image_name".into(), serde_json::json!("kiln builder creds"));
    b.insert("communicator".into(), serde_json::json!("none"));
    t["provisioners"] = serde_json::json!([]);
    t["post-processors"] =
        serde_json::json!([{"type": "create_box", "name": "qcow2 from builder creds"}]);
    let d = seed_dir(&serde_json::to_string_pretty(&t).unwrap());
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(d.path())
        .args(["build", "-color=false", "template.json"])
        .env("HOME", home.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            c.env_remove(k);
        }
    }
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(
        !text.contains(&rc["OS_PASSWORD"]),
        "a secret was printed:\n{text}"
    );
    let after = support::holdings(&cloud).await;
    let new: Vec<&String> = after
        .images
        .iter()
        .filter(|i| !before.images.contains(i))
        .collect();
    assert_eq!(new.len(), 1, "only the qcow2 is left: {new:?}\n{text}");
    let qid = new[0].split(' ').next().unwrap();
    let q = cloud.get_image(qid).await.unwrap();
    assert_eq!(q.name, "qcow2 from builder creds");
    assert_eq!(q.disk_format.as_deref(), Some("qcow2"));
    cloud.delete_image(qid).await.unwrap();
    assert_eq!(support::holdings(&cloud).await, before);
}
