//! Preparing a template into builds, and running them.
//!
//! [`prepare`] is pure: it decodes every component's configuration through
//! the registry and reports every problem of the template at once (each
//! once, even when a provisioner or post-processor is decoded for several
//! builds). [`run_builds`] runs the prepared builds (in parallel up to a
//! limit, started in template order), wraps provisioners with
//! `pause_before` / `max_retries` / `timeout`, and applies post-processor
//! chains with Packer's rules for which artifacts are kept.
//!
//! As in Packer 1.6.6 (`core.go`):
//! - a provisioner's or post-processor's `only`/`except` and a
//!   provisioner's `override` name builders by their raw (uninterpolated)
//!   `name`, while `-only`/`-except` on the command line match the
//!   interpolated build names;
//! - `-except` also names post-processors, by `name` (which defaults to the
//!   type): the post-processor and the rest of its chain are skipped;
//! - `max_retries` may be a template, rendered with the user variables when
//!   the build is prepared; a failed provisioner is retried at once, with
//!   "Provisioner failed with ..., retrying with N trie(s) left";
//! - `pause_before` is waited before every attempt.
//!
//! One deliberate difference: Packer 1.6.6 ignores `timeout` when
//! `pause_before` is set too (it wraps the provisioner in one or the
//! other); kiln applies both. A timed-out attempt's provisioner is
//! cancelled (its commands get SIGTERM, then SIGKILL) and waited for before
//! the attempt fails.
use crate::artifact::Artifact;
use crate::communicator::Communicator;
use crate::component::{
    Builder, Hook, PostProcessCtx, PostProcessorFactory, PrepareOpts, ProvisionCtx,
    ProvisionerFactory, Registry,
};
use crate::context::{Asker, BuildCtx, Ledger, OnError};
use crate::error::BuildError;
use crate::parity::ComponentKind;
use crate::step::Outcome;
use crate::ui::{Output, Ui};
use crate::unsupported::{WindowsMark, WINDOWS_PROVISIONERS};
use async_trait::async_trait;
use kiln_template::diag::suggest;
use kiln_template::template::{
    PostProcessorDef, ProvisionerDef, Spanned, BUILDER_CORE_KEYS, POST_PROCESSOR_CORE_KEYS,
    PROVISIONER_CORE_KEYS,
};
use kiln_template::{
    BuildKeys, Context, Decoder, Diagnostic, Diagnostics, KeyNotes, Node, Pos, Source, Template,
    Variables,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Keys Packer injects into every component's configuration; accepted and
/// ignored so templates that set them by hand still work.
const INJECTED_KEYS: &[&str] = &[
    "packer_build_name",
    "packer_builder_type",
    "packer_debug",
    "packer_force",
    "packer_on_error",
    "packer_user_variables",
    "packer_sensitive_variables",
    "packer_template_path",
];

/// Command-line choices that shape preparation.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// `-only`: build names (or `*` globs) to run.
    pub only: Vec<String>,
    /// `-except`: build names to skip; also post-processors, by `name`
    /// (which defaults to the type), with the rest of their chain.
    pub except: Vec<String>,
    pub force: bool,
}

struct PlannedProvisioner {
    def: ProvisionerDef,
    config: Node,
    factory: ProvisionerFactory,
    /// `max_retries`, rendered.
    max_retries: u32,
}

struct PlannedPostProcessor {
    def: PostProcessorDef,
    factory: PostProcessorFactory,
}

/// A build ready to run: its builder is prepared and its provisioners and
/// post-processors validated.
pub struct PlannedBuild {
    pub name: String,
    pub type_name: String,
    builder: Box<dyn Builder>,
    provisioners: Vec<PlannedProvisioner>,
    /// The template's `error-cleanup-provisioner`, if it applies here.
    error_cleanup: Option<PlannedProvisioner>,
    post_processors: Vec<Vec<PlannedPostProcessor>>,
    interp: Context,
    opts: PrepareOpts,
    /// Warnings of its components' configurations (Packer's prepare
    /// warnings); see [`warnings`].
    pub warnings: Vec<Diagnostic>,
}

/// The warnings of prepared builds, each once.
pub fn warnings(builds: &[PlannedBuild]) -> Diagnostics {
    let mut d = Diagnostics(builds.iter().flat_map(|b| b.warnings.clone()).collect());
    d.dedup();
    d
}

impl PlannedBuild {
    /// Provisioner types, in order (for `inspect` and tests).
    pub fn provisioner_types(&self) -> Vec<String> {
        self.provisioners
            .iter()
            .map(|p| p.def.type_name.value.clone())
            .collect()
    }
    /// Post-processor chains, as type names.
    pub fn post_processor_types(&self) -> Vec<Vec<String>> {
        self.post_processors
            .iter()
            .map(|c| c.iter().map(|p| p.def.type_name.value.clone()).collect())
            .collect()
    }
}

