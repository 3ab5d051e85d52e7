//! Benchmark (not a test): the seed's example (`examples/seed/local.json`)
//! built from the same base image by kiln and by Debian's Packer 1.6.6, in
//! one run: `KILN_BENCH_ROUNDS` rounds (default 2), the order alternating
//! (kiln first, then Packer first, ...) so that neither always meets a
//! cold or warm package mirror and disk. Prints each round's wall times
//! and ratio, the medians and their ratio, the time from QEMU's start to
//! SSH, a per-phase table, and kiln's peak memory.
//!
//!   cargo bench -p kiln-builder-qemu --bench seed_vs_packer
//!
//! `KILN_BENCH_CPUS=qemu64,max,Nehalem` (with `KILN_BENCH_ROUNDS`, at
//! least 5 for figures worth quoting) runs the CPU-model table of issue #15
//! instead: the base image booted by kiln under TCG with each `-cpu`
//! model in turn (the order rotating between rounds), timing boot to SSH
//! and, in the guest, gzip of 64 MB and `grep -r` over /usr; medians and
//! ratios against the first model.
//!
//! `KILN_BENCH_REBUILD=1` runs the rebuild table of issue #15 instead: a
//! copy of the seed example built by kiln without and with the
//! provisioning cache, then per round its last script edited and rebuilt
//! by kiln (resuming) and by Packer 1.6.6 (a full build), a middle script
//! (`compiler_tools.sh`) edited and rebuilt by kiln, and a rebuild by kiln
//! with nothing changed (no machine started).
//!
//! Needs root, QEMU, Packer (`scripts/setup.sh`). The base image is
//! `examples/seed/output-base/debian-12.qcow2` if it exists (KILN_BENCH_BASE
//! names another), else it is built first (not timed).
//!
//! Packer gets the same template with what it needs to run here:
//! `accelerator: tcg` (its default, KVM, dies here), `use_backing_file:
//! false` (its `true` fails with this qemu-img), and a cloud-init seed CD
//! (`cd_files`, `cd_label: cidata`) with a key pair made for the run
//! (`ssh_private_key_file`), which kiln makes by itself.
use kiln_core::build::{self, PrepareOptions, RunOptions};
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{OnError, Output, Registry};
use kiln_template::VarSource;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn registry() -> Registry {
    let mut r = Registry::default();
    kiln_builder_qemu::register(&mut r);
    kiln_builder_debootstrap::register(&mut r);
    kiln_provisioners::register(&mut r);
    r
}

/// Build a template in-process as `kiln build` does; the artifacts' state.
async fn kiln_build(
    template: &Path,
    vars: &[(&str, String)],
) -> (Vec<std::collections::BTreeMap<String, String>>, String) {
    kiln_build_with(template, vars, false).await
}

