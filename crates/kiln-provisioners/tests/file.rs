//! The file provisioner against a real sshd, compared case by case with
//! what Debian's Packer 1.6.6 produces from the same provisioner (null
//! builder, SSH to the same sshd).
mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A local source tree with every kind of entry the directory semantics
/// care about.
fn make_source(root: &Path) {
    let set =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let d = root.join("data");
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(d.join("private")).unwrap();
    std::fs::write(d.join("README"), "seed data for /stash\n").unwrap();
    std::fs::write(d.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(d.join("secret"), "s3cret\n").unwrap();
    std::fs::write(d.join("wide"), "w\n").unwrap();
    std::fs::write(d.join("sub/file.txt"), "in sub\n").unwrap();
    std::fs::write(d.join("sub/deeper/x"), vec![7u8; 100_000]).unwrap();
    std::fs::write(d.join("private/key"), "k\n").unwrap();
    std::fs::write(d.join("with space"), "sp\n").unwrap();
    set(&d.join("run.sh"), 0o755);
    set(&d.join("secret"), 0o600);
    set(&d.join("wide"), 0o777);
    set(&d.join("private"), 0o700);
    set(&d.join("sub/deeper"), 0o750);
    std::os::unix::fs::symlink("README", d.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("sub", d.join("link-to-dir")).unwrap();
    // Only directories at the top (a case with its own semantics).
    let o = root.join("onlydirs");
    std::fs::create_dir_all(o.join("a")).unwrap();
    std::fs::create_dir_all(o.join("b/c")).unwrap();
    std::fs::write(o.join("a/one"), "1").unwrap();
    std::fs::write(o.join("b/c/two"), "2").unwrap();
    // (Both 0755: which one gives the new directory its mode depends on
    // directory order in Packer.)
    // One file only.
    let s = root.join("single");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("only"), "only\n").unwrap();
    set(&s.join("only"), 0o640);
    std::fs::write(root.join("lone.txt"), "lone\n").unwrap();
    set(&root.join("lone.txt"), 0o751);
}

/// Every path under `root`: type, mode, contents.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, m: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                m.insert(
                    rel,
                    format!("link -> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if md.is_dir() {
                m.insert(rel, format!("dir {mode:o}"));
                walk(base, &p, m);
            } else {
                let data = std::fs::read(&p).unwrap();
                let sum: u64 = data.iter().map(|b| *b as u64).sum();
                m.insert(rel, format!("file {mode:o} {} bytes sum {sum}", data.len()));
            }
        }
    }
    walk(root, root, &mut m);
    m
}

/// One case: a provisioner body (without "type") whose `destination` may
/// use `@R@` for the remote root, and what should be prepared there first.
struct Case {
    name: &'static str,
    body: String,
    /// Directories to create under the remote root before the run.
    pre_dirs: Vec<&'static str>,
    /// Files to create under the remote root before the run.
    pre_files: Vec<&'static str>,
    /// Expected to fail (both in kiln and Packer).
    fails: bool,
}