/// Simple glob: `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn selected(name: &str, opts: &PrepareOptions) -> bool {
    if !opts.only.is_empty() && !opts.only.iter().any(|p| glob_match(p, name)) {
        return false;
    }
    !opts.except.iter().any(|p| glob_match(p, name))
}

/// A context for rendering a component's configuration in a build.
pub fn build_context(
    template: &Template,
    vars: &Variables,
    name: &str,
    type_name: &str,
) -> Context {
    let mut ctx = Context::new(template.dir.clone());
    ctx.user_vars = Arc::new(vars.values.clone());
    ctx.build_name = Some(name.to_string());
    ctx.build_type = Some(type_name.to_string());
    ctx
}

/// Which kind of component a [`component_decoder`] decodes.
#[derive(Clone, Copy)]
enum Kind {
    Builder,
    Provisioner,
    PostProcessor,
}

/// A decoder for one component's configuration: named in messages ("the
/// `shell` provisioner"), with the keys the engine handles itself (its
/// kind's core keys and the injected ones) left out.
fn component_decoder<'a>(
    node: &'a Node,
    interp: &'a Context,
    diags: &'a mut Diagnostics,
    kind: Kind,
    type_name: &str,
    notes: Option<&'a KeyNotes>,
) -> Decoder<'a> {
    let (what, core) = match kind {
        Kind::Builder => ("builder", BUILDER_CORE_KEYS),
        Kind::Provisioner => ("provisioner", PROVISIONER_CORE_KEYS),
        Kind::PostProcessor => ("post-processor", POST_PROCESSOR_CORE_KEYS),
    };
    let mut d = Decoder::new(node, interp, diags);
    d.describe(format!("the `{type_name}` {what}"));
    d.ignore(core);
    d.ignore(INJECTED_KEYS);
    if let Some(n) = notes {
        d.fix_notes(n);
    }
    d
}

impl Kind {
    fn core_keys(self) -> &'static [&'static str] {
        match self {
            Kind::Builder => BUILDER_CORE_KEYS,
            Kind::Provisioner => PROVISIONER_CORE_KEYS,
            Kind::PostProcessor => POST_PROCESSOR_CORE_KEYS,
        }
    }
    fn parity(self) -> ComponentKind {
        match self {
            Kind::Builder => ComponentKind::Builder,
            Kind::Provisioner => ComponentKind::Provisioner,
            Kind::PostProcessor => ComponentKind::PostProcessor,
        }
    }
}

