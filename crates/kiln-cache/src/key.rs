//! Cache keys: a digest over every input of a machine's state.
//!
//! The key of the state after provisioning step `k` is a chain:
//!
//! ```text
//! base   = H("kiln-cache/1", builder type, builder config minus output-only keys,
//!            source image content)
//! step_k = H(step_{k-1}, provisioner type, rendered config, local files it reads)
//! ```
//!
//! so changing any input of step `k` changes the keys of `k` and of every
//! step after it, and nothing else. Configurations are hashed as canonical
//! JSON (object keys sorted, no whitespace): a reordered object is the same
//! key. Every field is length-prefixed, so no two different inputs hash the
//! same bytes.
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A SHA-256 digest (a key, or a file's content digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    /// The digest written as [`Digest::hex`].
    pub fn from_hex(s: &str) -> Option<Digest> {
        let v = hex::decode(s).ok()?;
        Some(Digest(v.try_into().ok()?))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.hex()[..12])
    }
}

/// Keys of the qemu builder's configuration that only name or shape the
/// output, written after provisioning: they are not part of the key (a
/// different `output_directory` reuses the same states).
pub const QEMU_OUTPUT_ONLY_KEYS: &[&str] = &[
    "output_directory",
    "vm_name",
    "format",
    "disk_compression",
    "skip_compaction",
    "shutdown_command",
    "shutdown_timeout",
    "name",
    "type",
    "packer_force",
];

/// A hasher whose every field is length-prefixed.
struct H(Sha256);

