mod common;
use common::*;
use kiln_core::PostProcessor;
use kiln_post_processors::compress::{detect, Compress, Config, BUILDER_ID};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn compress(out: &Path, level: u32) -> Compress {
    let (archive, algorithm) = detect(&out.display().to_string(), "");
    Compress {
        config: Config {
            output: out.display().to_string(),
            archive,
            algorithm,
            level,
        },
    }
}

#[tokio::test]
async fn tar_gz_round_trips_through_system_tar() {
    let env = Env::new("web", "qemu");
    // Bigger than several compression blocks.
    let big = env.write("out/disk.raw", &data((5 << 20) + 77, 7));
    let small = env.write("out/meta.txt", b"meta\n");
    std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o640)).unwrap();
    let target = env.path("dist/image.tar.gz");
    let out = compress(&target, 6)
        .post_process(&env.ctx(), artifact(vec![big.clone(), small.clone()]))
        .await
        .unwrap();
    assert!(!out.keep && !out.force_keep);
    let a = out.artifact.unwrap();
    assert_eq!(a.builder_id(), BUILDER_ID);
    assert_eq!(a.files(), vec![target.clone()]);
    assert_eq!(
        a.description(),
        format!("compressed artifacts in: {}", target.display())
    );

    sh(&format!("gzip -t {}", q(&target)));
    let x = env.path("x");
    std::fs::create_dir(&x).unwrap();
    sh(&format!("tar -xzf {} -C {}", q(&target), q(&x)));
    // Entries are named by base name.
    let listing = sh(&format!("tar -tzf {}", q(&target)));
    assert_eq!(listing, "disk.raw\nmeta.txt\n");
    assert_eq!(
        std::fs::read(x.join("disk.raw")).unwrap(),
        std::fs::read(&big).unwrap()
    );
    assert_eq!(std::fs::read(x.join("meta.txt")).unwrap(), b"meta\n");
    let mode = std::fs::metadata(x.join("meta.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // The stream is smaller than the input (it really is compressed).
    assert!(std::fs::metadata(&target).unwrap().len() < (5 << 20));
    let out = env.captured();
    assert!(out.contains("Tarring"), "{out}");
    assert!(
        out.contains(&format!("Archive {} completed", target.display())),
        "{out}"
    );
}

#[tokio::test]
async fn single_file_gz_bgzf_and_plain_tar() {
    let env = Env::new("b", "null");
    let src = env.write("disk.img", &data((1 << 20) + 5, 3));
    for (name, check) in [("disk.img.gz", "gzip -dc"), ("disk.img.bgzf", "gzip -dc")] {
        let target = env.path(name);
        compress(&target, 9)
            .post_process(&env.ctx(), artifact(vec![src.clone()]))
            .await
            .unwrap();
        let back = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{check} {}", q(&target)))
            .output()
            .unwrap();
        assert!(back.status.success(), "{name}");
        assert!(
            back.stdout == std::fs::read(&src).unwrap(),
            "{name} round trip"
        );
    }
    let tar = env.path("plain.tar");
    compress(&tar, 0)
        .post_process(&env.ctx(), artifact(vec![src.clone()]))
        .await
        .unwrap();
    assert_eq!(sh(&format!("tar -tvf {} | wc -l", q(&tar))).trim(), "1");
    assert_eq!(
        sh(&format!("tar -xOf {} disk.img | md5sum", q(&tar))),
        sh(&format!("md5sum < {}", q(&src)))
    );
}

#[tokio::test]
async fn lz4_and_xz_when_the_tools_exist() {
    let env = Env::new("b", "null");
    let src = env.write("disk.img", &data(300_000, 9));
    for (ext, tool) in [("lz4", "lz4"), ("xz", "xz")] {
        let target = env.path(&format!("disk.img.{ext}"));
        compress(&target, 6)
            .post_process(&env.ctx(), artifact(vec![src.clone()]))
            .await
            .unwrap();
        if !have(tool) {
            eprintln!("{tool} not installed: only checking the output exists");
            assert!(std::fs::metadata(&target).unwrap().len() > 0);
            continue;
        }
        assert_eq!(
            sh(&format!("{tool} -dc {} | md5sum", q(&target))),
            sh(&format!("md5sum < {}", q(&src))),
            "{ext}"
        );
    }
}

#[tokio::test]
async fn zip_entries_are_the_paths_as_given() {
    let env = Env::new("b", "null");
    let a = env.write("a.txt", b"alpha\n");
    let b = env.write("sub/b.bin", &data(200_000, 2));
    let target = env.path("out.zip");
    compress(&target, 6)
        .post_process(&env.ctx(), artifact(vec![a.clone(), b.clone()]))
        .await
        .unwrap();
    let script = format!(
        "import zipfile,hashlib\nz=zipfile.ZipFile({:?})\nassert z.testzip() is None\nfor i in z.infolist(): print(i.filename, i.compress_type, hashlib.md5(z.read(i)).hexdigest())",
        target.display().to_string()
    );
    let listing = sh(&format!("python3 -c {}", q(Path::new(&script))));
    let md5 = |p: &Path| {
        sh(&format!("md5sum < {}", q(p)))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        listing,
        format!(
            "{} 8 {}\n{} 8 {}\n",
            a.display(),
            md5(&a),
            b.display(),
            md5(&b)
        )
    );
}

#[tokio::test]
async fn errors_several_files_without_archive_and_directories() {
    let env = Env::new("b", "null");
    let a = env.write("a", b"a");
    let b = env.write("b", b"b");
    let err = compress(&env.path("x.gz"), 6)
        .post_process(&env.ctx(), artifact(vec![a.clone(), b.clone()]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Can only have 1 input file when not using tar/zip. Found 2 files"),
        "{err}"
    );

    let d = env.path("dir");
    std::fs::create_dir(&d).unwrap();
    let target = env.path("d.tar.gz");
    let err = compress(&target, 6)
        .post_process(&env.ctx(), artifact(vec![d.clone()]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is a directory"), "{err}");
    assert!(!target.exists(), "no partial archive is left");
}

#[tokio::test]
async fn cancelled_compression_stops_and_leaves_nothing() {
    let env = Env::new("b", "null");
    let src = env.write("disk.img", &data(8 << 20, 5));
    let target = env.path("disk.tar.gz");
    env.build.cancel.cancel();
    let err = compress(&target, 6)
        .post_process(&env.ctx(), artifact(vec![src]))
        .await
        .err()
        .unwrap();
    assert!(err.is_cancelled(), "{err}");
    assert!(!target.exists());
}

#[tokio::test]
async fn output_template_and_level_decoding() {
    // Needs the template engine.
    let env = Env::new("web", "qemu");
    let src = env.write("disk.img", b"payload\n");
    let (pp, diags) = decode_pp(
        "compress",
        &format!(
            r#"{{"type": "compress", "output": "{}/{{{{.BuildName}}}}-{{{{.BuilderType}}}}.tar.gz", "compression_level": 42}}"#,
            env.dir.path().display()
        ),
        false,
    );
    assert_eq!(diags, "");
    pp.unwrap()
        .post_process(&env.ctx(), artifact(vec![src]))
        .await
        .unwrap();
    let target = env.path("web-qemu.tar.gz");
    assert_eq!(
        sh(&format!("tar -xzOf {} disk.img", q(&target))),
        "payload\n"
    );

    let (_, diags) = decode_pp(
        "compress",
        r#"{"type": "compress", "output": "x.gz", "compression_level": -5}"#,
        false,
    );
    assert!(diags.contains("Invalid compression level"), "{diags}");
}