/// Decode one component of a build (for validation), then render what
/// Packer renders while preparing it (see [`crate::parity`]). Returns the
/// component when it could be made, and its warnings.
fn decode_component<T>(
    node: &Node,
    interp: &Context,
    diags: &mut Diagnostics,
    kind: Kind,
    type_name: &str,
    notes: &KeyNotes,
    make: impl FnOnce(&mut Decoder<'_>) -> Option<T>,
) -> (Option<T>, Vec<Diagnostic>) {
    let (made, warnings) = {
        let mut d = component_decoder(node, interp, diags, kind, type_name, Some(notes));
        let made = make(&mut d);
        (made, d.finish_with_warnings())
    };
    crate::parity::render_like_packer(
        node,
        kind.parity(),
        type_name,
        kind.core_keys(),
        interp,
        diags,
    );
    (made, warnings)
}

/// Component types kiln does not have, each with every place it is used
/// (in template order), for one message per type.
#[derive(Default)]
struct Missing {
    /// (kind, type, places)
    by_type: Vec<(&'static str, String, Vec<Place>)>,
}

/// Where something is written.
type Place = (Arc<Source>, Pos);

impl Missing {
    fn add(&mut self, kind: &'static str, t: &Spanned<String>, node: &Node) {
        let place = (node.source.clone(), t.pos);
        match self
            .by_type
            .iter_mut()
            .find(|(k, n, _)| *k == kind && *n == t.value)
        {
            Some((_, _, places)) => {
                if !places.iter().any(|(_, p)| p.offset == t.pos.offset) {
                    places.push(place);
                }
            }
            None => self.by_type.push((kind, t.value.clone(), vec![place])),
        }
    }

    fn report(self, registry: &Registry, notes: &KeyNotes, diags: &mut Diagnostics) {
        for (kind, type_name, places) in self.by_type {
            let (packer_has, kiln_has): (&[&str], Vec<&str>) = match kind {
                "builder" => (
                    crate::unsupported::PACKER_BUILDERS,
                    registry.builders.keys().copied().collect(),
                ),
                "provisioner" => (
                    crate::unsupported::PACKER_PROVISIONERS,
                    registry.provisioners.keys().copied().collect(),
                ),
                _ => (
                    crate::unsupported::PACKER_POST_PROCESSORS,
                    registry.post_processors.keys().copied().collect(),
                ),
            };
            let Some(mut d) =
                crate::unsupported::missing_type(kind, &type_name, &places, packer_has, &kiln_has)
            else {
                continue;
            };
            // A type that a fixer renames (`virtualbox`, `vmware`,
            // `proxmox`): say what it became.
            let (src, pos) = &places[0];
            if let Some(note) = notes.covering(src, pos.offset) {
                d.help = Some(format!(
                    "{}; {}",
                    note.message,
                    d.help.take().unwrap_or_default()
                ));
            }
            diags.push(d);
        }
    }
}

/// Whether a builder's configuration asks for the WinRM communicator
/// (its `communicator` rendered with the user variables).
fn winrm_communicator(config: &Node, interp: &Context) -> Option<Pos> {
    let v = config.get("communicator")?;
    let s = v.as_str()?;
    let rendered = kiln_template::interp::render(s, interp).ok()?;
    (rendered == "winrm").then_some(v.pos)
}

/// A post-processor's name for `-except`: its `name`, or its type.
fn pp_effective_name(p: &PostProcessorDef) -> &str {
    p.name
        .as_ref()
        .map_or(p.type_name.value.as_str(), |n| n.value.as_str())
}

/// Decode every component of the template for every selected build.
/// Returns all problems at once.
pub fn prepare(
    template: &Template,
    vars: &Variables,
    registry: &Registry,
    opts: &PrepareOptions,
) -> Result<Vec<PlannedBuild>, Diagnostics> {
    prepare_with_warnings(template, vars, registry, opts).0
}

/// [`prepare`], and the warnings of every component decoded (Packer's
/// prepare warnings, keys `kiln fix` would rewrite), each once, whether
/// the preparation succeeded or not: a failed `validate` shows them too.
pub fn prepare_with_warnings(
    template: &Template,
    vars: &Variables,
    registry: &Registry,
    opts: &PrepareOptions,
) -> (Result<Vec<PlannedBuild>, Diagnostics>, Diagnostics) {
    let (builds, diags, warnings) = prepare_all(template, vars, registry, opts);
    (check_prepared(builds, diags), warnings)
}

fn check_prepared(
    builds: Vec<PlannedBuild>,
    diags: Diagnostics,
) -> Result<Vec<PlannedBuild>, Diagnostics> {
    diags.into_result()?;
    if builds.is_empty() {
        let mut d = Diagnostics::default();
        d.push(Diagnostic::new(
            "no builds to run: -only/-except excluded every build",
        ));
        return Err(d);
    }
    Ok(builds)
}

/// The problems [`prepare`] finds in the components of a template, for a
/// template that is already known to be invalid (a partial one from
/// [`kiln_template::template::parse_partial`]): so that its component
/// problems are reported in the same run as its structural ones. Nothing
/// is said about an empty selection of builds.
pub fn component_problems(
    template: &Template,
    vars: &Variables,
    registry: &Registry,
    opts: &PrepareOptions,
) -> Diagnostics {
    prepare_all(template, vars, registry, opts).1
}

/// [`component_problems`] and the components' warnings.
pub fn component_problems_with_warnings(
    template: &Template,
    vars: &Variables,
    registry: &Registry,
    opts: &PrepareOptions,
) -> (Diagnostics, Diagnostics) {
    let (_, diags, warnings) = prepare_all(template, vars, registry, opts);
    (diags, warnings)
}

fn prepare_all(
    template: &Template,
    vars: &Variables,
    registry: &Registry,
    opts: &PrepareOptions,
) -> (Vec<PlannedBuild>, Diagnostics, Diagnostics) {
    let mut all_warnings = Diagnostics::default();
    let mut diags = Diagnostics::default();
    let popts = PrepareOpts { force: opts.force };
    let mut builds = Vec::new();
    let mut names = BTreeMap::new();
    // What `kiln fix` would rewrite: reported by the decoders at each key.
    let notes = kiln_fix::key_notes(&template.source);
    let mut missing = Missing::default();
    let mut windows: Vec<WindowsMark> = Vec::new();
    for b in &template.builders {
        // The name is itself a template (user variables only).
        let mut base = Context::new(template.dir.clone());
        base.user_vars = Arc::new(vars.values.clone());
        let name = match kiln_template::interp::render(&b.name.value, &base) {
            Ok(n) => n,
            Err(e) => {
                diags.push(Diagnostic::at(
                    &b.config.source,
                    b.name.pos,
                    format!("in builder name: {e}"),
                ));
                continue;
            }
        };
        if let Some(prev) = names.insert(name.clone(), b.name.pos) {
            diags.push(Diagnostic::at(
                &b.config.source,
                b.name.pos,
                format!(
                    "duplicate build name `{name}` (first at {}:{})",
                    prev.line, prev.col
                ),
            ));
            continue;
        }
        // As Packer, a build left out by -only/-except is not prepared at
        // all: its components are never looked at.
        if !selected(&name, opts) {
            continue;
        }
        let type_name = b.type_name.value.clone();
        let interp = build_context(template, vars, &name, &type_name);
        let winrm = winrm_communicator(&b.config, &interp);
        if let Some(pos) = winrm {
            windows.push(WindowsMark {
                source: b.config.source.clone(),
                pos,
                what: format!("`communicator: winrm` in the `{name}` builder"),
            });
        }
        let Some(factory) = registry.builders.get(type_name.as_str()) else {
            missing.add("builder", &b.type_name, &b.config);
            continue;
        };
        let mut warnings = Vec::new();
        // A builder's own configuration has no build data (Packer renders
        // it with none): `{{build `...`}}` fails there.
        let mut builder_interp = interp.clone();
        builder_interp.build_keys = BuildKeys::Unavailable;
        let builder = if winrm.is_some() {
            // One message for the template says it all (see below).
            None
        } else {
            let (built, w) = decode_component(
                &b.config,
                &builder_interp,
                &mut diags,
                Kind::Builder,
                &type_name,
                &notes,
                |d| factory(d, &popts),
            );
            warnings.extend(w);
            built
        };
        // Provisioners and post-processors may name, in `build`, Packer's
        // common builder data and what this builder declares.
        let mut component_interp = interp.clone();
        if let Some(builder) = &builder {
            let mut keys: BTreeSet<String> = kiln_template::interp::COMMON_BUILD_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect();
            keys.extend(builder.generated_keys());
            component_interp.build_keys = BuildKeys::Only(Arc::new(keys));
        }
        // Provisioners' and post-processors' only/except/override name the
        // builder by its raw name, as Packer's `rawName`.
        let raw_name = b.name.value.as_str();

        let mut plan_provisioner = |p: &ProvisionerDef| -> Option<PlannedProvisioner> {
            if !p.applies_to(raw_name) {
                return None;
            }
            if WINDOWS_PROVISIONERS.contains(&p.type_name.value.as_str()) {
                windows.push(WindowsMark {
                    source: p.config.source.clone(),
                    pos: p.type_name.pos,
                    what: format!("the `{}` provisioner", p.type_name.value),
                });
                return None;
            }
            let Some(pf) = registry.provisioners.get(p.type_name.value.as_str()) else {
                missing.add("provisioner", &p.type_name, &p.config);
                return None;
            };
            let config = p.config_for(raw_name);
            let (_, w) = decode_component(
                &config,
                &component_interp,
                &mut diags,
                Kind::Provisioner,
                &p.type_name.value,
                &notes,
                |d| pf(d, &popts),
            );
            warnings.extend(w);
            let max_retries = match p.resolved_max_retries(&interp) {
                Ok(n) => n,
                Err(e) => {
                    diags.push(e);
                    0
                }
            };
            Some(PlannedProvisioner {
                def: p.clone(),
                config,
                factory: *pf,
                max_retries,
            })
        };
        let provisioners: Vec<PlannedProvisioner> = template
            .provisioners
            .iter()
            .filter_map(&mut plan_provisioner)
            .collect();
        let error_cleanup = template
            .error_cleanup_provisioner
            .as_ref()
            .and_then(plan_provisioner);

        let mut chains = Vec::new();
        for chain in &template.post_processors {
            let mut planned = Vec::new();
            for pp in chain {
                if !pp.applies_to(raw_name) {
                    continue;
                }
                // -except also names post-processors, by name (the type
                // when unnamed): as Packer 1.6.6, that post-processor and
                // the rest of its chain are skipped.
                if opts
                    .except
                    .iter()
                    .any(|e| glob_match(e, pp_effective_name(pp)))
                {
                    break;
                }
                let Some(pf) = registry.post_processors.get(pp.type_name.value.as_str()) else {
                    missing.add("post-processor", &pp.type_name, &pp.config);
                    continue;
                };
                let (_, w) = decode_component(
                    &pp.config,
                    &component_interp,
                    &mut diags,
                    Kind::PostProcessor,
                    &pp.type_name.value,
                    &notes,
                    |d| pf(d, &popts),
                );
                warnings.extend(w);
                planned.push(PlannedPostProcessor {
                    def: pp.clone(),
                    factory: *pf,
                });
            }
            if !planned.is_empty() {
                chains.push(planned);
            }
        }

        all_warnings.0.extend(warnings.iter().cloned());
        if let Some(builder) = builder {
            builds.push(PlannedBuild {
                name,
                type_name,
                builder,
                provisioners,
                error_cleanup,
                post_processors: chains,
                interp,
                opts: popts.clone(),
                warnings,
            });
        }
    }
    // One message for Windows guests, one per component type kiln lacks.
    let mut seen = BTreeSet::new();
    windows.retain(|m| seen.insert(m.pos.offset));
    windows.sort_by_key(|m| m.pos.offset);
    if let Some(d) = crate::unsupported::windows_message(&windows) {
        diags.push(d);
    }
    missing.report(registry, &notes, &mut diags);
    let all_pps = || template.post_processors.iter().flatten();
    for (what, list) in [("-only", &opts.only), ("-except", &opts.except)] {
        for pat in list.iter() {
            let matches_build = names.keys().any(|n| glob_match(pat, n));
            // -except may name a post-processor; -only names builds only
            // (as Packer), but one naming a post-processor gets the "no
            // builds to run" error below rather than this one.
            let matches_pp = all_pps().any(|p| glob_match(pat, pp_effective_name(p)));
            if !matches_build && !matches_pp {
                let mut d = Diagnostic::new(format!("{what} `{pat}` matches no build"));
                let by_type =
                    all_pps().find(|p| p.name.is_some() && glob_match(pat, &p.type_name.value));
                if let (Some(p), "-except") = (by_type, what) {
                    d = d.with_help(format!(
                        "a post-processor is named by its `name` when it has one: the `{}` post-processor is `{}`",
                        p.type_name.value,
                        pp_effective_name(p)
                    ));
                } else if let Some(s) = suggest(
                    pat,
                    names
                        .keys()
                        .map(|s| s.as_str())
                        .chain(all_pps().map(pp_effective_name)),
                ) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                diags.push(d);
            }
        }
    }
    diags.dedup();
    all_warnings.dedup();
    (builds, diags, all_warnings)
}

/// Command-line choices that shape a run.
#[derive(Clone)]
pub struct RunOptions {
    pub output: Output,
    /// `-parallel-builds`: at most this many at once (0 = no limit).
    pub parallel: usize,
    pub on_error: OnError,
    pub asker: Option<Arc<dyn Asker>>,
    /// First Ctrl-C / SIGTERM.
    pub cancel: CancellationToken,
    /// Second Ctrl-C: abandon cleanup.
    pub abandon: CancellationToken,
}

/// The outcome of one build.
pub struct BuildOutcome {
    pub name: String,
    pub result: Result<Vec<Arc<dyn Artifact>>, BuildError>,
    pub duration: Duration,
    /// Resources kiln created and could not (or was told not to) remove.
    pub leftovers: Vec<String>,
}

/// Run every build; never panics on a build's failure.
pub async fn run_builds(builds: Vec<PlannedBuild>, opts: &RunOptions) -> Vec<BuildOutcome> {
    let limit = if opts.parallel == 0 {
        builds.len().max(1)
    } else {
        opts.parallel
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut handles = Vec::new();
    for b in builds {
        // Take the slot before starting the task, as Packer does, so builds
        // start in template order when they have to wait for one.
        let permit = sem.clone().acquire_owned().await;
        let opts = opts.clone();
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            run_one(b, &opts).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(o) => out.push(o),
            Err(e) => out.push(BuildOutcome {
                name: "?".into(),
                result: Err(BuildError::msg(format!("build task panicked: {e}"))),
                duration: Duration::ZERO,
                leftovers: vec![],
            }),
        }
    }
    out
}

/// Human durations as Packer prints them ("1 minute 2 seconds").
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} milliseconds");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut parts = Vec::new();
    let unit = |n: u64, u: &str| format!("{n} {u}{}", if n == 1 { "" } else { "s" });
    if h > 0 {
        parts.push(unit(h, "hour"));
    }
    if m > 0 {
        parts.push(unit(m, "minute"));
    }
    if s > 0 || parts.is_empty() {
        if h == 0 && m == 0 {
            return format!("{:.3} seconds", d.as_secs_f64());
        }
        parts.push(unit(s, "second"));
    }
    parts.join(" ")
}

