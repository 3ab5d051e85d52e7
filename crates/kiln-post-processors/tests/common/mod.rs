//! Shared helpers for the post-processor tests.
#![allow(dead_code)]
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{Artifact, BuildCtx, FileArtifact, Output, PostProcessCtx, PrepareOpts, Registry};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub struct Env {
    pub out: Output,
    pub build: BuildCtx,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(name: &str, type_name: &str) -> Env {
        let out = Output::capturing(OutputConfig {
            mode: Mode::Human,
            color: false,
            timestamp: false,
        });
        let dir = tempfile::tempdir().unwrap();
        let mut build = BuildCtx::for_test(out.build_ui(name), dir.path().to_path_buf());
        build.build_name = name.to_string();
        build.build_type = type_name.to_string();
        Env { out, build, dir }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, data).unwrap();
        p
    }
    pub fn interp(&self) -> Context {
        Context {
            build_name: Some(self.build.build_name.clone()),
            build_type: Some(self.build.build_type.clone()),
            ..Context::default()
        }
    }
    pub fn ctx(&self) -> PostProcessCtx<'_> {
        PostProcessCtx {
            build: &self.build,
            interp: self.interp(),
        }
    }
    pub fn captured(&self) -> String {
        self.out.captured()
    }
}

pub fn artifact(files: Vec<PathBuf>) -> Arc<dyn Artifact> {
    let mut a = FileArtifact::new("kiln.test", files);
    a.id = "test-id".into();
    Arc::new(a)
}

/// Pseudo-random bytes that compress somewhat.
pub fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 7 == 0 {
                b'\n'
            } else {
                b"the quick brown fox jumps over the lazy dog"[(x % 43) as usize]
            }
        })
        .collect()
}

/// Run a shell command; its stdout (panics on failure).
pub fn sh(cmd: &str) -> String {
    let o = Command::new("/bin/sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn have(tool: &str) -> bool {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Decode a post-processor's JSON configuration with the registered
/// factory, as the build engine does; the diagnostics as text ("" if none).
pub fn decode_pp(
    type_name: &str,
    json: &str,
    force: bool,
) -> (Option<Box<dyn kiln_core::PostProcessor>>, String) {
    let mut reg = Registry::default();
    kiln_post_processors::register(&mut reg);
    let factory = reg.post_processors[type_name];
    let node = kiln_template::json::parse(Arc::new(Source {
        path: PathBuf::from("template.json"),
        text: json.to_string(),
    }))
    .expect("valid JSON");
    let ctx = Context::default();
    let mut diags = Diagnostics::default();
    let pp = {
        let mut d = Decoder::new(&node, &ctx, &mut diags);
        d.ignore(&["type", "name", "keep_input_artifact", "only", "except"]);
        let pp = factory(
            &mut d,
            &PrepareOpts {
                force,
                ..Default::default()
            },
        );
        d.finish();
        pp
    };
    let text = if diags.is_empty() {
        String::new()
    } else {
        diags.to_string()
    };
    (pp, text)
}
