//! The file provisioner against a real sshd, compared case by case with
//! what Debian's Packer 1.6.6 produces from the same provisioner (null
//! builder, SSH to the same sshd).
mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    // Special mode bits (Packer sends `FileMode.Perm()`: none of them).
    let sp = root.join("special");
    std::fs::create_dir_all(sp.join("sgid")).unwrap();
    std::fs::create_dir_all(sp.join("sticky")).unwrap();
    std::fs::write(sp.join("suid"), "#!/bin/sh\n").unwrap();
    std::fs::write(sp.join("sgid/inner"), "i\n").unwrap();
    set(&sp.join("suid"), 0o4755);
    set(&sp.join("sgid"), 0o2775);
    set(&sp.join("sticky"), 0o1777);
    std::fs::write(root.join("suid-alone"), "s\n").unwrap();
    set(&root.join("suid-alone"), 0o6750);
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
                m.insert(rel, format!("dir {mode:o} {}:{}", md.uid(), md.gid()));
                walk(base, &p, m);
            } else {
                let data = std::fs::read(&p).unwrap();
                let sum: u64 = data.iter().map(|b| *b as u64).sum();
                m.insert(
                    rel,
                    format!(
                        "file {mode:o} {} bytes sum {sum} {}:{} links {}",
                        data.len(),
                        md.uid(),
                        md.gid(),
                        md.nlink()
                    ),
                );
            }
        }
    }
    walk(root, root, &mut m);
    m
}