async fn run_one(b: PlannedBuild, opts: &RunOptions) -> BuildOutcome {
    let started = Instant::now();
    let ui = opts.output.build_ui(&b.name);
    let work_dir = match tempfile::Builder::new()
        .prefix(&format!("kiln-{}-", sanitize(&b.name)))
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            return BuildOutcome {
                name: b.name.clone(),
                result: Err(BuildError::msg(format!(
                    "creating a working directory in {}: {e}",
                    std::env::temp_dir().display()
                ))),
                duration: started.elapsed(),
                leftovers: vec![],
            }
        }
    };
    let work_dir_entry = format!("working directory {}", work_dir.path().display());
    let ctx = BuildCtx {
        ui: ui.clone(),
        cancel: opts.cancel.child_token(),
        abandon: opts.abandon.clone(),
        on_error: opts.on_error,
        asker: opts.asker.clone(),
        build_name: b.name.clone(),
        build_type: b.type_name.clone(),
        ledger: Ledger::default(),
        generated: Default::default(),
        work_dir: work_dir.path().to_path_buf(),
    };
    let work_dir_id = ctx.ledger.track(work_dir_entry);
    ui.machine(
        "ui",
        &["say", &format!("{} output will be in this color.", b.name)],
    );
    let hook = ProvisionHook {
        provisioners: &b.provisioners,
        error_cleanup: b.error_cleanup.as_ref(),
        interp: &b.interp,
        opts: &b.opts,
    };
    let result = match b.builder.run(&ctx, &hook).await {
        Ok(artifact) => run_post_processors(&b, &ctx, artifact).await,
        Err(e) => Err(e),
    };
    let duration = started.elapsed();
    match &result {
        Ok(_) => ui.say(&format!(
            "Build '{}' finished after {}.",
            b.name,
            human_duration(duration)
        )),
        Err(BuildError::Cancelled) => ui.error(&format!(
            "Build '{}' cancelled after {}.",
            b.name,
            human_duration(duration)
        )),
        Err(e) => ui.error(&format!(
            "Build '{}' errored after {}: {e}",
            b.name,
            human_duration(duration)
        )),
    }
    if ctx.ledger.keeping() || (result.is_err() && opts.on_error == OnError::Abort) {
        // Keep the working directory for debugging, as asked.
        let kept = work_dir.keep();
        ui.error(&format!("Working directory kept: {}", kept.display()));
    } else if opts.abandon.is_cancelled() {
        // Cleanup was abandoned: the directory stays, listed with the rest.
        let _ = work_dir.keep();
    } else {
        match work_dir.close() {
            Ok(()) => ctx.ledger.release(work_dir_id),
            Err(e) => ui.error(&format!("Removing the working directory: {e}")),
        }
    }
    let leftovers = ctx.ledger.live();
    BuildOutcome {
        name: b.name,
        result,
        duration,
        leftovers,
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs the provisioners of a build when its builder calls the hook.
struct ProvisionHook<'a> {
    provisioners: &'a [PlannedProvisioner],
    error_cleanup: Option<&'a PlannedProvisioner>,
    interp: &'a Context,
    opts: &'a PrepareOpts,
}

