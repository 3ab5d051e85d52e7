//! The machine's memory and devices in the provisioning cache (issue #15,
//! `docs/cache.md`): with each disk state, QEMU's migration stream of the
//! stopped machine is saved too, so that a resumed build continues the
//! machine where the saving build left it (`-incoming`) instead of
//! booting its disk (2-3 s instead of 35-45 s under TCG on the seed).
//!
//! Saving: QMP `stop`, the disk switched to a new overlay (the frozen file
//! is the disk state), `migrate` to a file, `cont`. The memory file is its
//! own cache entry, on top of the disk state's entry, keyed by the state's
//! key and the QEMU version (`kiln_cache::key::memory_key`); it also holds
//! (`machine.json`) the shape of the QEMU command line it was saved from
//! and the build's temporary SSH key, which the resumed machine's
//! `authorized_keys` holds and the next build logs in with.
//!
//! A memory state is used only when the resuming QEMU's command line has
//! the same shape (`signature`: the command line with paths and ports
//! replaced, so the same devices, CPU, accelerator and memory size); else,
//! or when QEMU cannot load it, the build boots the state's disk as before.
//! A resumed machine's clock is the saved one: kiln sets it to the host's
//! (`sudo -n date`) or says by how much it is behind.
use crate::args::{self, Runtime};
use crate::config::Config;
use kiln_cache::Entry;
use kiln_ssh::TempKeyPair;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The migration stream in a memory entry.
pub const MEMORY: &str = "memory.bin";
/// The command line's shape and the SSH key, in a memory entry.
pub const MACHINE: &str = "machine.json";

/// A memory state the build may resume from.
#[derive(Clone)]
pub struct Saved {
    pub entry: Entry,
    /// The shape of the command line that saved it ([`signature`]).
    pub signature: String,
    /// The temporary key the machine accepts (`None`: the template's own
    /// credentials).
    pub key: Option<TempKeyPair>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("entry", &self.entry.meta.key)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// The QEMU binary's version line (`QEMU emulator version 7.2.22 (Debian
/// ...)`): a migration stream is loaded only by the QEMU that wrote it.
pub fn qemu_version(binary: &str) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}

/// The shape of a QEMU command line: `rt`'s paths and ports replaced by
/// placeholders, so two builds of one template on one host have the same
/// shape (same devices, CPU, accelerator, memory), and a different
/// template or accelerator does not.
pub fn signature(c: &Config, rt: &Runtime) -> Result<String, String> {
    let mut rt = rt.clone();
    let p = |s: &str| PathBuf::from(format!("/kiln/{s}"));
    rt.disks = (0..rt.disks.len())
        .map(|i| p(&format!("disk{i}")))
        .collect();
    rt.cds = (0..rt.cds.len()).map(|i| p(&format!("cd{i}"))).collect();
    rt.ssh_host_port = rt.ssh_host_port.map(|_| 2222);
    rt.vnc_display = rt.vnc_display.map(|_| 0);
    rt.no_display = true;
    rt.serial_log = rt.serial_log.as_ref().map(|_| p("serial"));
    rt.qmp_socket = p("qmp");
    rt.qmp_events = rt.qmp_events.as_ref().map(|_| p("events"));
    rt.qmp_keys = rt.qmp_keys.as_ref().map(|_| p("keys"));
    rt.http_port = 8000;
    rt.floppy = rt.floppy.as_ref().map(|_| p("floppy"));
    Ok(args::command_line(c, &rt)?.join("\u{1f}"))
}