/// What is on the machine before a case runs (paths under the remote
/// root; owners by name).
#[derive(Clone)]
enum Pre {
    Dir(&'static str, u32),
    /// path, mode, owner, group; contents `old\n`.
    File(&'static str, u32, &'static str, &'static str),
    /// A hard link (second path) to a file made before.
    Link(&'static str, &'static str),
}

use Pre::{Dir, File as PFile, Link};

/// A directory the SSH user may write into.
fn d(p: &'static str) -> Pre {
    Dir(p, 0o777)
}
/// A file of the SSH user's, mode 0644.
fn f(p: &'static str) -> Pre {
    PFile(p, 0o644, kiln_testkit::TEST_USER, kiln_testkit::TEST_USER)
}

/// One case: a provisioner body (without "type") whose `destination` may
/// use `@R@` for the remote root, and what should be prepared there first.
struct Case {
    name: &'static str,
    body: String,
    pre: Vec<Pre>,
    /// Expected to fail (both in kiln and Packer).
    fails: bool,
}

fn cases(src: &Path) -> Vec<Case> {
    let s = |p: &str| js(&format!("{}/{p}", src.display()));
    vec![
        Case {
            name: "contents into an existing directory (the seed)",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data/")),
            pre: vec![d("stash")],
            fails: false,
        },
        Case {
            name: "directory into an existing directory",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data")),
            pre: vec![d("stash")],
            fails: false,
        },
        Case {
            name: "directory into an existing directory, trailing slash on the destination",
            body: format!(r#""source": {}, "destination": "@R@/stash/""#, s("data")),
            pre: vec![d("stash")],
            fails: false,
        },
        Case {
            name: "directory to a new path",
            body: format!(r#""source": {}, "destination": "@R@/new""#, s("data")),
            pre: vec![],
            fails: false,
        },
        Case {
            name: "merging into an existing copy",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data")),
            pre: vec![
                d("stash"),
                d("stash/data"),
                d("stash/data/sub"),
                f("stash/data/README"),
                f("stash/data/old"),
            ],
            fails: false,
        },
        Case {
            name: "contents of a directory of directories to a new path",
            body: format!(
                r#""source": {}, "destination": "@R@/merged""#,
                s("onlydirs/")
            ),
            pre: vec![],
            fails: false,
        },
        Case {
            name: "contents of a one-file directory to a new path",
            body: format!(r#""source": {}, "destination": "@R@/one""#, s("single/")),
            pre: vec![],
            fails: false,
        },
        Case {
            name: "file to a directory with a trailing slash",
            body: format!(r#""source": {}, "destination": "@R@/d/""#, s("lone.txt")),
            pre: vec![d("d")],
            fails: false,
        },
        Case {
            name: "file to a new name",
            body: format!(
                r#""source": {}, "destination": "@R@/renamed""#,
                s("lone.txt")
            ),
            pre: vec![],
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
            pre: vec![d("d")],
            fails: false,
        },
        Case {
            name: "file onto an existing directory without a trailing slash",
            body: format!(r#""source": {}, "destination": "@R@/d""#, s("lone.txt")),
            pre: vec![d("d")],
            fails: true,
        },
        Case {
            name: "directory onto an existing file",
            body: format!(r#""source": {}, "destination": "@R@/f""#, s("data")),
            pre: vec![f("f")],
            fails: true,
        },
        Case {
            // scp writes into an existing file: same inode (the hard link
            // sees the new contents), owner, group and mode, whatever the
            // source's mode; a root-owned file the user may write is
            // written, not chmodded.
            name: "writing into existing files",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data/")),
            pre: vec![
                d("stash"),
                PFile("stash/README", 0o600, kiln_testkit::TEST_USER, "daemon"),
                PFile(
                    "stash/run.sh",
                    0o640,
                    kiln_testkit::TEST_USER,
                    kiln_testkit::TEST_USER,
                ),
                Link("stash/run.sh", "stash/run.sh.link"),
                PFile("stash/wide", 0o666, "root", "root"),
                PFile("stash/secret", 0o664, kiln_testkit::TEST_USER, "daemon"),
                Dir("stash/private", 0o755),
            ],
            fails: false,
        },
        Case {
            name: "writing into an existing file, single file",
            body: format!(r#""source": {}, "destination": "@R@/d/""#, s("lone.txt")),
            pre: vec![
                d("d"),
                PFile("d/lone.txt", 0o600, kiln_testkit::TEST_USER, "daemon"),
                Link("d/lone.txt", "lone.link"),
            ],
            fails: false,
        },
        Case {
            name: "an existing root-owned 0600 file the SSH user may not write",
            body: format!(r#""source": {}, "destination": "@R@/stash""#, s("data/")),
            pre: vec![d("stash"), PFile("stash/secret", 0o600, "root", "root")],
            fails: true,
        },
        Case {
            name: "special mode bits, contents into a directory",
            body: format!(r#""source": {}, "destination": "@R@/sp""#, s("special/")),
            pre: vec![d("sp")],
            fails: false,
        },
        Case {
            name: "special mode bits, directory into an existing directory",
            body: format!(r#""source": {}, "destination": "@R@/d""#, s("special")),
            pre: vec![d("d")],
            fails: false,
        },
        Case {
            name: "special mode bits, one file",
            body: format!(r#""source": {}, "destination": "@R@/x""#, s("suid-alone")),
            pre: vec![],
            fails: false,
        },
        Case {
            // New directories inherit a setgid bit from their parent; scp's
            // chmod then clears it (the files keep the inherited group).
            name: "into a setgid directory",
            body: format!(r#""source": {}, "destination": "@R@/sg""#, s("data")),
            pre: vec![Dir("sg", 0o2777)],
            fails: false,
        },
    ]
}

fn prepare_remote(root: &Path, c: &Case) {
    let chown = |p: &Path, owner: &str| {
        let ok = std::process::Command::new("chown")
            .arg(owner)
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {owner} {}", p.display());
    };
    for pre in &c.pre {
        match pre {
            Dir(d, mode) => {
                std::fs::create_dir_all(root.join(d)).unwrap();
                std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(*mode))
                    .unwrap();
                chown(&root.join(d), kiln_testkit::TEST_USER);
            }
            PFile(f, mode, owner, group) => {
                std::fs::write(root.join(f), "old\n").unwrap();
                std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(*mode))
                    .unwrap();
                chown(&root.join(f), &format!("{owner}:{group}"));
            }
            Link(from, to) => std::fs::hard_link(root.join(from), root.join(to)).unwrap(),
        }
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
        if c.fails {
            // Packer stops at the first error and kiln's tar goes on with
            // the other files, so only what was there is compared: neither
            // may have touched what it could not write.
            for pre in &c.pre {
                if let PFile(path, ..) = pre {
                    assert_eq!(
                        kiln_tree.get(*path),
                        packer_tree.get(*path),
                        "case `{}`, {path}: kiln (left) and Packer 1.6.6 (right) differ",
                        c.name
                    );
                }
            }
        } else {
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
    assert!(t["stash/private"].starts_with("dir 700 "), "{t:?}");
    assert!(t["stash/sub/deeper"].starts_with("dir 750 "), "{t:?}");
    // Symlinks are followed: a link to a file is a 0644 file, a link to a
    // directory a directory with the link's mode.
    assert!(t["stash/link-to-file"].starts_with("file 644 21 bytes"));
    assert!(t["stash/link-to-dir"].starts_with("dir 755 "), "{t:?}");
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

    // Writing into existing files: contents, nothing else, change.
    let uid = |name: &str| {
        let out = std::process::Command::new("id")
            .arg("-u")
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let gid = |name: &str| {
        let out = std::process::Command::new("getent")
            .arg("group")
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .unwrap_or("")
            .to_string()
    };
    let (user, daemon, root) = (uid(kiln_testkit::TEST_USER), gid("daemon"), gid("root"));
    let ugrp = gid(kiln_testkit::TEST_USER);
    let (r, j) = run(12);
    e.run(file(), &j).await.unwrap();
    let t = snapshot(r.path());
    assert!(t["stash/README"].starts_with("file 600 21 bytes"), "{t:?}");
    assert!(
        t["stash/README"].ends_with(&format!(" {user}:{daemon} links 1")),
        "{t:?}"
    );
    assert!(t["stash/run.sh"].starts_with("file 640 18 bytes"), "{t:?}");
    assert!(
        t["stash/run.sh"].ends_with(&format!("{user}:{ugrp} links 2")),
        "{t:?}"
    );
    assert_eq!(
        t["stash/run.sh.link"]
            .split(' ')
            .take(4)
            .collect::<Vec<_>>(),
        ["file", "640", "18", "bytes"],
        "the hard link sees the new contents: {t:?}"
    );
    assert!(t["stash/wide"].starts_with("file 666 2 bytes"), "{t:?}");
    assert!(t["stash/wide"].contains(&format!(" 0:{root} ")), "{t:?}");
    assert!(t["stash/secret"].starts_with("file 664 7 bytes"), "{t:?}");
    assert!(
        t["stash/private"].starts_with("dir 755 "),
        "existing directories keep their mode: {t:?}"
    );
    // A file the SSH user may not write: an error, the file untouched.
    let (r, j) = run(14);
    let err = e.run(file(), &j).await.unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(
        snapshot(r.path())["stash/secret"],
        "file 600 4 bytes sum 329 0:0 links 1"
    );
    // No special bits reach the machine.
    let (r, j) = run(15);
    e.run(file(), &j).await.unwrap();
    let t = snapshot(r.path());
    assert!(t["sp/suid"].starts_with("file 755 "), "{t:?}");
    assert!(t["sp/sgid"].starts_with("dir 755 "), "{t:?}");
    assert!(t["sp/sticky"].starts_with("dir 755 "), "{t:?}");
    let (r, j) = run(17);
    e.run(file(), &j).await.unwrap();
    assert!(snapshot(r.path())["x"].starts_with("file 750 "));
    // New directories in a setgid directory lose the inherited bit (scp's
    // chmod), their files keep the inherited group.
    let (r, j) = run(18);
    e.run(file(), &j).await.unwrap();
    let t = snapshot(r.path());
    assert!(t["sg/data"].starts_with("dir 755 "), "{t:?}");
    assert!(t["sg/data/sub"].starts_with("dir 755 "), "{t:?}");
    assert!(t["sg/data/sub/deeper"].starts_with("dir 750 "), "{t:?}");
    assert!(
        t["sg/data/README"].contains(&format!(" {user}:{root} ")),
        "{t:?}"
    );

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

/// The machine's side of the download cases (readable by the SSH user).
fn make_remote_for_downloads(r: &Path) {
    let set =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    std::fs::create_dir_all(r.join("logs/sub")).unwrap();
    std::fs::write(r.join("logs/a.log"), "A\n").unwrap();
    std::fs::write(r.join("logs/secret.log"), "S\n").unwrap();
    std::fs::write(r.join("logs/suid.bin"), "X\n").unwrap();
    std::fs::write(r.join("logs/sub/b.log"), "B\n").unwrap();
    std::fs::write(r.join("single.txt"), "single\n").unwrap();
    set(&r.join("logs/a.log"), 0o755);
    set(&r.join("logs/secret.log"), 0o600);
    set(&r.join("logs/suid.bin"), 0o4755);
    set(&r.join("logs/sub"), 0o750);
    set(&r.join("single.txt"), 0o640);
    let ok = std::process::Command::new("chown")
        .arg("-R")
        .arg(kiln_testkit::TEST_USER)
        .arg(r.join("logs"))
        .arg(r.join("single.txt"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Last, so the SSH user can still read what is in it.
    set(&r.join("logs"), 0o700);
}

/// A download case: sources (relative to the remote root), the destination
/// (`@L@` is the local root), what is there locally first.
struct Down {
    name: &'static str,
    sources: Vec<&'static str>,
    destination: &'static str,
    /// Local directories and files (`old\n`, mode 0600) made first.
    pre_dirs: Vec<&'static str>,
    pre_files: Vec<&'static str>,
    fails: bool,
}

fn down_json(c: &Down, remote: &Path, local: &Path) -> String {
    let sources: Vec<String> = c
        .sources
        .iter()
        .map(|s| js(&format!("{}/{s}", remote.display())))
        .collect();
    format!(
        r#"{{"direction": "download", "sources": [{}], "destination": {}}}"#,
        sources.join(", "),
        js(&c.destination.replace("@L@", &local.display().to_string()))
    )
}

fn prepare_local(root: &Path, c: &Down) {
    for d in &c.pre_dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in &c.pre_files {
        std::fs::write(root.join(f), "old\n").unwrap();
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn down_cases() -> Vec<Down> {
    let c = |name, sources, destination, pre_dirs, pre_files, fails| Down {
        name,
        sources,
        destination,
        pre_dirs,
        pre_files,
        fails,
    };
    vec![
        c(
            "file into a missing directory (trailing slash)",
            vec!["logs/a.log"],
            "@L@/out/",
            vec![],
            vec![],
            false,
        ),
        c(
            "file to a name in a missing directory",
            vec!["logs/sub/b.log"],
            "@L@/deep/named.txt",
            vec![],
            vec![],
            false,
        ),
        c(
            "file onto an existing file",
            vec!["single.txt"],
            "@L@/exists.txt",
            vec![],
            vec!["exists.txt"],
            false,
        ),
        c(
            "file onto an existing directory (no trailing slash)",
            vec!["single.txt"],
            "@L@/d",
            vec!["d"],
            vec![],
            true,
        ),
        c(
            "directory/ into a missing directory (trailing slash)",
            vec!["logs/"],
            "@L@/tree/",
            vec![],
            vec![],
            false,
        ),
        c(
            "directory/ to a missing path",
            vec!["logs/"],
            "@L@/tree",
            vec![],
            vec![],
            false,
        ),
        c(
            "directory/ into an existing copy",
            vec!["logs/"],
            "@L@/tree/",
            vec!["tree/logs"],
            vec!["tree/logs/a.log", "tree/logs/kept"],
            false,
        ),
        c(
            "directory/ into an existing directory (no trailing slash)",
            vec!["logs/"],
            "@L@/tree",
            vec!["tree"],
            vec![],
            false,
        ),
        c(
            "directory without a trailing slash",
            vec!["logs"],
            "@L@/x/",
            vec![],
            vec![],
            true,
        ),
        c(
            "a glob into a directory",
            vec!["logs/*"],
            "@L@/glob/",
            vec![],
            vec![],
            false,
        ),
        c(
            "a missing remote file",
            vec!["nope"],
            "@L@/nope",
            vec![],
            vec![],
            true,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_semantics_match_packer() {
    let packer = kiln_testkit::require_tool(
        "packer",
        "apt-get install -y packer (Debian's Packer 1.6.6)",
    );
    let e = env().await;
    let remote = remote_dir();
    make_remote_for_downloads(remote.path());
    for c in down_cases() {
        let kiln_root = tempfile::tempdir().unwrap();
        prepare_local(kiln_root.path(), &c);
        let r = e
            .run(file(), &down_json(&c, remote.path(), kiln_root.path()))
            .await;
        assert_eq!(r.is_err(), c.fails, "kiln, case `{}`: {r:?}", c.name);
        let kiln_tree = snapshot(kiln_root.path());
        // What a download must give, with or without Packer.
        for v in kiln_tree.values() {
            let mode = v
                .split(' ')
                .nth(1)
                .and_then(|m| u32::from_str_radix(m, 8).ok());
            assert!(
                mode.is_some_and(|m| m <= 0o777),
                "case `{}`: a special mode bit came through: {kiln_tree:?}",
                c.name
            );
        }
        if c.name == "directory/ to a missing path" {
            // Made with the mode of the first directory that arrived, as
            // Packer's MkdirAll(dst/logs, mode) makes it.
            assert!(kiln_tree["tree"].starts_with("dir 700 "), "{kiln_tree:?}");
            assert!(
                kiln_tree["tree/logs/suid.bin"].starts_with("file 755 "),
                "{kiln_tree:?}"
            );
        }
        if c.name == "directory/ into an existing copy" {
            assert!(
                kiln_tree["tree/logs/a.log"].starts_with("file 600 2 bytes"),
                "{kiln_tree:?}"
            );
            assert!(kiln_tree.contains_key("tree/logs/kept"), "{kiln_tree:?}");
        }

        let Some(packer) = &packer else { continue };
        let packer_root = tempfile::tempdir().unwrap();
        prepare_local(packer_root.path(), &c);
        let pd = tempfile::tempdir().unwrap();
        let (ok, log) = run_packer(
            packer,
            &e.sshd,
            &down_json(&c, remote.path(), packer_root.path()),
            pd.path(),
        );
        assert_eq!(!ok, c.fails, "packer, case `{}`: {log}", c.name);
        // Both stop at the first failure, so failed cases compare too.
        assert_eq!(
            kiln_tree,
            snapshot(packer_root.path()),
            "case `{}`: kiln (left) and Packer 1.6.6 (right) differ",
            c.name
        );
        assert!(!kiln_tree.is_empty(), "case `{}` produced nothing", c.name);
    }
}

/// Where kiln's downloads deliberately differ from Packer 1.6.6 (the
/// crate documentation lists them): checked against Packer, so the list
/// stays true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_differences_from_packer_are_the_documented_ones() {
    let packer = kiln_testkit::require_tool(
        "packer",
        "apt-get install -y packer (Debian's Packer 1.6.6)",
    );
    let e = env().await;
    let remote = remote_dir();
    make_remote_for_downloads(remote.path());
    let c = |name, sources, destination| Down {
        name,
        sources,
        destination,
        pre_dirs: vec![],
        pre_files: vec![],
        fails: false,
    };
    let cases = [
        // Packer joins the first file's name onto the destination and
        // keeps it for the next source: the directory then goes under a
        // file, which fails. kiln works the destination out per source.
        c(
            "a file, then a directory, into dir/",
            vec!["single.txt", "logs/"],
            "@L@/x/",
        ),
        // Packer returns after the first directory source.
        c(
            "a directory, then a file, into dir/",
            vec!["logs/", "single.txt"],
            "@L@/y/",
        ),
        // Packer opens dst/<first match> in a directory it has not made.
        c("a glob to a missing path", vec!["logs/*"], "@L@/g"),
    ];
    for (i, c) in cases.iter().enumerate() {
        let kiln_root = tempfile::tempdir().unwrap();
        e.run(file(), &down_json(c, remote.path(), kiln_root.path()))
            .await
            .unwrap_or_else(|err| panic!("kiln, case `{}`: {err}", c.name));
        let k = snapshot(kiln_root.path());
        let packer_root = tempfile::tempdir().unwrap();
        let pd = tempfile::tempdir().unwrap();
        let packer_result = packer.as_ref().map(|packer| {
            let (ok, log) = run_packer(
                packer,
                &e.sshd,
                &down_json(c, remote.path(), packer_root.path()),
                pd.path(),
            );
            (ok, log, snapshot(packer_root.path()))
        });
        match i {
            0 => {
                assert!(k["x/single.txt"].starts_with("file 644 7 bytes"), "{k:?}");
                assert!(k.contains_key("x/logs/sub/b.log"), "{k:?}");
                if let Some((ok, log, _)) = &packer_result {
                    assert!(!ok, "Packer 1.6.6 fails here: {log}");
                }
            }
            1 => {
                assert!(k.contains_key("y/logs/a.log"), "{k:?}");
                assert!(k.contains_key("y/single.txt"), "{k:?}");
                if let Some((ok, log, p)) = &packer_result {
                    assert!(ok, "{log}");
                    assert!(p.contains_key("y/logs/a.log"), "{p:?}");
                    assert!(!p.contains_key("y/single.txt"), "Packer skips it: {p:?}");
                }
            }
            _ => {
                assert!(k.contains_key("g/a.log"), "{k:?}");
                assert!(k.contains_key("g/sub/b.log"), "{k:?}");
                if let Some((ok, log, _)) = &packer_result {
                    assert!(!ok, "Packer 1.6.6 fails here: {log}");
                }
            }
        }
    }
}