/// Re-decode a component with the builder's generated data, now known.
fn runtime_context(base: &Context, ctx: &BuildCtx) -> Context {
    let mut c = base.clone();
    c.generated = Some(Arc::new(ctx.generated()));
    c
}

#[async_trait]
impl Hook for ProvisionHook<'_> {
    async fn provision(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        for p in self.provisioners {
            self.run_provisioner(p, ctx, comm.as_ref()).await?;
        }
        Ok(())
    }

    async fn cleanup(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        let Some(p) = self.error_cleanup else {
            return Ok(());
        };
        if outcome != Outcome::Failed || ctx.cancel.is_cancelled() {
            return Ok(());
        }
        ctx.ui.say(&format!(
            "Running the error-cleanup-provisioner ({})...",
            p.def.type_name.value
        ));
        // It is part of the cleanup: a first Ctrl-C does not stop it, only
        // the second one (which abandons cleanup) does.
        let cleanup_ctx = BuildCtx {
            cancel: ctx.abandon.child_token(),
            ..ctx.clone()
        };
        self.run_provisioner(p, &cleanup_ctx, comm.as_ref())
            .await
            .map_err(|e| e.context("error-cleanup-provisioner failed"))
    }
}

impl ProvisionHook<'_> {
    /// One provisioner, with its `pause_before`, `max_retries` and
    /// `timeout`.
    async fn run_provisioner(
        &self,
        p: &PlannedProvisioner,
        ctx: &BuildCtx,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        if ctx.cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        let interp = runtime_context(self.interp, ctx);
        let mut diags = Diagnostics::default();
        let prov = {
            let mut d = component_decoder(
                &p.config,
                &interp,
                &mut diags,
                Kind::Provisioner,
                &p.def.type_name.value,
                None,
            );
            let prov = (p.factory)(&mut d, self.opts);
            d.finish();
            prov
        };
        let prov = match (prov, diags.is_empty()) {
            (Some(p), true) => p,
            _ => return Err(BuildError::msg(diags.to_string())),
        };
        let retries = p.max_retries;
        let mut left = retries;
        let mut last_err;
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            match self.attempt(p, prov.as_ref(), &interp, ctx, comm).await {
                Ok(()) => return Ok(()),
                Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
                Err(e) => last_err = e,
            }
            if ctx.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            if left == 0 {
                break;
            }
            ctx.ui.say(&format!(
                "Provisioner failed with {:?}, retrying with {left} trie(s) left",
                last_err.to_string()
            ));
            left -= 1;
        }
        if retries > 0 {
            ctx.ui.say("retry limit reached.");
        }
        Err(last_err.context(format!(
            "Error running {} provisioner",
            p.def.type_name.value
        )))
    }

    /// One attempt: `pause_before`, then the provisioner, within `timeout`.
    async fn attempt(
        &self,
        p: &PlannedProvisioner,
        prov: &dyn crate::component::Provisioner,
        interp: &Context,
        ctx: &BuildCtx,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        if let Some(pause) = p.def.pause_before.filter(|d| !d.is_zero()) {
            ctx.ui.say(&format!(
                "Pausing {} before the next provisioner...",
                go_duration(pause)
            ));
            ctx.sleep(pause).await?;
        }
        let attempt_ctx = BuildCtx {
            cancel: ctx.cancel.child_token(),
            ..ctx.clone()
        };
        let pctx = ProvisionCtx {
            build: &attempt_ctx,
            interp: interp.clone(),
        };
        let fut = prov.provision(&pctx, comm);
        let Some(t) = p.def.timeout.filter(|d| !d.is_zero()) else {
            return fut.await;
        };
        ctx.ui.say(&format!(
            "Setting a {} timeout for the next provisioner...",
            go_duration(t)
        ));
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => r,
            _ = tokio::time::sleep(t) => {
                ctx.ui.error("Cancelling provisioner after a timeout...");
                attempt_ctx.cancel.cancel();
                // Let it stop what it started (SIGTERM, then SIGKILL after
                // a grace period), but not forever.
                let grace = crate::local::TERMINATE_GRACE + Duration::from_secs(2);
                let _ = tokio::time::timeout(grace, &mut fut).await;
                Err(BuildError::msg(format!(
                    "{} provisioner timed out after {}",
                    p.def.type_name.value,
                    go_duration(t)
                )))
            }
        }
    }
}