impl H {
    fn new(domain: &str) -> H {
        let mut h = H(Sha256::new());
        h.field(domain.as_bytes());
        h
    }
    fn field(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// `v` as canonical JSON: object keys sorted, no whitespace.
pub fn canonical_json(v: &Value) -> String {
    fn go(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    go(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    go(v, &mut s);
    s
}

/// The key of the machine before any provisioner: the builder's type, its
/// configuration without `output_only` keys, the source image's content
/// digest, and the content of the local files the builder gives the
/// machine (`cd_files`, `floppy_files`, `http_directory`...).
pub fn base_key(
    builder_type: &str,
    config: &Value,
    output_only: &[&str],
    source: &Digest,
    files: &[PathBuf],
) -> Digest {
    let mut c = config.clone();
    if let Value::Object(m) = &mut c {
        for k in output_only {
            m.remove(*k);
        }
    }
    let mut h = H::new("kiln-cache/1 base");
    h.field(builder_type.as_bytes());
    h.field(canonical_json(&c).as_bytes());
    h.field(&source.0);
    files_field(&mut h, files);
    h.finish()
}

/// The content of `files` (in the configuration by path already). A file
/// that cannot be read is an input too ("missing"): whoever reads it will
/// fail on it anyway.
fn files_field(h: &mut H, files: &[PathBuf]) {
    h.field(&(files.len() as u64).to_le_bytes());
    for f in files {
        match path_digest(f) {
            Ok(d) => {
                h.field(b"ok");
                h.field(&d.0);
            }
            Err(e) => {
                h.field(b"unreadable");
                h.field(format!("{:?}", e.kind()).as_bytes());
            }
        }
    }
}

/// One provisioning step's inputs.
#[derive(Debug, Clone)]
pub struct StepInput {
    /// The provisioner's type (`shell`).
    pub type_name: String,
    /// Its configuration, rendered (user variables substituted).
    pub config: Value,
    /// Local files and directories it reads, as resolved paths.
    pub files: Vec<PathBuf>,
}

/// Directories whose content a reboot of a Unix guest loses (tmpfs, or
/// cleaned at boot as Debian and systemd's `tmp.conf` do for `/tmp`).
pub const VOLATILE_DIRS: &[&str] = &["/tmp", "/dev/shm", "/run", "/var/run"];

impl StepInput {
    /// A `file` provisioner uploading into a directory a reboot empties
    /// (`/tmp`...): the state after it is no resume point, since a resumed
    /// build boots the machine again and the upload would be gone for the
    /// step that uses it (the usual `file` to `/tmp`, then `shell` moving
    /// it). A resume starts before it instead and uploads again.
    pub fn leaves_volatile_files(&self) -> bool {
        if self.type_name != "file" {
            return false;
        }
        let c = &self.config;
        if c.get("direction").and_then(Value::as_str) == Some("download") {
            return false;
        }
        let Some(dest) = c.get("destination").and_then(Value::as_str) else {
            return false;
        };
        let dest = dest.trim_end_matches('/');
        VOLATILE_DIRS.iter().any(|d| {
            dest == *d
                || dest
                    .strip_prefix(d)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// The key after a step, from the key before it.
pub fn step_key(prev: &Digest, input: &StepInput) -> Digest {
    let mut h = H::new("kiln-cache/1 step");
    h.field(&prev.0);
    h.field(input.type_name.as_bytes());
    h.field(canonical_json(&input.config).as_bytes());
    files_field(&mut h, &input.files);
    h.finish()
}

/// The keys after each step, in order.
pub fn chain(base: &Digest, steps: &[StepInput]) -> Vec<Digest> {
    let mut prev = *base;
    steps
        .iter()
        .map(|s| {
            prev = step_key(&prev, s);
            prev
        })
        .collect()
}

/// The key of the machine once provisioned and stopped: the key after the
/// last step, and what the builder does between the last provisioner and
/// the stopped disk (`finish`: the qemu builder's `shutdown_command`, and
/// the version of its own clean-up before it). A build whose every input
/// is unchanged finds this state and needs no machine at all.
pub fn final_key(last: &Digest, finish: &Value) -> Digest {
    let mut h = H::new("kiln-cache/1 final");
    h.field(&last.0);
    h.field(canonical_json(finish).as_bytes());
    h.finish()
}

/// The key of the machine's memory and devices (a QEMU migration stream)
/// saved with the state `state`: valid only for the QEMU that wrote it
/// (`machine`: its version, as `qemu-system-... --version` says it) and
/// for kiln's way of writing and reading it. A state saved by another QEMU
/// is not found: the build boots the state's disk instead.
pub fn memory_key(state: &Digest, machine: &str) -> Digest {
    let mut h = H::new("kiln-cache/1 memory");
    h.field(&state.0);
    h.field(machine.as_bytes());
    h.finish()
}

/// The digest of a file's content.
pub fn file_digest(path: &Path) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest(h.finalize().into()))
}

/// The digest of a file, or of a directory tree: every entry's relative
/// name, kind, executable bit and content (symbolic links by target), in
/// name order.
pub fn path_digest(path: &Path) -> std::io::Result<Digest> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return file_digest(path);
    }
    fn walk(root: &Path, dir: &Path, h: &mut H) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p);
            h.field(rel.as_os_str().as_encoded_bytes());
            let m = std::fs::symlink_metadata(&p)?;
            if m.file_type().is_symlink() {
                h.field(b"link");
                h.field(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
            } else if m.is_dir() {
                h.field(b"dir");
                walk(root, &p, h)?;
                h.field(b"end");
            } else {
                h.field(if m.permissions().mode() & 0o111 != 0 {
                    b"exec"
                } else {
                    b"file"
                });
                h.field(&file_digest(&p)?.0);
            }
        }
        Ok(())
    }
    let mut h = H::new("kiln-cache/1 dir");
    walk(path, path, &mut h)?;
    Ok(h.finish())
}

/// The configuration keys whose values are local paths a provisioner of
/// this type reads (Packer 1.6.6's provisioners). `file` reads its
/// sources only when it uploads.
pub fn local_path_keys(type_name: &str, config: &Value) -> &'static [&'static str] {
    match type_name {
        "shell" | "shell-local" => &["script", "scripts"],
        "file" => {
            if config.get("direction").and_then(Value::as_str) == Some("download") {
                &[]
            } else {
                &["source", "sources"]
            }
        }
        "ansible" => &[
            "playbook_file",
            "galaxy_file",
            "inventory_file",
            "roles_path",
        ],
        "ansible-local" => &[
            "playbook_file",
            "playbook_dir",
            "playbook_paths",
            "role_paths",
            "group_vars",
            "host_vars",
            "galaxy_file",
            "inventory_file",
        ],
        "puppet-masterless" => &[
            "manifest_file",
            "manifest_dir",
            "module_paths",
            "hiera_config_path",
        ],
        "salt-masterless" => &[
            "local_state_tree",
            "local_pillar_roots",
            "minion_config",
            "grains_file",
        ],
        "chef-solo" => &[
            "cookbook_paths",
            "roles_path",
            "data_bags_path",
            "environments_path",
            "config_template",
            "json_file",
        ],
        _ => &[],
    }
}

/// The local files a provisioner reads, resolved against `base_dir` when
/// relative.
pub fn local_files(type_name: &str, config: &Value, base_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for k in local_path_keys(type_name, config) {
        let vals: Vec<&str> = match config.get(*k) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        for v in vals {
            let p = Path::new(v);
            out.push(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            });
        }
    }
    out
}