/// [`kiln_build`], with the provisioning cache (in `KILN_CACHE_DIR`) when
/// `cache` is set.
async fn kiln_build_with(
    template: &Path,
    vars: &[(&str, String)],
    cache: bool,
) -> (Vec<std::collections::BTreeMap<String, String>>, String) {
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: true,
    });
    let t = kiln_template::template::parse_file(template).expect("template");
    let sources: Vec<VarSource> = vars
        .iter()
        .map(|(k, v)| VarSource::Pair {
            name: k.to_string(),
            value: v.clone(),
        })
        .collect();
    let vars = kiln_template::vars::resolve(&t, &sources).expect("variables");
    let builds = build::prepare(
        &t,
        &vars,
        &registry(),
        &PrepareOptions {
            force: true,
            // Cold builds unless asked: the cache would turn later rounds
            // into resumes.
            no_cache: !cache,
            ..Default::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let opts = RunOptions {
        output: out,
        parallel: 0,
        on_error: OnError::Cleanup,
        asker: None,
        cancel: tokio_util::sync::CancellationToken::new(),
        abandon: tokio_util::sync::CancellationToken::new(),
    };
    let mut states = vec![];
    for o in build::run_builds(builds, &opts).await {
        let arts = o.result.unwrap_or_else(|e| {
            panic!(
                "kiln build {} failed: {e}\n{}",
                o.name,
                opts.output.captured()
            )
        });
        for a in arts {
            let mut m = std::collections::BTreeMap::new();
            for k in ["timeToSSH", "domainType"] {
                if let Some(v) = a.state(k) {
                    m.insert(k.to_string(), v);
                }
            }
            states.push(m);
        }
    }
    (states, opts.output.captured())
}

/// `(seconds since midnight, message)` of each `==> name: message` line
/// of a `-timestamp-ui` transcript (`2026-11-24T22:23:19Z: ==> seed: ...`).
fn timeline(transcript: &str) -> Vec<(i64, String)> {
    transcript
        .lines()
        .filter_map(|l| {
            let secs = clock_secs(l)?;
            let msg = l.split_once(": ==> ")?.1;
            let msg = msg.split_once(": ").map_or(msg, |(_, m)| m);
            Some((secs, msg.trim_end_matches("\u{1b}[0m").to_string()))
        })
        .collect()
}

/// The phases both tools go through, each from the first line containing
/// its start marker to the first line containing the next phase's marker.
const PHASES: &[(&str, &str)] = &[
    ("prepare the disk, start QEMU", ""),
    ("boot to SSH", "Waiting for SSH to become available"),
    ("update.sh (upgrade, reboot)", "scripts/update.sh"),
    ("sudoers.sh", "scripts/sudoers.sh"),
    ("compiler_tools.sh", "scripts/compiler_tools.sh"),
    ("prepare_data.sh, minimize.sh", "scripts/prepare_data.sh"),
    ("upload ./data/", "Uploading ./data/"),
    ("shut down, convert the disk", "Gracefully halting"),
];

/// Seconds spent in each of [`PHASES`] (`None` if a marker is missing).
fn phase_times(tl: &[(i64, String)]) -> Vec<Option<i64>> {
    let at = |marker: &str| -> Option<i64> {
        if marker.is_empty() {
            return tl.first().map(|x| x.0);
        }
        tl.iter().find(|(_, m)| m.contains(marker)).map(|x| x.0)
    };
    let end = tl.last().map(|x| x.0);
    (0..PHASES.len())
        .map(|i| {
            let start = at(PHASES[i].1)?;
            let stop = match PHASES.get(i + 1) {
                Some(next) => at(next.1)?,
                None => end?,
            };
            Some(stop - start)
        })
        .collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Seconds since midnight of a line starting with a date and time
/// (`2026/11/24 22:23:19 ...` in PACKER_LOG, `2026-11-24T22:23:19Z: ...`
/// with `-timestamp-ui`): one-second resolution.
fn clock_secs(line: &str) -> Option<i64> {
    let mut p = line.get(11..19)?.split(':').map(|x| x.parse::<i64>().ok());
    Some(p.next()?? * 3600 + p.next()?? * 60 + p.next()??)
}

/// Seconds between Packer's "Started Qemu" and "Connected to SSH!" log
/// lines.
fn packer_time_to_ssh(log: &str) -> Option<i64> {
    let start = log.lines().find(|l| l.contains("Started Qemu. Pid"))?;
    let conn = log.lines().find(|l| l.contains("Connected to SSH!"))?;
    Some(clock_secs(conn)? - clock_secs(start)?)
}

/// One build by one tool.
struct Run {
    wall: Duration,
    /// QEMU start to SSH, seconds.
    ssh: Option<f64>,
    ok: bool,
    transcript: String,
}

fn run_kiln(rt: &tokio::runtime::Runtime, seed: &Path, base: &Path, out: &Path) -> (Run, String) {
    run_kiln_with(rt, seed, base, out, false)
}

fn run_kiln_with(
    rt: &tokio::runtime::Runtime,
    seed: &Path,
    base: &Path,
    out: &Path,
    cache: bool,
) -> (Run, String) {
    eprintln!("Building the seed example with kiln (its transcript follows the build)...");
    let t = Instant::now();
    let (states, transcript) = rt.block_on(kiln_build_with(
        &seed.join("local.json"),
        &[
            ("base_image", base.display().to_string()),
            ("output_directory", out.display().to_string()),
        ],
        cache,
    ));
    let wall = t.elapsed();
    eprintln!("{transcript}");
    let ssh = states
        .first()
        .and_then(|s| s.get("timeToSSH")?.parse().ok());
    let accel = states
        .first()
        .and_then(|s| s.get("domainType").cloned())
        .unwrap_or_default();
    let run = Run {
        wall,
        ssh,
        ok: true,
        transcript,
    };
    (run, accel)
}

/// The seed's template as Packer needs it here (see the crate docs above),
/// written into `scratch`.
fn packer_template(scratch: &Path, seed: &Path) -> PathBuf {
    let key = scratch.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "packer-bench", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let cd = scratch.join("cidata");
    std::fs::create_dir(&cd).unwrap();
    std::fs::write(
        cd.join("user-data"),
        kiln_builder_qemu::iso::seed_user_data("debian", public.trim()),
    )
    .unwrap();
    std::fs::write(
        cd.join("meta-data"),
        kiln_builder_qemu::iso::seed_meta_data("packer-bench", "seed"),
    )
    .unwrap();
    let mut tpl: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seed.join("local.json")).unwrap()).unwrap();
    let b = &mut tpl["builders"][0];
    b["accelerator"] = "tcg".into();
    b["use_backing_file"] = false.into();
    b["ssh_private_key_file"] = key.display().to_string().into();
    b["cd_files"] = serde_json::json!([
        cd.join("user-data").display().to_string(),
        cd.join("meta-data").display().to_string()
    ]);
    b["cd_label"] = "cidata".into();
    let packer_tpl = scratch.join("packer-local.json");
    std::fs::write(&packer_tpl, serde_json::to_string_pretty(&tpl).unwrap()).unwrap();
    packer_tpl
}

