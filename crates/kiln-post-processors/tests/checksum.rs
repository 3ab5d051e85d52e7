mod common;
use common::*;
use kiln_core::PostProcessor;
use kiln_post_processors::checksum::BUILDER_ID;
use kiln_post_processors::checksum::{Checksum, ChecksumType, Config};

/// `<hash>  <path>` from a coreutils tool -> the hash.
fn tool_hash(tool: &str, p: &std::path::Path) -> String {
    sh(&format!("{tool} {}", q(p)))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn hashes_match_coreutils_and_lines_are_tab_separated_basenames() {
    let env = Env::new("web", "qemu");
    let big = env.write("out/disk.img", &data(3 << 20 | 123, 1));
    let small = env.write("out/disk.ovf", b"<ovf/>\n");
    let sums = env.path("sums/all.checksum"); // directory created on demand
    let pp = Checksum {
        config: Config {
            types: ChecksumType::ALL.to_vec(),
            output: sums.display().to_string(),
        },
    };
    let out = pp
        .post_process(&env.ctx(), artifact(vec![big.clone(), small.clone()]))
        .await
        .unwrap();
    assert!(out.keep && out.force_keep);
    let a = out.artifact.unwrap();
    assert_eq!(a.builder_id(), BUILDER_ID);
    assert_eq!(a.files(), vec![big.clone(), small.clone(), sums.clone()]);

    let text = std::fs::read_to_string(&sums).unwrap();
    let mut want = String::new();
    for tool in [
        "md5sum",
        "sha1sum",
        "sha224sum",
        "sha256sum",
        "sha384sum",
        "sha512sum",
    ] {
        for (f, name) in [(&big, "disk.img"), (&small, "disk.ovf")] {
            want.push_str(&format!("{}\t{name}\n", tool_hash(tool, f)));
        }
    }
    assert_eq!(text, want);
}

#[tokio::test]
async fn appends_to_existing_files_and_lists_only_new_ones() {
    let env = Env::new("b", "null");
    let f = env.write("a.bin", b"hello\n");
    let sums = env.path("SHA256SUMS");
    let pp = Checksum {
        config: Config {
            types: vec![ChecksumType::Sha256],
            output: sums.display().to_string(),
        },
    };
    let first = pp
        .post_process(&env.ctx(), artifact(vec![f.clone()]))
        .await
        .unwrap();
    assert_eq!(
        first.artifact.unwrap().files(),
        vec![f.clone(), sums.clone()]
    );
    let second = pp
        .post_process(&env.ctx(), artifact(vec![f.clone()]))
        .await
        .unwrap();
    // As Packer: a checksum file that already existed is not part of the
    // new artifact, and the line is appended.
    assert_eq!(second.artifact.unwrap().files(), vec![f.clone()]);
    let line = format!("{}\ta.bin\n", tool_hash("sha256sum", &f));
    assert_eq!(std::fs::read_to_string(&sums).unwrap(), line.repeat(2));
    // sha256sum -c accepts the format when run next to the files.
    sh(&format!(
        "cd {} && sha256sum -c --quiet SHA256SUMS",
        q(env.dir.path())
    ));
}

#[tokio::test]
async fn missing_input_file_is_an_error_naming_it() {
    let env = Env::new("b", "null");
    let pp = Checksum {
        config: Config {
            types: vec![ChecksumType::Md5],
            output: env.path("x.md5").display().to_string(),
        },
    };
    let missing = env.path("nope.img");
    let err = pp
        .post_process(&env.ctx(), artifact(vec![missing.clone()]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[tokio::test]
async fn default_output_names_build_type_and_algorithm() {
    // Needs the template engine (the default output is a template).
    let env = Env::new("web", "qemu");
    let f = env.write("a.bin", b"x");
    let (pp, diags) = decode_pp(
        "checksum",
        &format!(
            r#"{{"type": "checksum", "checksum_types": ["sha1", "md5"],
                "output": "{}/packer_{{{{.BuildName}}}}_{{{{.BuilderType}}}}_{{{{.ChecksumType}}}}.checksum"}}"#,
            env.dir.path().display()
        ),
        false,
    );
    assert_eq!(diags, "");
    pp.unwrap()
        .post_process(&env.ctx(), artifact(vec![f.clone()]))
        .await
        .unwrap();
    for (t, tool) in [("sha1", "sha1sum"), ("md5", "md5sum")] {
        let p = env.path(&format!("packer_web_qemu_{t}.checksum"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\ta.bin\n", tool_hash(tool, &f))
        );
    }
}