/// Go-style duration text ("10s", "1m30s").
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// Packer's post-processor rules (core/build.go in 1.6.6): each chain
/// starts from the builder's artifact; a post-processor's `keep` decides
/// whether its input survives (the user's `keep_input_artifact` overrides
/// unless the post-processor forces keeping); the builder's artifact is
/// kept if any chain's first post-processor keeps it, or if there are no
/// post-processors at all; an error ends that chain only.
async fn run_post_processors(
    b: &PlannedBuild,
    ctx: &BuildCtx,
    artifact: Option<Arc<dyn Artifact>>,
) -> Result<Vec<Arc<dyn Artifact>>, BuildError> {
    let Some(builder_artifact) = artifact else {
        if !b.post_processors.is_empty() {
            ctx.ui
                .say("The builder produced no artifact: skipping post-processors.");
        }
        return Ok(vec![]);
    };
    let mut artifacts: Vec<Arc<dyn Artifact>> = Vec::new();
    let mut keep_original = b.post_processors.is_empty();
    let mut errors = Vec::new();
    'chains: for chain in &b.post_processors {
        let mut prior = builder_artifact.clone();
        for (i, pp) in chain.iter().enumerate() {
            if ctx.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let interp = runtime_context(&b.interp, ctx);
            let mut diags = Diagnostics::default();
            let proc_ = {
                let mut d = component_decoder(
                    &pp.def.config,
                    &interp,
                    &mut diags,
                    Kind::PostProcessor,
                    &pp.def.type_name.value,
                    None,
                );
                let p = (pp.factory)(&mut d, &b.opts);
                d.finish();
                p
            };
            let proc_ = match (proc_, diags.is_empty()) {
                (Some(p), true) => p,
                _ => {
                    errors.push(diags.to_string());
                    continue 'chains;
                }
            };
            let label = pp
                .def
                .name
                .as_ref()
                .map(|n| format!("{} ({})", pp.def.type_name.value, n.value))
                .unwrap_or_else(|| pp.def.type_name.value.clone());
            ctx.ui.say(&format!("Running post-processor: {label}"));
            let pctx = PostProcessCtx { build: ctx, interp };
            let out = match proc_.post_process(&pctx, prior.clone()).await {
                Ok(o) => o,
                Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
                Err(e) => {
                    errors.push(format!("Post-processor failed: {e}"));
                    continue 'chains;
                }
            };
            let mut keep = out.keep;
            if let Some(user) = pp.def.keep_input_artifact {
                if out.keep && !user && out.force_keep {
                    ctx.ui.say(&format!(
                        "The {} post-processor keeps its input artifact to preserve the chain; keep_input_artifact=false is ignored.",
                        pp.def.type_name.value
                    ));
                } else {
                    keep = user;
                }
            }
            if i == 0 {
                keep_original |= keep;
            } else if keep {
                artifacts.push(prior.clone());
            } else if let Err(e) = prior.destroy().await {
                errors.push(format!("Failed cleaning up prior artifact: {e}"));
            }
            match out.artifact {
                Some(a) => prior = a,
                None => continue 'chains,
            }
        }
        artifacts.push(prior);
    }
    if keep_original {
        artifacts.insert(0, builder_artifact);
    } else if let Err(e) = builder_artifact.destroy().await {
        errors.push(format!("Failed cleaning up the builder's artifact: {e}"));
    }
    if errors.is_empty() {
        Ok(artifacts)
    } else {
        Err(BuildError::msg(errors.join("\n")))
    }
}

