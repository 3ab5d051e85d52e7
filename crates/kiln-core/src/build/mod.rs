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
//!
//! The parts: [`prepare`](fn@prepare) (decoding a template into
//! [`PlannedBuild`]s), [`run_builds`] (running them, with the provisioner
//! hook and the post-processor chains), [`print_summary`], and the small
//! helpers they share: [`glob_match`] for `-only`/`-except`, and the
//! duration texts Packer prints ([`go_duration`], [`human_duration`]).

mod duration;
mod hook;
mod post_process;
mod prepare;
mod run;
mod summary;

/// `-only`/`-except` patterns: see [`crate::glob::star_match`].
pub use crate::glob::star_match as glob_match;
pub use duration::{go_duration, human_duration};
pub use prepare::{
    build_names, component_problems, component_problems_with_warnings, prepare,
    prepare_with_warnings, PrepareOptions,
};
pub use run::{run_builds, BuildOutcome, RunOptions};
pub use summary::print_summary;

use crate::component::{Builder, PostProcessorFactory, PrepareOpts, ProvisionerFactory};
use crate::context::BuildCtx;
use crate::parity::ComponentKind;
use kiln_template::template::{
    PostProcessorDef, ProvisionerDef, BUILDER_CORE_KEYS, POST_PROCESSOR_CORE_KEYS,
    PROVISIONER_CORE_KEYS,
};
use kiln_template::{
    Context, Decoder, Diagnostic, Diagnostics, KeyNotes, Node, Template, Variables,
};
use std::sync::Arc;

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

/// Re-decode a component with the builder's generated data, now known.
///
/// As in Packer 1.6.6, a common key the builder did not set (`Host` when
/// the communicator is `none`, say) renders as Go's `<no value>` rather
/// than failing the build; only interpolation sees that text, never the
/// environment of a script.
fn runtime_context(base: &Context, ctx: &BuildCtx) -> Context {
    let mut c = base.clone();
    let mut g = ctx.generated();
    for k in kiln_template::interp::COMMON_BUILD_KEYS {
        g.entry((*k).to_string())
            .or_insert_with(|| "<no value>".to_string());
    }
    c.generated = Some(Arc::new(g));
    c
}

/// The identifier of this run of kiln (`{{build `PackerRunUUID`}}`, the
/// manifest's `packer_run_uuid`): `PACKER_RUN_UUID` from the environment
/// when set (as Packer, which sets it for its children), else one random
/// UUID for the whole process.
pub fn run_uuid() -> String {
    static RUN_UUID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_UUID
        .get_or_init(|| {
            std::env::var("PACKER_RUN_UUID")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
        })
        .clone()
}

/// What every build's generated data holds before its builder runs,
/// Packer 1.6.6's defaults (`PopulateProvisionHookData`): the run's UUID,
/// and placeholders saying the builder did not provide an instance id or
/// an HTTP server. A builder overrides them with `set_generated`.
pub(crate) fn seed_generated(ctx: &BuildCtx) {
    ctx.set_generated("ID", "ERR_ID_NOT_IMPLEMENTED_BY_BUILDER");
    ctx.set_generated("PackerRunUUID", run_uuid());
    ctx.set_generated("PackerHTTPIP", "ERR_HTTP_IP_NOT_IMPLEMENTED_BY_BUILDER");
    ctx.set_generated("PackerHTTPPort", "ERR_HTTP_PORT_NOT_IMPLEMENTED_BY_BUILDER");
    ctx.set_generated("PackerHTTPAddr", "ERR_HTTP_ADDR_NOT_IMPLEMENTED_BY_BUILDER");
}
