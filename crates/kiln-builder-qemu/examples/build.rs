//! A development harness: `kiln build` with the qemu and debootstrap
//! builders and the provisioners, for trying templates before the CLI
//! registers these builders.
//!
//!   cargo run -p kiln-builder-qemu --example build -- [-force] [-var k=v ...] template.json
use kiln_core::build::{self, PrepareOptions, RunOptions};
use kiln_core::ui::OutputConfig;
use kiln_core::{OnError, Output, Registry};
use kiln_template::VarSource;

fn main() {
    let mut force = false;
    let mut on_error = OnError::Cleanup;
    let mut vars = vec![];
    let mut template = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-force" => force = true,
            "-on-error=abort" => on_error = OnError::Abort,
            "-var" => {
                let kv = args.next().expect("-var k=v");
                let (k, v) = kv.split_once('=').expect("-var k=v");
                vars.push(VarSource::Pair {
                    name: k.into(),
                    value: v.into(),
                });
            }
            t => template = Some(std::path::PathBuf::from(t)),
        }
    }
    let template = template.expect("a template");
    let mut reg = Registry::default();
    kiln_builder_qemu::register(&mut reg);
    kiln_builder_debootstrap::register(&mut reg);
    kiln_provisioners::register(&mut reg);
    let mut cfg = OutputConfig::detect();
    cfg.timestamp = true;
    let out = Output::new(cfg);
    let t = kiln_template::template::parse_file(&template).unwrap_or_else(|d| panic!("{d:?}"));
    let vars = kiln_template::vars::resolve(&t, &vars).unwrap_or_else(|d| panic!("{d:?}"));
    let builds = build::prepare(
        &t,
        &vars,
        &reg,
        &PrepareOptions {
            force,
            no_cache: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = RunOptions {
        output: out.clone(),
        parallel: 0,
        on_error,
        asker: None,
        cancel: tokio_util::sync::CancellationToken::new(),
        abandon: tokio_util::sync::CancellationToken::new(),
    };
    let started = std::time::Instant::now();
    let outcomes = rt.block_on(build::run_builds(builds, &opts));
    build::print_summary(&out, &outcomes, started.elapsed());
    if outcomes.iter().any(|o| o.result.is_err()) {
        std::process::exit(1);
    }
}
