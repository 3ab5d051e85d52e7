//! The hook API a provisioning cache uses: the build's provisioning steps
//! (a `shell` provisioner's `scripts` one step each), and provisioning
//! resumed after the first `skip` steps with a callback after each step.
//! A test builder calls them as the qemu builder's cache does; a test
//! provisioner registered as `shell` records what it ran.
use kiln_core::build::{self, PrepareOptions, RunOptions};
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{
    async_trait, Artifact, BuildCtx, BuildError, Builder, Communicator, Hook, OnError, Output,
    ProvisionCtx, ProvisionStep, Provisioner, Registry, StepDone,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the builder saw: the steps, then each `done` index.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The configuration of step 1 as the cache keys it.
static CONFIG: Mutex<serde_json::Value> = Mutex::new(serde_json::Value::Null);

struct Resumer {
    skip: usize,
}

struct Recorder;

#[async_trait]
impl StepDone for Recorder {
    async fn done(&self, _ctx: &BuildCtx, step: &ProvisionStep) -> Result<(), BuildError> {
        SEEN.lock()
            .unwrap()
            .push(format!("done {} {}", step.index, step.label));
        Ok(())
    }
}

#[async_trait]
impl Builder for Resumer {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        for s in hook.steps(ctx) {
            SEEN.lock().unwrap().push(format!(
                "step {} {} files={}",
                s.index,
                s.label,
                s.input.files.len()
            ));
            if s.index == 1 {
                *CONFIG.lock().unwrap() = s.input.config.clone();
            }
        }
        hook.provision_steps(ctx, None, self.skip, &Recorder)
            .await?;
        Ok(None)
    }
}

struct Shell {
    log: PathBuf,
    what: Vec<String>,
}

#[async_trait]
impl Provisioner for Shell {
    async fn provision(
        &self,
        _ctx: &ProvisionCtx<'_>,
        _comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let mut log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for w in &self.what {
            if w.contains("fail") {
                return Err(BuildError::msg(format!("{w} failed")));
            }
            log.push_str(w);
            log.push('\n');
        }
        std::fs::write(&self.log, log).unwrap();
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::default();
    r.builder("resumer", |d, _| {
        let skip = d.uint("skip").unwrap_or(0) as usize;
        Some(Box::new(Resumer { skip }))
    });
    r.provisioner("shell", |d, _| {
        let log = PathBuf::from(d.string("log")?);
        let mut what = d.string_list("scripts").unwrap_or_default();
        what.extend(d.string_list("inline").unwrap_or_default());
        let _ = d.raw_string("execute_command");
        Some(Box::new(Shell { log, what }))
    });
    r
}

async fn build(dir: &std::path::Path, skip: usize, last: &str) -> (bool, String) {
    let log = dir.join("ran.log");
    let tpl = serde_json::json!({
        "builders": [{"type": "resumer", "skip": skip}],
        "provisioners": [
            {"type": "shell", "log": log, "scripts": ["a.sh", "b.sh", "c.sh"],
             "execute_command": "sudo {{.Path}} {{user `x`}}"},
            {"type": "shell", "log": log, "inline": [last]}
        ],
        "variables": {"x": "X"}
    });
    let path = dir.join("t.json");
    std::fs::write(&path, tpl.to_string()).unwrap();
    let t = kiln_template::template::parse_file(&path).unwrap();
    let vars = kiln_template::vars::resolve(&t, &[]).unwrap();
    let builds = build::prepare(&t, &vars, &registry(), &PrepareOptions::default())
        .unwrap_or_else(|d| panic!("{d:?}"));
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let opts = RunOptions {
        output: out.clone(),
        parallel: 0,
        on_error: OnError::Cleanup,
        asker: None,
        cancel: Default::default(),
        abandon: Default::default(),
    };
    let o = build::run_builds(builds, &opts).await;
    (o[0].result.is_ok(), out.captured())
}

#[tokio::test]
async fn steps_split_scripts_and_provisioning_resumes_after_skip() {
    let d = tempfile::tempdir().unwrap();
    let (ok, out) = build(d.path(), 2, "last").await;
    assert!(ok, "{out}");
    let seen = std::mem::take(&mut *SEEN.lock().unwrap());
    assert_eq!(
        seen,
        [
            "step 1 shell: a.sh files=1",
            "step 2 shell: b.sh files=1",
            "step 3 shell: c.sh files=1",
            "step 4 shell: inline files=0",
            "done 3 shell: c.sh",
            "done 4 shell: inline",
        ]
    );
    // Only the steps after the skipped ones ran, each script alone.
    assert_eq!(
        std::fs::read_to_string(d.path().join("ran.log")).unwrap(),
        "c.sh\nlast\n"
    );
    // The timeline shows the skipped ones as from the cache.
    assert!(out.contains("provisioner shell: a.sh "), "{out}");
    assert!(out.contains("(from the cache)"), "{out}");
    // What a cache keys: the configuration rendered with the user
    // variables, one script per step.
    let c = CONFIG.lock().unwrap().clone();
    assert_eq!(c["scripts"], serde_json::json!(["a.sh"]));
    assert_eq!(c["execute_command"], "sudo <no value> X", "{c}");

    // A failing step: the ones before it are done (saved), it is not.
    std::fs::remove_file(d.path().join("ran.log")).unwrap();
    let (ok, out) = build(d.path(), 0, "fail").await;
    assert!(!ok, "{out}");
    let seen = std::mem::take(&mut *SEEN.lock().unwrap());
    let done: Vec<&String> = seen.iter().filter(|s| s.starts_with("done")).collect();
    assert_eq!(
        done,
        [
            "done 1 shell: a.sh",
            "done 2 shell: b.sh",
            "done 3 shell: c.sh"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("ran.log")).unwrap(),
        "a.sh\nb.sh\nc.sh\n"
    );
    assert!(
        out.contains("provisioner shell: inline") && out.contains("(failed)"),
        "{out}"
    );
}