/// A `shell` provisioner with several `scripts` as one step per script
/// (the same configuration with `scripts: [that one]`), so that editing
/// one script keeps the states after the ones before it. Any other
/// provisioner is one step.
pub fn split_steps(type_name: &str, config: &Value) -> Vec<Value> {
    if type_name == "shell" {
        if let Some(Value::Array(scripts)) = config.get("scripts") {
            if scripts.len() > 1 {
                return scripts
                    .iter()
                    .map(|s| {
                        let mut c = config.clone();
                        c["scripts"] = Value::Array(vec![s.clone()]);
                        c
                    })
                    .collect();
            }
        }
    }
    vec![config.clone()]
}

/// A short label for a step, for messages (`shell: scripts/update.sh`).
pub fn step_label(type_name: &str, config: &Value) -> String {
    let mut parts = Vec::new();
    for k in [
        "script",
        "scripts",
        "source",
        "sources",
        "playbook_file",
        "manifest_file",
    ] {
        match config.get(k) {
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(Value::Array(a)) => {
                parts.extend(a.iter().filter_map(|v| v.as_str().map(String::from)))
            }
            _ => {}
        }
    }
    if parts.is_empty() && config.get("inline").is_some() {
        parts.push("inline".into());
    }
    if parts.is_empty() {
        type_name.to_string()
    } else {
        format!("{type_name}: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(b: u8) -> Digest {
        Digest([b; 32])
    }

    fn builder() -> Value {
        json!({"type": "qemu", "disk_image": true, "iso_url": "base.qcow2", "memory": 1024,
               "output_directory": "out", "vm_name": "a.qcow2", "format": "qcow2",
               "qemuargs": [["-m", "1G"]]})
    }

    #[test]
    fn the_base_key_covers_the_builder_and_the_source_only() {
        let k = base_key("qemu", &builder(), QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]);
        // Output names do not change it.
        let mut b = builder();
        b["output_directory"] = json!("elsewhere");
        b["vm_name"] = json!("b.qcow2");
        b["format"] = json!("raw");
        assert_eq!(base_key("qemu", &b, QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]), k);
        // A reordered object does not either.
        let reordered: Value = serde_json::from_str(
            r#"{"qemuargs": [["-m", "1G"]], "vm_name": "a.qcow2", "memory": 1024, "format": "qcow2",
                "output_directory": "out", "iso_url": "base.qcow2", "disk_image": true, "type": "qemu"}"#,
        )
        .unwrap();
        assert_eq!(
            base_key("qemu", &reordered, QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]),
            k
        );
        // Everything else does.
        for (key, v) in [
            ("memory", json!(2048)),
            ("qemuargs", json!([["-m", "2G"]])),
            ("iso_url", json!("other.qcow2")),
            ("cpus", json!(2)),
        ] {
            let mut b = builder();
            b[key] = v;
            assert_ne!(
                base_key("qemu", &b, QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]),
                k,
                "{key}"
            );
        }
        assert_ne!(
            base_key("qemu", &builder(), QEMU_OUTPUT_ONLY_KEYS, &d(2), &[]),
            k,
            "source content"
        );
        assert_ne!(
            base_key("other", &builder(), QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]),
            k,
            "builder type"
        );
        // Array order is meaningful.
        let mut b = builder();
        b["qemuargs"] = json!([["1G", "-m"]]);
        assert_ne!(base_key("qemu", &b, QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]), k);
    }

    #[test]
    fn the_base_key_covers_the_builders_local_files() {
        let t = tempfile::tempdir().unwrap();
        let (ud, http) = (t.path().join("user-data"), t.path().join("http"));
        write(&ud, "#cloud-config\n");
        write(&http.join("preseed.cfg"), "d-i a b");
        let files = [ud.clone(), http.clone()];
        let key = || base_key("qemu", &builder(), QEMU_OUTPUT_ONLY_KEYS, &d(1), &files);
        let k = key();
        assert_eq!(key(), k);
        assert_ne!(
            base_key("qemu", &builder(), QEMU_OUTPUT_ONLY_KEYS, &d(1), &[]),
            k
        );
        write(&ud, "#cloud-config\npackages: [gcc]\n");
        let k2 = key();
        assert_ne!(k2, k, "a file's content");
        write(&http.join("preseed.cfg"), "d-i a c");
        let k3 = key();
        assert_ne!(k3, k2, "a file in a directory");
        std::fs::remove_file(&ud).unwrap();
        assert_ne!(key(), k3, "a file gone");
    }

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn every_input_of_a_step_changes_its_key_and_every_later_one() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        write(&dir.join("scripts/a.sh"), "echo a");
        write(&dir.join("scripts/b.sh"), "echo b");
        write(&dir.join("files/tree/x"), "x");
        write(&dir.join("files/tree/sub/y"), "y");
        let shell = json!({"type": "shell", "scripts": ["scripts/a.sh"],
                           "environment_vars": ["A=1"], "execute_command": "sudo {{.Path}}"});
        let file = json!({"type": "file", "source": "files/tree", "destination": "/tmp/tree"});
        let inline = json!({"type": "shell", "inline": ["echo hi"]});
        let inputs = |shell: &Value, file: &Value, inline: &Value| {
            [("shell", shell), ("file", file), ("shell", inline)]
                .into_iter()
                .map(|(t, c)| StepInput {
                    type_name: t.into(),
                    config: c.clone(),
                    files: local_files(t, c, dir),
                })
                .collect::<Vec<_>>()
        };
        let base = d(7);
        let k0 = chain(&base, &inputs(&shell, &file, &inline));
        assert_eq!(k0.len(), 3);
        assert_eq!(chain(&base, &inputs(&shell, &file, &inline)), k0, "stable");

        // Each change: (the step it first changes, how).
        let check = |first: usize, k: Vec<Digest>, what: &str| {
            for i in 0..3 {
                if i < first {
                    assert_eq!(k[i], k0[i], "{what}: step {i} unchanged");
                } else {
                    assert_ne!(k[i], k0[i], "{what}: step {i} changed");
                }
            }
        };
        check(0, chain(&d(8), &inputs(&shell, &file, &inline)), "base");
        for (key, v) in [
            ("environment_vars", json!(["A=2"])),
            ("execute_command", json!("{{.Path}}")),
            ("scripts", json!(["scripts/b.sh"])),
        ] {
            let mut s = shell.clone();
            s[key] = v;
            check(0, chain(&base, &inputs(&s, &file, &inline)), key);
        }
        let mut i2 = inline.clone();
        i2["inline"] = json!(["echo ho"]);
        check(2, chain(&base, &inputs(&shell, &file, &i2)), "inline");
        let mut f2 = file.clone();
        f2["destination"] = json!("/tmp/other");
        check(
            1,
            chain(&base, &inputs(&shell, &f2, &inline)),
            "file destination",
        );

        // The contents of local files: a script, a file deep in an uploaded
        // directory, a new file there, an executable bit.
        write(&dir.join("scripts/a.sh"), "echo A");
        check(
            0,
            chain(&base, &inputs(&shell, &file, &inline)),
            "script content",
        );
        write(&dir.join("scripts/a.sh"), "echo a");
        assert_eq!(
            chain(&base, &inputs(&shell, &file, &inline)),
            k0,
            "restored"
        );
        write(&dir.join("files/tree/sub/y"), "Y");
        check(
            1,
            chain(&base, &inputs(&shell, &file, &inline)),
            "uploaded file content",
        );
        write(&dir.join("files/tree/sub/y"), "y");
        write(&dir.join("files/tree/z"), "");
        check(
            1,
            chain(&base, &inputs(&shell, &file, &inline)),
            "new file in directory",
        );
        std::fs::remove_file(dir.join("files/tree/z")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("files/tree/x"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        check(
            1,
            chain(&base, &inputs(&shell, &file, &inline)),
            "executable bit",
        );
        std::fs::set_permissions(
            dir.join("files/tree/x"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(
            chain(&base, &inputs(&shell, &file, &inline)),
            k0,
            "restored"
        );

        // A reordered object is the same key.
        let reordered: Value = serde_json::from_str(
            r#"{"execute_command": "sudo {{.Path}}", "environment_vars": ["A=1"],
                "scripts": ["scripts/a.sh"], "type": "shell"}"#,
        )
        .unwrap();
        assert_eq!(chain(&base, &inputs(&reordered, &file, &inline)), k0);
    }

    #[test]
    fn a_download_reads_no_local_file() {
        let c = json!({"source": "/etc/x", "destination": "d", "direction": "download"});
        assert!(local_files("file", &c, Path::new("/t")).is_empty());
        let c = json!({"sources": ["a", "/b"], "destination": "d"});
        assert_eq!(
            local_files("file", &c, Path::new("/t")),
            [PathBuf::from("/t/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn shell_scripts_are_one_step_each() {
        let c = json!({"type": "shell", "scripts": ["a.sh", "b.sh"], "execute_command": "x"});
        let s = split_steps("shell", &c);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1],
            json!({"type": "shell", "scripts": ["b.sh"], "execute_command": "x"})
        );
        assert_eq!(step_label("shell", &s[1]), "shell: b.sh");
        assert_eq!(split_steps("shell-local", &c).len(), 1);
        assert_eq!(
            step_label("shell", &json!({"inline": ["x"]})),
            "shell: inline"
        );
        assert_eq!(step_label("breakpoint", &json!({})), "breakpoint");
    }

    #[test]
    fn the_final_key_follows_the_last_step_and_the_finish() {
        let finish = serde_json::json!({"shutdown_command": "poweroff"});
        let k = final_key(&d(1), &finish);
        assert_eq!(k, final_key(&d(1), &finish.clone()));
        assert_ne!(k, final_key(&d(2), &finish));
        assert_ne!(
            k,
            final_key(&d(1), &serde_json::json!({"shutdown_command": "halt -p"}))
        );
        assert_ne!(k, d(1));
    }

    #[test]
    fn the_memory_key_follows_the_state_and_the_qemu() {
        let v = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)";
        let k = memory_key(&d(1), v);
        assert_eq!(k, memory_key(&d(1), v));
        assert_ne!(k, memory_key(&d(2), v));
        assert_ne!(k, memory_key(&d(1), "QEMU emulator version 8.2.0"));
        // Never the state's own key, nor its final key.
        assert_ne!(k, d(1));
        assert_ne!(k, final_key(&d(1), &serde_json::json!({})));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b": {"d": 1, "c": [ {"f": 2, "e": "x\"y"} ]}, "a": null}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":null,"b":{"c":[{"e":"x\"y","f":2}],"d":1}}"#
        );
    }

    #[test]
    fn uploads_into_tmp_leave_no_resume_point() {
        let step = |t: &str, c: Value| StepInput {
            type_name: t.into(),
            config: c,
            files: vec![],
        };
        let v = |c| step("file", c).leaves_volatile_files();
        assert!(v(json!({"source": "a", "destination": "/tmp"})));
        assert!(v(json!({"source": "a", "destination": "/tmp/"})));
        assert!(v(json!({"source": "a", "destination": "/tmp/x/y.conf"})));
        assert!(v(json!({"source": "a", "destination": "/dev/shm/k"})));
        assert!(v(json!({"source": "a", "destination": "/run/k"})));
        assert!(!v(json!({"source": "a", "destination": "/tmpfoo"})));
        assert!(!v(json!({"source": "a", "destination": "/var/tmp/x"})));
        assert!(!v(json!({"source": "a", "destination": "/stash"})));
        assert!(!v(
            json!({"source": "/tmp/a", "destination": "a", "direction": "download"})
        ));
        assert!(
            !step("shell", json!({"inline": ["x"], "destination": "/tmp"})).leaves_volatile_files()
        );
    }
}
