mod common;
use common::*;
use kiln_core::PostProcessor;
use kiln_post_processors::artifice::{Artifice, Config, BUILDER_ID};

fn artifice(files: &[String]) -> Artifice {
    Artifice {
        config: Config {
            files: files.to_vec(),
        },
    }
}

#[tokio::test]
async fn globs_select_files_and_missing_ones_are_skipped() {
    let env = Env::new("b", "docker");
    let a = env.write("out/b.img", b"b");
    let b = env.write("out/a.img", b"a");
    let hidden = env.write("out/.h.img", b"h");
    env.write("out/c.txt", b"c");
    let keep = env.write("other/keep.txt", b"k");
    let d = env.dir.path().display().to_string();
    let pp = artifice(&[
        format!("{d}/out/*.img"),
        format!("{d}/other/keep.txt"),
        format!("{d}/nothing/*.img"),
        format!("{d}/missing.txt"),
    ]);
    let input = artifact(vec![env.path("builder-output")]);
    let out = pp.post_process(&env.ctx(), input).await.unwrap();
    assert!(out.keep && !out.force_keep);
    let a_ = out.artifact.unwrap();
    assert_eq!(a_.builder_id(), BUILDER_ID);
    // Lexical order per directory; `*` matches dot files (Go's Glob).
    assert_eq!(a_.files(), vec![hidden, b, a, keep]);
    let text = env.captured();
    assert!(text.contains("Discarding files from artifact:"), "{text}");
    assert!(text.contains("Using these artifact files:"), "{text}");
    assert!(text.contains("No file matches"), "{text}");
}

#[tokio::test]
async fn dangling_symlink_and_bad_pattern_are_errors() {
    let env = Env::new("b", "null");
    let link = env.path("dangling");
    std::os::unix::fs::symlink(env.path("nowhere"), &link).unwrap();
    let err = artifice(&[link.display().to_string()])
        .post_process(&env.ctx(), artifact(vec![]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&link.display().to_string()), "{err}");

    let err = artifice(&[format!("{}/[a", env.dir.path().display())])
        .post_process(&env.ctx(), artifact(vec![]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("syntax error in pattern"), "{err}");
}
