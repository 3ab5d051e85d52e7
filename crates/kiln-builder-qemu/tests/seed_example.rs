//! The seed's example, end to end, through kiln's template machinery (the
//! same `prepare` and `run_builds` the CLI uses): `examples/seed/base.json`
//! (debootstrap), `local.json` (qemu + the seed's provisioners), then
//! `verify.json` boots the result and checks the seed's last step: gcc is
//! installed and /stash/placeholder.txt is there. Several minutes under
//! TCG: ignored by default; scripts/test.sh runs it (--include-ignored).
use kiln_core::build::{self, PrepareOptions, RunOptions};
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{OnError, Output, Registry};
use kiln_template::VarSource;
use std::path::{Path, PathBuf};

fn registry() -> Registry {
    let mut r = Registry::default();
    kiln_builder_qemu::register(&mut r);
    kiln_builder_debootstrap::register(&mut r);
    kiln_provisioners::register(&mut r);
    r
}

/// `kiln build -var k=v ... template`, in-process; returns what it printed.
async fn build(template: &Path, vars: &[(&str, String)]) -> String {
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let t = kiln_template::template::parse_file(template)
        .unwrap_or_else(|d| panic!("{}: {d:?}", template.display()));
    let sources: Vec<VarSource> = vars
        .iter()
        .map(|(k, v)| VarSource::Pair {
            name: k.to_string(),
            value: v.clone(),
        })
        .collect();
    let vars = kiln_template::vars::resolve(&t, &sources).unwrap_or_else(|d| panic!("{d:?}"));
    // A full build every time: no provisioning cache.
    let opts = PrepareOptions {
        no_cache: true,
        ..Default::default()
    };
    let builds = build::prepare(&t, &vars, &registry(), &opts)
        .unwrap_or_else(|d| panic!("{}: {d:?}", template.display()));
    let opts = RunOptions {
        output: out.clone(),
        parallel: 0,
        on_error: OnError::Cleanup,
        asker: None,
        cancel: tokio_util::sync::CancellationToken::new(),
        abandon: tokio_util::sync::CancellationToken::new(),
    };
    let outcomes = build::run_builds(builds, &opts).await;
    let text = out.captured();
    for o in &outcomes {
        if let Err(e) = &o.result {
            panic!(
                "{}: build {} failed: {e}\n{text}",
                template.display(),
                o.name
            );
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn the_seed_example_builds_locally_and_has_gcc_and_the_data() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    // Packer resolves the templates' relative paths (scripts, data) from
    // the working directory: run from the example's directory.
    std::env::set_current_dir(&seed).unwrap();
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("output-base");
    let out = d.path().join("output-seed");

    let log = build(
        &seed.join("base.json"),
        &[("output_directory", base.display().to_string())],
    )
    .await;
    assert!(log.contains("Build 'base' finished"), "{log}");
    let base_img = base.join("debian-12.qcow2");
    assert!(base_img.is_file());

    let log = build(
        &seed.join("local.json"),
        &[
            ("base_image", base_img.display().to_string()),
            ("output_directory", out.display().to_string()),
        ],
    )
    .await;
    for step in [
        "scripts/update.sh",
        "scripts/compiler_tools.sh",
        "scripts/prepare_data.sh",
        "Build 'seed' finished",
    ] {
        assert!(log.contains(step), "{step}:\n{log}");
    }
    let img = out.join("seed.qcow2");
    assert!(img.is_file());

    let log = build(
        &seed.join("verify.json"),
        &[
            ("image", img.display().to_string()),
            (
                "output_directory",
                d.path().join("output-verify").display().to_string(),
            ),
        ],
    )
    .await;
    assert!(
        log.lines().any(|l| l.contains("ii  gcc ")),
        "dpkg -l gcc inside the image:\n{log}"
    );
    assert!(log.contains("/stash/placeholder.txt"), "{log}");
}