fn run_packer(scratch: &Path, template: &Path, base: &Path, out: &Path, round: usize) -> Run {
    eprintln!("Building the seed example with Packer 1.6.6...");
    let log_path = scratch.join(format!("packer-{round}.log"));
    let t = Instant::now();
    let mut child = Command::new("packer")
        .arg("build")
        .arg("-force")
        .arg("-color=false")
        .arg("-timestamp-ui")
        .arg("-var")
        .arg(format!("base_image={}", base.display()))
        .arg("-var")
        .arg(format!("output_directory={}", out.display()))
        .arg(template)
        .env("PACKER_LOG", "1")
        .env("PACKER_LOG_PATH", &log_path)
        .env("PACKER_CACHE_DIR", scratch.join("packer_cache"))
        .env("CHECKPOINT_DISABLE", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running packer (apt-get install packer)");
    // Show Packer's transcript live and keep it for the phase table.
    let mut transcript = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            transcript.push_str(&line);
            transcript.push('\n');
        }
    }
    let st = child.wait().expect("waiting for packer");
    let wall = t.elapsed();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !st.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "Packer failed; the end of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Run {
        wall,
        ssh: packer_time_to_ssh(&log).map(|s| s as f64),
        ok: st.success(),
        transcript,
    }
}

/// One round of both tools, kiln first in even rounds, Packer first in odd
/// ones (so that neither always meets a cold or a warm mirror and disk).
fn alternate(
    round: usize,
    kiln_runs: &mut Vec<Run>,
    kiln: impl FnOnce() -> Run,
    packer_runs: &mut Vec<Run>,
    packer: impl FnOnce() -> Run,
) {
    if round.is_multiple_of(2) {
        kiln_runs.push(kiln());
        packer_runs.push(packer());
    } else {
        packer_runs.push(packer());
        kiln_runs.push(kiln());
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The rebuild table (`KILN_BENCH_REBUILD`, issue #15): the seed example
/// copied into `scratch`, built by kiln without the cache and then with it
/// (a cold cache: what saving the states costs); then each round appends a
/// comment to the last script (`minimize.sh`, as someone developing an
/// image edits it) and rebuilds with kiln (resuming from the cache) and
/// with Packer 1.6.6 (a full build: Packer has no cache), alternating which
/// goes first.
fn rebuild_table(
    rt: &tokio::runtime::Runtime,
    scratch: &Path,
    seed: &Path,
    base: &Path,
    rounds: usize,
) {
    let copy = scratch.join("seed");
    std::fs::create_dir_all(&copy).unwrap();
    for item in ["local.json", "scripts", "data"] {
        let st = Command::new("cp")
            .arg("-r")
            .arg(seed.join(item))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success(), "copying {item}");
    }
    std::env::set_current_dir(&copy).unwrap();
    std::env::set_var("KILN_CACHE_DIR", scratch.join("kiln-cache"));
    let packer_tpl = packer_template(scratch, &copy);
    let out = scratch.join("out");
    let secs = |r: &Run| r.wall.as_secs_f64();
    let full = run_kiln_with(rt, &copy, base, &out, false).0;
    let saving = run_kiln_with(rt, &copy, base, &out, true).0;
    let mut kiln_runs = Vec::new();
    let mut packer_runs = Vec::new();
    let mut middle_runs = Vec::new();
    let mut same_runs = Vec::new();
    for round in 0..rounds {
        let script = copy.join("scripts/minimize.sh");
        let mut text = std::fs::read_to_string(&script).unwrap();
        text.push_str(&format!("# edited for round {round}\n"));
        std::fs::write(&script, text).unwrap();
        let kiln = || {
            let r = run_kiln_with(rt, &copy, base, &out, true).0;
            assert!(
                r.transcript
                    .contains("Using the cached state after provisioner 4"),
                "kiln did not resume after prepare_data.sh:\n{}",
                r.transcript
            );
            r
        };
        let packer = || {
            run_packer(
                scratch,
                &packer_tpl,
                base,
                &scratch.join("packer-out"),
                round,
            )
        };
        alternate(round, &mut kiln_runs, kiln, &mut packer_runs, packer);
        let _ = std::fs::remove_dir_all(scratch.join("packer-out"));
        // The middle of the list edited: resumes after sudoers.sh. Packer
        // rebuilds everything whichever script changed, so the Packer runs
        // above are its time for this edit too.
        let script = copy.join("scripts/compiler_tools.sh");
        let mut text = std::fs::read_to_string(&script).unwrap();
        text.push_str(&format!("# edited for round {round}\n"));
        std::fs::write(&script, text).unwrap();
        let r = run_kiln_with(rt, &copy, base, &out, true).0;
        assert!(
            r.transcript
                .contains("Using the cached state after provisioner 2")
                && !r
                    .transcript
                    .contains("Using the cached state after provisioner 3"),
            "kiln did not resume after sudoers.sh:\n{}",
            r.transcript
        );
        middle_runs.push(r);
        // Nothing changed: no machine at all.
        let r = run_kiln_with(rt, &copy, base, &out, true).0;
        assert!(
            r.transcript.contains("Nothing changed"),
            "kiln did not reuse the stopped machine:\n{}",
            r.transcript
        );
        same_runs.push(r);
    }
    let cache_size = Command::new("du")
        .args(["-sh"])
        .arg(scratch.join("kiln-cache"))
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default();
    println!();
    println!(
        "seed example rebuilt after an edit of its last script (minimize.sh), from {}",
        base.display()
    );
    println!(
        "  kiln full build without the cache {:.1} s; with a cold cache (saving every state) {:.1} s: {:.2}x; the cache then holds {cache_size}",
        secs(&full),
        secs(&saving),
        secs(&saving) / secs(&full)
    );
    for round in 0..rounds {
        let (k, p) = (&kiln_runs[round], &packer_runs[round]);
        let first = if round % 2 == 0 { "kiln" } else { "Packer" };
        println!(
            "  round {} ({first} first): kiln rebuild {:>6.1} s, Packer 1.6.6 rebuild {:>6.1} s{}, ratio {:.2}",
            round + 1,
            secs(k),
            secs(p),
            if p.ok { "" } else { " FAILED" },
            secs(k) / secs(p)
        );
    }
    let km = median(kiln_runs.iter().map(secs).collect());
    let pm = median(packer_runs.iter().map(secs).collect());
    println!(
        "  median rebuild: kiln {km:.1} s, Packer 1.6.6 {pm:.1} s; ratio {:.2}; kiln rebuild / kiln full build {:.2}",
        km / pm,
        km / secs(&full)
    );
    println!("seed example rebuilt after an edit of a middle script (compiler_tools.sh):");
    for (round, r) in middle_runs.iter().enumerate() {
        let t = Timeline::of(&r.transcript);
        println!(
            "  round {}: kiln rebuild {:>6.1} s (ratio {:.2} to Packer's rebuild of the round); provisioners re-run {:.1} s; the cache's own work (lookup, restoring the machine, saving states) {:.1} s",
            round + 1,
            secs(r),
            secs(r) / secs(&packer_runs[round]),
            t.provisioners_run,
            t.cache_overhead()
        );
    }
    let mm = median(middle_runs.iter().map(secs).collect());
    println!(
        "  median: kiln {mm:.1} s, ratio {:.2} to Packer's median",
        mm / pm
    );
    println!("seed example rebuilt with nothing changed:");
    for (round, r) in same_runs.iter().enumerate() {
        println!("  round {}: kiln {:.2} s", round + 1, secs(r));
    }
}

/// What a kiln transcript's timeline says, for the rebuild table.
#[derive(Default)]
struct Timeline {
    /// Seconds of the provisioners that ran (not from the cache).
    provisioners_run: f64,
    /// The `provision` step (provisioners and the states saved after
    /// each), `cache lookup`, `cache final state`.
    provision_step: f64,
    lookup: f64,
    final_state: f64,
    /// Restoring a saved machine: the `run` step (QEMU loading the saved
    /// memory) and `set clock`, when the machine was continued (a boot is
    /// not the cache's work: a build without it boots too).
    restore: f64,
}

impl Timeline {
    /// Parses lines such as `qemu: step provision   3.7s` and
    /// `qemu:   provisioner shell: x.sh   1.0s  (from the cache)`.
    fn of(transcript: &str) -> Timeline {
        let mut t = Timeline::default();
        let continued = transcript.contains("Starting VM, continuing the machine saved after");
        for line in transcript.lines() {
            // Lines may carry a clock before the builder's name
            // (`2026-12-06T01:59:34Z:     seed: step ...`): the entry
            // starts after the last `: ` that precedes `step `/`provisioner `.
            let Some(at) = [": step ", ":   provisioner "]
                .iter()
                .find_map(|m| line.find(m))
            else {
                continue;
            };
            let rest = line[at + 1..].trim_start();
            let cached = rest.contains("(from the cache)");
            // The time is the last word that reads as one: `3.7s`, `1m02.3s`.
            let time = |w: &str| {
                let w = w.strip_suffix('s')?;
                match w.split_once('m') {
                    Some((m, s)) => Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?),
                    None => w.parse::<f64>().ok(),
                }
            };
            let Some(secs) = rest.split_whitespace().rev().find_map(time) else {
                continue;
            };
            if rest.starts_with("provisioner ") && !cached {
                t.provisioners_run += secs;
            } else if rest.starts_with("step provision ") {
                t.provision_step = secs;
            } else if rest.starts_with("step cache lookup ") {
                t.lookup = secs;
            } else if rest.starts_with("step cache final state ") {
                t.final_state = secs;
            } else if continued
                && (rest.starts_with("step run ") || rest.starts_with("step set clock "))
            {
                t.restore += secs;
            }
        }
        t
    }
    fn cache_overhead(&self) -> f64 {
        self.lookup
            + self.restore
            + (self.provision_step - self.provisioners_run).max(0.0)
            + self.final_state
    }
}

/// The guest work timed for each CPU model: `KILN-CPU name seconds` lines.
const CPU_WORK: &str = r#"t() { n=$1; shift; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); echo "KILN-CPU $n $(awk "BEGIN{print $e-$s}")"; }
cat /usr/bin/* /usr/lib/x86_64-linux-gnu/*.so* 2>/dev/null | head -c 64M > /var/tmp/kiln-cpu-data
t gzip gzip -c /var/tmp/kiln-cpu-data
t grep grep -r kiln-no-such-string /usr
rm -f /var/tmp/kiln-cpu-data"#;

/// Seconds to SSH, gzip seconds, grep seconds (each if measured).
type CpuTimes = (Option<f64>, Option<f64>, Option<f64>);

/// One boot of the base image with `-cpu model`.
fn cpu_run(
    rt: &tokio::runtime::Runtime,
    scratch: &Path,
    base: &Path,
    model: &str,
    round: usize,
) -> CpuTimes {
    let dir = scratch.join(format!("cpu-{model}-{round}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tpl = serde_json::json!({
        "builders": [{
            "type": "qemu", "name": "cpu", "iso_url": base.display().to_string(),
            "iso_checksum": "none", "disk_image": true, "use_backing_file": true,
            "format": "qcow2", "headless": true, "cpus": 2, "memory": 1024,
            "output_directory": dir.join("out").display().to_string(),
            "ssh_username": "debian", "ssh_timeout": "10m",
            "shutdown_command": "sudo shutdown -P now",
            "qemuargs": [["-cpu", model]]
        }],
        "provisioners": [{"type": "shell", "inline": [CPU_WORK]}]
    });
    let path = dir.join("cpu.json");
    std::fs::write(&path, tpl.to_string()).unwrap();
    let (states, transcript) = rt.block_on(kiln_build(&path, &[]));
    let _ = std::fs::remove_dir_all(&dir);
    let ssh = states
        .first()
        .and_then(|s| s.get("timeToSSH")?.parse().ok());
    let work = |name: &str| -> Option<f64> {
        let marker = format!("KILN-CPU {name} ");
        let line = transcript.lines().find(|l| l.contains(&marker))?;
        line.split(&marker).nth(1)?.trim().parse().ok()
    };
    (ssh, work("gzip"), work("grep"))
}

/// The CPU-model table (`KILN_BENCH_CPUS`).
fn cpu_table(
    rt: &tokio::runtime::Runtime,
    scratch: &Path,
    base: &Path,
    models: &[String],
    rounds: usize,
) {
    let mut results: Vec<Vec<CpuTimes>> = vec![vec![]; models.len()];
    for round in 0..rounds {
        for i in 0..models.len() {
            let m = (i + round) % models.len();
            eprintln!("CPU round {}: -cpu {}...", round + 1, models[m]);
            results[m].push(cpu_run(rt, scratch, base, &models[m], round));
        }
    }
    let med = |v: Vec<Option<f64>>| -> Option<f64> {
        let v: Vec<f64> = v.into_iter().flatten().collect();
        (!v.is_empty()).then(|| median(v))
    };
    println!();
    println!(
        "CPU models under TCG, base image, 2 vCPUs, {rounds} round(s), order rotating; medians (ratio to -cpu {})",
        models[0]
    );
    println!(
        "  {:<12} {:>16} {:>16} {:>16}",
        "model", "boot to SSH", "gzip 64 MB", "grep -r /usr"
    );
    let cols: Vec<[Option<f64>; 3]> = results
        .iter()
        .map(|r| {
            [
                med(r.iter().map(|x| x.0).collect()),
                med(r.iter().map(|x| x.1).collect()),
                med(r.iter().map(|x| x.2).collect()),
            ]
        })
        .collect();
    for (m, c) in models.iter().zip(&cols) {
        let cell = |j: usize| match (c[j], cols[0][j]) {
            (Some(x), Some(b)) => format!("{x:.1} s ({:.2})", x / b),
            (Some(x), None) => format!("{x:.1} s"),
            _ => "?".into(),
        };
        println!("  {m:<12} {:>16} {:>16} {:>16}", cell(0), cell(1), cell(2));
    }
}

fn main() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let seed = seed.canonicalize().expect("examples/seed");
    std::env::set_current_dir(&seed).unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Rounds alternate which tool goes first (kiln, Packer, then Packer,
    // kiln, ...), so that neither always meets a cold or a warm package
    // mirror, page cache or disk.
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(2);

    let base = match std::env::var_os("KILN_BENCH_BASE") {
        Some(p) => PathBuf::from(p),
        None => seed.join("output-base/debian-12.qcow2"),
    };
    if !base.is_file() {
        eprintln!("Building the base image {} (not timed)...", base.display());
        let dir = base.parent().unwrap().to_path_buf();
        rt.block_on(kiln_build(
            &seed.join("base.json"),
            &[("output_directory", dir.display().to_string())],
        ));
        eprintln!("Base image built.");
    }
    if let Ok(models) = std::env::var("KILN_BENCH_CPUS") {
        let models: Vec<String> = models
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        cpu_table(&rt, scratch.path(), &base, &models, rounds);
        return;
    }
    if std::env::var_os("KILN_BENCH_REBUILD").is_some() {
        rebuild_table(&rt, scratch.path(), &seed, &base, rounds);
        return;
    }
    let packer_tpl = packer_template(scratch.path(), &seed);

    let mut kiln_runs = Vec::new();
    let mut packer_runs = Vec::new();
    let mut kiln_accel = String::new();
    for round in 0..rounds {
        let kiln_out = scratch.path().join(format!("kiln-out-{round}"));
        let packer_out = scratch.path().join(format!("packer-out-{round}"));
        let kiln = || {
            let (r, accel) = run_kiln(&rt, &seed, &base, &kiln_out);
            kiln_accel = accel;
            let _ = std::fs::remove_dir_all(&kiln_out);
            r
        };
        let packer = || {
            let r = run_packer(scratch.path(), &packer_tpl, &base, &packer_out, round);
            let _ = std::fs::remove_dir_all(&packer_out);
            r
        };
        alternate(round, &mut kiln_runs, kiln, &mut packer_runs, packer);
    }
    let kiln_rss = peak_rss_kib();

    let secs = |d: Duration| d.as_secs_f64();
    let opt = |x: Option<f64>| x.map_or("?".to_string(), |s| format!("{s:.1}"));
    println!();
    println!(
        "seed example from {} (kiln accelerator: {kiln_accel}; Packer: tcg), {rounds} round(s), order alternating",
        base.display()
    );
    for round in 0..rounds {
        let (k, p) = (&kiln_runs[round], &packer_runs[round]);
        let first = if round % 2 == 0 { "kiln" } else { "Packer" };
        println!(
            "  round {} ({first} first): kiln {:>6.1} s (SSH after {} s), Packer 1.6.6 {:>6.1} s (SSH after {} s){}, ratio {:.2}",
            round + 1,
            secs(k.wall),
            opt(k.ssh),
            secs(p.wall),
            opt(p.ssh),
            if p.ok { "" } else { " FAILED" },
            secs(k.wall) / secs(p.wall)
        );
    }
    let km = median(kiln_runs.iter().map(|r| secs(r.wall)).collect());
    let pm = median(packer_runs.iter().map(|r| secs(r.wall)).collect());
    println!(
        "  median wall: kiln {km:.1} s, Packer 1.6.6 {pm:.1} s; kiln's peak memory {:.1} MiB",
        kiln_rss as f64 / 1024.0
    );
    println!(
        "  ratio kiln/Packer (medians): {:.2} (target: at most 0.85)",
        km / pm
    );
    println!();
    println!("  phase, median over rounds (transcripts, 1 s resolution)   kiln   Packer");
    let per_phase = |runs: &[Run]| -> Vec<Option<f64>> {
        let all: Vec<Vec<Option<i64>>> = runs
            .iter()
            .map(|r| phase_times(&timeline(&r.transcript)))
            .collect();
        (0..PHASES.len())
            .map(|i| {
                let v: Option<Vec<f64>> = all.iter().map(|p| p[i].map(|s| s as f64)).collect();
                v.map(median)
            })
            .collect()
    };
    let (k, p) = (per_phase(&kiln_runs), per_phase(&packer_runs));
    let show = |x: Option<f64>| x.map_or("?".to_string(), |s| format!("{s:.0} s"));
    for (i, (name, _)) in PHASES.iter().enumerate() {
        println!("  {name:<57} {:>6} {:>8}", show(k[i]), show(p[i]));
    }
}