/// Build names of a template after interpolating them (for `inspect`).
pub fn build_names(template: &Template, vars: &Variables) -> Vec<String> {
    let mut base = Context::new(template.dir.clone());
    base.user_vars = Arc::new(vars.values.clone());
    let mut seen = BTreeSet::new();
    template
        .builders
        .iter()
        .filter_map(|b| kiln_template::interp::render(&b.name.value, &base).ok())
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// Print the final summary (`==> Builds finished...`) and machine-readable
/// artifact records.
pub fn print_summary(output: &Output, outcomes: &[BuildOutcome], wall: Duration) {
    output.raw("");
    output.say(&format!("Wait completed after {}", human_duration(wall)));
    let ok: Vec<&BuildOutcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    let failed: Vec<&BuildOutcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    if !failed.is_empty() {
        output.raw("");
        output.error("==> Some builds didn't complete successfully and had errors:");
        for o in &failed {
            if let Err(e) = &o.result {
                output.error(&format!("--> {}: {e}", o.name));
            }
        }
    }
    let any_artifacts = ok
        .iter()
        .any(|o| o.result.as_ref().is_ok_and(|a| !a.is_empty()));
    output.raw("");
    if any_artifacts {
        output.say("Builds finished. The artifacts of successful builds are:");
    } else {
        output.say("Builds finished but no artifacts were created.");
    }
    for o in ok {
        let Ok(arts) = &o.result else { continue };
        output.machine(&o.name, "artifact-count", &[&arts.len().to_string()]);
        for (i, a) in arts.iter().enumerate() {
            let i = i.to_string();
            output.machine(&o.name, "artifact", &[&i, "builder-id", a.builder_id()]);
            output.machine(&o.name, "artifact", &[&i, "id", &a.id()]);
            output.machine(&o.name, "artifact", &[&i, "string", &a.description()]);
            let files = a.files();
            output.machine(
                &o.name,
                "artifact",
                &[&i, "files-count", &files.len().to_string()],
            );
            for (j, f) in files.iter().enumerate() {
                output.machine(
                    &o.name,
                    "artifact",
                    &[&i, "file", &j.to_string(), &f.display().to_string()],
                );
            }
            output.machine(&o.name, "artifact", &[&i, "end"]);
            output.raw(&format!("--> {}: {}", o.name, a.description()));
        }
    }
    let leftovers: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.leftovers.iter().map(move |l| format!("{}: {l}", o.name)))
        .collect();
    if !leftovers.is_empty() {
        output.error(&format!(
            "==> These resources may have been left behind:\n  - {}",
            leftovers.join("\n  - ")
        ));
    }
}

/// A UI for tests.
pub fn test_ui(name: &str) -> (Output, Arc<dyn Ui>) {
    let out = Output::capturing(crate::ui::OutputConfig {
        mode: crate::ui::Mode::Human,
        color: false,
        timestamp: false,
    });
    let ui = out.build_ui(name);
    (out, ui)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "x"));
        assert!(glob_match("qemu-*", "qemu-a"));
        assert!(!glob_match("qemu-*", "null"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbb"));
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(
            human_duration(Duration::from_secs(62)),
            "1 minute 2 seconds"
        );
    }
}