/// `machine.json`'s content (written 0600: it holds a private key).
pub fn write_machine(dir: &Path, signature: &str, key: Option<&TempKeyPair>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let v = json!({
        "signature": signature,
        "key": key.map(|k| json!({
            "name": k.name,
            "private_openssh": k.private_openssh,
            "public_authorized": k.public_authorized,
        })),
    });
    let path = dir.join(MACHINE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(v.to_string().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a memory entry's `machine.json`.
pub fn read_machine(entry: &Entry) -> Result<Saved, String> {
    let path = entry.path(MACHINE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let signature = v
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: no signature", path.display()))?
        .to_string();
    let key = match v.get("key") {
        None | Some(Value::Null) => None,
        Some(k) => {
            let f = |n: &str| {
                k.get(n)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("{}: no key.{n}", path.display()))
            };
            Some(TempKeyPair {
                name: f("name")?,
                private_openssh: f("private_openssh")?,
                public_authorized: f("public_authorized")?,
            })
        }
    };
    Ok(Saved {
        entry: entry.clone(),
        signature,
        key,
    })
}

/// A path quoted for `/bin/sh` (QEMU runs an `exec:` migration URI with
/// it).
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

/// The `-incoming` URI that loads `file`.
pub fn incoming_uri(file: &Path) -> String {
    format!("exec:cat {}", sh_quote(file))
}

/// Where a migration stands (`query-migrate`): `None` while it runs.
fn migration_end(v: &Value) -> Option<Result<(), String>> {
    match v.get("status").and_then(Value::as_str) {
        Some("completed") => Some(Ok(())),
        Some(s @ ("failed" | "cancelled")) => Some(Err(v
            .get("error-desc")
            .and_then(Value::as_str)
            .map_or_else(|| format!("migration {s}"), str::to_string))),
        _ => None,
    }
}

/// Waits for the migration QEMU runs (out or in) to end.
pub async fn wait_migration(qmp: &Path, timeout: Duration) -> Result<(), String> {
    let start = tokio::time::Instant::now();
    loop {
        match crate::qmp::execute(qmp, "query-migrate").await {
            Ok(v) => {
                if let Some(end) = migration_end(&v) {
                    return end;
                }
            }
            // QEMU may not listen yet: a few seconds' grace.
            Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(e),
            Err(_) => {}
        }
        if start.elapsed() >= timeout {
            return Err(format!("not done after {} s", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the stopped machine's memory and devices to `file`.
pub async fn save(qmp: &Path, file: &Path) -> Result<(), String> {
    // QEMU's default bandwidth limit (128 MiB/s) is for a network: a
    // stopped machine is written to a local file as fast as it goes.
    crate::qmp::execute_with(
        qmp,
        "migrate-set-parameters",
        json!({ "max-bandwidth": 1u64 << 40 }),
    )
    .await?;
    crate::qmp::execute_with(
        qmp,
        "migrate",
        json!({ "uri": format!("exec:cat > {}", sh_quote(file)) }),
    )
    .await?;
    wait_migration(qmp, Duration::from_secs(600)).await
}

/// The shell command that says the guest's time, then sets it to `now`
/// (Unix seconds) if the user may without a password.
pub fn clock_command(now: u64) -> String {
    format!("date -u +%s; sudo -n date -u -s @{now} >/dev/null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_migration() {
        assert_eq!(migration_end(&json!({"status": "active"})), None);
        assert_eq!(migration_end(&json!({})), None);
        assert_eq!(migration_end(&json!({"status": "completed"})), Some(Ok(())));
        assert_eq!(
            migration_end(&json!({"status": "failed", "error-desc": "no space"})),
            Some(Err("no space".into()))
        );
        assert_eq!(
            migration_end(&json!({"status": "cancelled"})),
            Some(Err("migration cancelled".into()))
        );
    }

    fn rt(dir: &str, port: u16) -> Runtime {
        Runtime {
            accel: args::AccelChoice::TcgFallback,
            disks: vec![PathBuf::from(format!("{dir}/disk"))],
            cds: vec![PathBuf::from(format!("{dir}/seed.iso"))],
            ssh_host_port: Some(port),
            vnc_display: Some(port % 100),
            no_display: port.is_multiple_of(2),
            serial_log: Some(PathBuf::from(format!("{dir}/serial.log"))),
            qmp_socket: PathBuf::from(format!("{dir}/qmp.sock")),
            qmp_events: Some(PathBuf::from(format!("{dir}/events.sock"))),
            qmp_keys: None,
            http_ip: "10.0.2.2".into(),
            http_port: port + 1,
            floppy: None,
        }
    }

    #[test]
    fn the_shape_of_a_machine_ignores_paths_and_ports_only() {
        let mut c = Config::with_defaults("x", "debian");
        c.disk_image = true;
        let a = signature(&c, &rt("/tmp/kiln-a", 2222)).unwrap();
        // Another build's working directory, ports and display.
        assert_eq!(a, signature(&c, &rt("/tmp/kiln-b", 3457)).unwrap());
        // Another accelerator (KVM's CPU is the host's), another CD.
        let mut kvm = rt("/tmp/kiln-a", 2222);
        kvm.accel = args::AccelChoice::Machine("kvm".into());
        assert_ne!(a, signature(&c, &kvm).unwrap());
        let mut two = rt("/tmp/kiln-a", 2222);
        two.cds.push("/x.iso".into());
        assert_ne!(a, signature(&c, &two).unwrap());
        // Another memory size or CPU count.
        let mut c2 = c.clone();
        c2.memory = c.memory * 2;
        assert_ne!(a, signature(&c2, &rt("/tmp/kiln-a", 2222)).unwrap());
        let mut c3 = c.clone();
        c3.cpus = c.cpus + 1;
        assert_ne!(a, signature(&c3, &rt("/tmp/kiln-a", 2222)).unwrap());
    }

    #[test]
    fn a_path_is_quoted_for_the_shell() {
        assert_eq!(
            incoming_uri(Path::new("/c/it's here/memory.bin")),
            r"exec:cat '/c/it'\''s here/memory.bin'"
        );
    }

    #[test]
    fn machine_json_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let key = TempKeyPair::generate();
        write_machine(d.path(), "sig", Some(&key)).unwrap();
        let mode = std::fs::metadata(d.path().join(MACHINE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let entry = Entry {
            dir: d.path().to_path_buf(),
            meta: serde_json::from_value(json!({"version": 1, "key": "k", "parent": null,
                "template": "t", "build": "b", "step": 1, "label": "l", "created": 0, "files": []}))
            .unwrap(),
        };
        let s = read_machine(&entry).unwrap();
        assert_eq!(s.signature, "sig");
        let k = s.key.unwrap();
        assert_eq!(
            (k.name, k.private_openssh, k.public_authorized),
            (key.name, key.private_openssh, key.public_authorized)
        );
        std::fs::write(d.path().join(MACHINE), "{}").unwrap();
        assert!(read_machine(&entry).is_err());
    }
}