fn cases(src: &Path) -> Vec<Case> {
    let s = |p: &str| js(&format!("{}/{p}", src.display()));
    vec![
        Case {
            name: "contents into an existing directory (the seed)",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data/")),
            pre_dirs: vec!["stash"],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "directory into an existing directory",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data")),
            pre_dirs: vec!["stash"],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "directory into an existing directory, trailing slash on the destination",
            body: format!(r#""source": {}, "destination": "@R@/stash/""#, s("data")),
            pre_dirs: vec!["stash"],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "directory to a new path",
            body: format!(r#""source": {}, "destination": "@R@/new""#, s("data")),
            pre_dirs: vec![],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "merging into an existing copy",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data")),
            pre_dirs: vec!["stash", "stash/data", "stash/data/sub"],
            pre_files: vec!["stash/data/README", "stash/data/old"],
            fails: false,
        },
        Case {
            name: "contents of a directory of directories to a new path",
            body: format!(
                r#""source": {}, "destination": "@R@/merged""#,
                s("onlydirs/")
            ),
            pre_dirs: vec![],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "contents of a one-file directory to a new path",
            body: format!(r#""source": {}, "destination": "@R@/one""#, s("single/")),
            pre_dirs: vec![],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "file to a directory with a trailing slash",
            body: format!(r#""source": {}, "destination": "@R@/d/""#, s("lone.txt")),
            pre_dirs: vec!["d"],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "file to a new name",
            body: format!(
                r#""source": {}, "destination": "@R@/renamed""#,
                s("lone.txt")
            ),
            pre_dirs: vec![],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "several sources",
            body: format!(
                r#""sources": [{}, {}, {}], "destination": "@R@/d/""#,
                s("lone.txt"),
                s("single"),
                s("data/sub/")
            ),
            pre_dirs: vec!["d"],
            pre_files: vec![],
            fails: false,
        },
        Case {
            name: "file onto an existing directory without a trailing slash",
            body: format!(r#""source": {}, "destination": "@R@/d""#, s("lone.txt")),
            pre_dirs: vec!["d"],
            pre_files: vec![],
            fails: true,
        },
        Case {
            name: "directory onto an existing file",
            body: format!(r#""source": {}, "destination": "@R@/f""#, s("data")),
            pre_dirs: vec![],
            pre_files: vec!["f"],
            fails: true,
        },
    ]
}

fn prepare_remote(root: &Path, c: &Case) {
    for d in &c.pre_dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for f in &c.pre_files {
        std::fs::write(root.join(f), "old\n").unwrap();
        // 0644, the mode the upload gives: kiln replaces an existing file
        // (new inode, the source's mode), where scp writes into it and
        // keeps its mode (a documented difference).
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        let ok = std::process::Command::new("chown")
            .arg(kiln_testkit::TEST_USER)
            .arg(root.join(f))
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

fn case_json(c: &Case, root: &Path) -> String {
    format!("{{{}}}", c.body.replace("@R@", &root.display().to_string()))
}

/// Run Packer 1.6.6 (null builder) with one file provisioner.
fn run_packer(packer: &Path, sshd: &kiln_testkit::Sshd, prov: &str, dir: &Path) -> (bool, String) {
    let template = format!(
        r#"{{"builders": [{{"type": "null", "ssh_host": "{}", "ssh_port": {}, "ssh_username": "{}",
             "ssh_private_key_file": {}}}],
            "provisioners": [{{"type": "file", {}}}]}}"#,
        sshd.host,
        sshd.port,
        sshd.user,
        js(&sshd.key_path.display().to_string()),
        prov.trim().trim_start_matches('{').trim_end_matches('}')
    );
    let t = dir.join("packer.json");
    std::fs::write(&t, template).unwrap();
    let out = std::process::Command::new(packer)
        .arg("build")
        .arg("-color=false")
        .arg(&t)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", dir)
        .env("HOME", dir)
        .output()
        .expect("running packer");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_semantics_match_packer() {
    let packer = kiln_testkit::require_tool(
        "packer",
        "apt-get install -y packer (Debian's Packer 1.6.6)",
    );
    let e = env().await;
    let src = tempfile::tempdir().unwrap();
    make_source(src.path());
    for c in cases(src.path()) {
        let kiln_root = remote_dir();
        prepare_remote(kiln_root.path(), &c);
        let r = e.run(file(), &case_json(&c, kiln_root.path())).await;
        assert_eq!(r.is_err(), c.fails, "kiln, case `{}`: {r:?}", c.name);
        let kiln_tree = snapshot(kiln_root.path());

        let Some(packer) = &packer else { continue };
        let packer_root = remote_dir();
        prepare_remote(packer_root.path(), &c);
        let pd = tempfile::tempdir().unwrap();
        let (ok, log) = run_packer(
            packer,
            &e.sshd,
            &case_json(&c, packer_root.path()),
            pd.path(),
        );
        assert_eq!(!ok, c.fails, "packer, case `{}`: {log}", c.name);
        let packer_tree = snapshot(packer_root.path());
        if !c.fails {
            assert_eq!(
                kiln_tree, packer_tree,
                "case `{}`: kiln (left) and Packer 1.6.6 (right) differ",
                c.name
            );
            assert!(!kiln_tree.is_empty(), "case `{}` produced nothing", c.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_results_are_what_packer_documents() {
    // The same cases with their results spelled out (these hold with or
    // without Packer installed).
    let e = env().await;
    let src = tempfile::tempdir().unwrap();
    make_source(src.path());
    let cs = cases(src.path());
    let run = |i: usize| {
        let c = &cs[i];
        let root = remote_dir();
        prepare_remote(root.path(), c);
        let j = case_json(c, root.path());
        (root, j)
    };
    // data/ -> stash: contents.
    let (r, j) = run(0);
    e.run(file(), &j).await.unwrap();
    let t = snapshot(r.path());
    assert!(t["stash/README"].starts_with("file 644 21 bytes"), "{t:?}");
    assert_eq!(t["stash/run.sh"].split(' ').nth(1), Some("755"));
    assert_eq!(t["stash/secret"].split(' ').nth(1), Some("600"));
    // 0777 through the machine's umask (022).
    assert_eq!(t["stash/wide"].split(' ').nth(1), Some("755"));
    assert_eq!(t["stash/private"], "dir 700");
    assert_eq!(t["stash/sub/deeper"], "dir 750");
    // Symlinks are followed: a link to a file is a 0644 file, a link to a
    // directory a directory with the link's mode.
    assert!(t["stash/link-to-file"].starts_with("file 644 21 bytes"));
    assert_eq!(t["stash/link-to-dir"], "dir 755");
    assert!(t.contains_key("stash/link-to-dir/file.txt"));
    assert!(t.contains_key("stash/with space"));
    // data -> stash: stash/data.
    let (r, j) = run(1);
    e.run(file(), &j).await.unwrap();
    assert!(snapshot(r.path()).contains_key("stash/data/sub/file.txt"));
    // data -> new: new is the directory.
    let (r, j) = run(3);
    e.run(file(), &j).await.unwrap();
    let t = snapshot(r.path());
    assert!(t.contains_key("new/sub/file.txt"));
    assert!(!t.contains_key("new/data"));
    // Merging: old files stay, existing ones are replaced.
    let (r, j) = run(4);
    e.run(file(), &j).await.unwrap();
    let t = snapshot(r.path());
    assert!(t.contains_key("stash/data/old"));
    assert!(t["stash/data/README"].contains("21 bytes"));
    // File to d/ and to a new name.
    let (r, j) = run(7);
    e.run(file(), &j).await.unwrap();
    assert!(snapshot(r.path())["d/lone.txt"].starts_with("file 751 5 bytes"));
    let (r, j) = run(8);
    e.run(file(), &j).await.unwrap();
    assert!(snapshot(r.path()).contains_key("renamed"));
    // Errors say what is wrong.
    let (_r, j) = run(10);
    let err = e.run(file(), &j).await.unwrap_err();
    assert!(err.contains("Is a directory"), "{err}");
    let (_r, j) = run(11);
    let err = e.run(file(), &j).await.unwrap_err();
    assert!(err.contains("Not a directory"), "{err}");
    let out = e.printed();
    assert!(out.contains("==> t: Uploading "), "{out}");
    assert!(out.contains("==> t: Upload failed: "), "{out}");

    // Mixed contents into a missing destination: Packer's result depends on
    // directory order; kiln refuses and says how to fix it.
    let root = remote_dir();
    let err = e
        .run(
            file(),
            &format!(
                r#"{{"source": {}, "destination": {}}}"#,
                js(&format!("{}/data/", src.path().display())),
                js(&format!("{}/missing", root.path().display()))
            ),
        )
        .await
        .unwrap_err();
    assert!(err.contains("must be an existing directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_files_and_directories() {
    let e = env().await;
    let remote = remote_dir();
    let r = remote.path();
    std::fs::create_dir_all(r.join("logs/sub")).unwrap();
    std::fs::write(r.join("logs/a.log"), "A\n").unwrap();
    std::fs::write(r.join("logs/sub/b.log"), "B\n").unwrap();
    std::fs::set_permissions(r.join("logs/a.log"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    // File into a directory (created), under its own name.
    e.run(
        file(),
        &format!(
            r#"{{"direction": "download", "source": {}, "destination": {}}}"#,
            js(&p(&r.join("logs/a.log"))),
            js(&format!("{}/out/", l.display()))
        ),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(l.join("out/a.log")).unwrap(), "A\n");
    // Packer creates downloaded files 0644.
    assert_eq!(
        std::fs::metadata(l.join("out/a.log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // File to a name.
    e.run(
        file(),
        &format!(
            r#"{{"direction": "download", "source": {}, "destination": {}}}"#,
            js(&p(&r.join("logs/sub/b.log"))),
            js(&p(&l.join("deep/named.txt")))
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(l.join("deep/named.txt")).unwrap(),
        "B\n"
    );
    // A directory (`logs/` arrives as dst/logs) and a glob.
    e.run(
        file(),
        &format!(
            r#"{{"direction": "download", "source": {}, "destination": {}}}"#,
            js(&format!("{}/", p(&r.join("logs")))),
            js(&format!("{}/tree/", l.display()))
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(l.join("tree/logs/sub/b.log")).unwrap(),
        "B\n"
    );
    assert_eq!(
        std::fs::metadata(l.join("tree/logs/a.log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    e.run(
        file(),
        &format!(
            r#"{{"direction": "download", "source": {}, "destination": {}}}"#,
            js(&format!("{}/*", p(&r.join("logs")))),
            js(&format!("{}/glob/", l.display()))
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(l.join("glob/a.log")).unwrap(),
        "A\n"
    );
    assert_eq!(
        std::fs::read_to_string(l.join("glob/sub/b.log")).unwrap(),
        "B\n"
    );
    // A missing remote file.
    let err = e
        .run(
            file(),
            &format!(
                r#"{{"direction": "download", "source": {}, "destination": {}}}"#,
                js(&p(&r.join("nope"))),
                js(&p(&l.join("nope")))
            ),
        )
        .await
        .unwrap_err();
    assert!(err.contains("No such file"), "{err}");
    assert!(e.printed().contains("==> t: Downloading "));
}

#[test]
fn decode_errors_are_packers() {
    let e = decode(file(), r#"{}"#).err().unwrap();
    assert!(e.contains("Source must be specified."), "{e}");
    assert!(e.contains("Destination must be specified."), "{e}");
    let e = decode(file(), r#"{"source": "/nonexistent", "destination": "/x"}"#)
        .err()
        .unwrap();
    assert!(e.contains("Bad source '/nonexistent'"), "{e}");
    assert!(decode(
        file(),
        r#"{"source": "/nonexistent", "destination": "/x", "generated": true}"#
    )
    .is_ok());
    assert!(decode(
        file(),
        r#"{"source": "/remote/only", "destination": "/x", "direction": "download"}"#
    )
    .is_ok());
    let e = decode(
        file(),
        r#"{"source": "/etc/hostname", "destination": "/x", "direction": "sideways"}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("Direction must be one of: download, upload."),
        "{e}"
    );
}
