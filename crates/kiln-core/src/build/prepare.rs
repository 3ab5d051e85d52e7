//! Preparing a template into builds: every problem at once.

use super::{
    build_context, component_decoder, glob_match, Kind, PlannedBuild, PlannedPostProcessor,
    PlannedProvisioner,
};
use crate::component::{PrepareOpts, Registry};
use crate::unsupported::{WindowsMark, WINDOWS_PROVISIONERS};
use kiln_template::diag::suggest;
use kiln_template::template::{PostProcessorDef, ProvisionerDef, Spanned};
use kiln_template::{
    BuildKeys, Context, Decoder, Diagnostic, Diagnostics, KeyNotes, Node, Pos, Source, Template,
    Variables,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
/// Command-line choices that shape preparation.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// `-only`: build names (or `*` globs) to run.
    pub only: Vec<String>,
    /// `-except`: build names to skip; also post-processors, by `name`
    /// (which defaults to the type), with the rest of their chain.
    pub except: Vec<String>,
    pub force: bool,
    /// `-no-cache` (see [`PrepareOpts`]).
    pub no_cache: bool,
    /// `-cache-max-age` (see [`PrepareOpts`]).
    pub cache_max_age: Option<std::time::Duration>,
}

fn selected(name: &str, opts: &PrepareOptions) -> bool {
    if !opts.only.is_empty() && !opts.only.iter().any(|p| glob_match(p, name)) {
        return false;
    }
    !opts.except.iter().any(|p| glob_match(p, name))
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
    let popts = PrepareOpts {
        force: opts.force,
        no_cache: opts.no_cache,
        cache_max_age: opts.cache_max_age,
    };
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
