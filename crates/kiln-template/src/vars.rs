//! User variables: template defaults, `-var-file`, `-var`, sensitive ones.
//!
//! Resolution follows Packer 1.6.6's `Core.renderVarsRecursively`:
//! command-line values replace template defaults, then *every* value
//! (default or command-line) is rendered with `env` allowed and with
//! `user` referring to the other variables, in any order. Actions written
//! `{{.Something}}` (run-time context values) are left as written, as
//! Packer's render filter does. Packer loops up to 100 times until nothing
//! changes; kiln resolves references depth-first with memoisation, which
//! gives the same values, and reports cycles and references to undefined
//! variables precisely instead of "Failed to interpolate".
//!
//! As in Packer 1.6.6, setting a variable the template does not declare is
//! allowed (its value is available to `user`).
use crate::diag::{suggest, Diagnostic, Diagnostics, Source};
use crate::interp::{self, Context, Hooks};
use crate::json::{Node, Value};
use crate::template::Template;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// One command-line source of variable values, applied in command-line
/// order (later wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarSource {
    /// `-var name=value`
    Pair { name: String, value: String },
    /// `-var-file path.json` (a flat JSON object of strings)
    File(PathBuf),
}

/// Resolved variables.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    pub values: BTreeMap<String, String>,
    /// Names listed in `sensitive-variables`.
    pub sensitive: BTreeSet<String>,
}

impl Variables {
    /// The non-empty values of sensitive variables: every output path
    /// replaces these with `<sensitive>`.
    pub fn secrets(&self) -> Vec<String> {
        self.sensitive
            .iter()
            .filter_map(|n| self.values.get(n))
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    }
}

/// A value to resolve and where it came from (for positions).
struct RawVar {
    value: String,
    /// The JSON string it was read from (template default or var file).
    node: Option<Node>,
    /// "-var" etc., when not from a file.
    origin: &'static str,
}

enum State {
    InProgress,
    Done(String),
    Failed,
}

struct Resolver {
    raw: BTreeMap<String, RawVar>,
    ctx: Context,
    state: RefCell<BTreeMap<String, State>>,
    diags: RefCell<Diagnostics>,
}

impl Resolver {
    fn resolve(&self, name: &str, stack: &mut Vec<String>) -> Result<String, ()> {
        match self.state.borrow().get(name) {
            Some(State::Done(v)) => return Ok(v.clone()),
            Some(State::Failed) => return Err(()),
            _ => {}
        }
        let Some(raw) = self.raw.get(name) else {
            return Err(());
        };
        self.state
            .borrow_mut()
            .insert(name.to_string(), State::InProgress);
        stack.push(name.to_string());
        let dep_failed = Cell::new(false);
        let undefined: RefCell<Option<String>> = RefCell::new(None);
        let result = {
            let mut user = |dep: &str| -> Result<String, String> {
                if !self.raw.contains_key(dep) {
                    *undefined.borrow_mut() = Some(dep.to_string());
                    return Err(format!(
                        "variable `{dep}` is not defined (a variable used in another variable's value must be defined)"
                    ));
                }
                if let Some(State::InProgress) = self.state.borrow().get(dep) {
                    let start = stack.iter().position(|s| s == dep).unwrap_or(0);
                    let mut chain: Vec<String> =
                        stack[start..].iter().map(|s| format!("`{s}`")).collect();
                    chain.push(format!("`{dep}`"));
                    return Err(format!(
                        "variables refer to each other in a cycle: {}",
                        chain.join(" -> ")
                    ));
                }
                self.resolve(dep, stack).map_err(|_| {
                    dep_failed.set(true);
                    String::new()
                })
            };
            let mut hooks = Hooks {
                user: Some(&mut user),
                keep_field_actions: true,
            };
            interp::render_with(&raw.value, &self.ctx, &mut hooks)
        };
        stack.pop();
        match result {
            Ok(v) => {
                self.state
                    .borrow_mut()
                    .insert(name.to_string(), State::Done(v.clone()));
                Ok(v)
            }
            Err(e) => {
                self.state
                    .borrow_mut()
                    .insert(name.to_string(), State::Failed);
                // A failure further down the chain was reported there.
                if !dep_failed.get() {
                    let msg = format!("variable `{name}`: {}", e.message);
                    let mut d = match &raw.node {
                        Some(n) => Diagnostic::at(&n.source, n.string_pos(e.offset), msg),
                        None => Diagnostic::new(format!("{} {msg}", raw.origin)),
                    };
                    if let Some(dep) = undefined.borrow().as_deref() {
                        if let Some(s) = suggest(dep, self.raw.keys().map(String::as_str)) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                    }
                    self.diags.borrow_mut().push(d);
                }
                Err(())
            }
        }
    }
}

/// Read a `-var-file`: a flat JSON object of strings.
fn read_var_file(path: &PathBuf, out: &mut BTreeMap<String, RawVar>, diags: &mut Diagnostics) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::new(format!(
                "{}: cannot read variable file: {e}",
                path.display()
            )));
            return;
        }
    };
    let src = Arc::new(Source {
        path: path.clone(),
        text,
    });
    let root = match crate::json::parse(src) {
        Ok(r) => r,
        Err(d) => {
            diags.extend(d);
            return;
        }
    };
    let Some(entries) = root.as_object() else {
        diags.push(Diagnostic::at(
            &root.source,
            root.pos,
            format!(
                "a variable file must be a JSON object of strings, found {}",
                root.kind()
            ),
        ));
        return;
    };
    for (k, v) in entries {
        match &v.value {
            Value::String(s) => {
                out.insert(
                    k.name.clone(),
                    RawVar {
                        value: s.clone(),
                        node: Some(v.clone()),
                        origin: "-var-file",
                    },
                );
            }
            _ => {
                let mut d = Diagnostic::at(
                    &v.source,
                    v.pos,
                    format!("variable `{}` must be a string, found {}", k.name, v.kind()),
                );
                if let Value::Number(n) = &v.value {
                    d = d.with_help(format!("write it as a string: \"{n}\""));
                } else if let Value::Bool(b) = &v.value {
                    d = d.with_help(format!("write it as a string: \"{b}\""));
                }
                diags.push(d);
            }
        }
    }
}

/// Resolve the template's variables: defaults (rendered, `env` allowed,
/// referring to each other in any order), overridden by `sources` in
/// order; required (`null`) variables left unset are errors, all reported.
pub fn resolve(template: &Template, sources: &[VarSource]) -> Result<Variables, Diagnostics> {
    let (vars, diags) = resolve_partial(template, sources);
    diags.into_result()?;
    Ok(vars)
}

/// [`resolve`], returning the variables that did resolve even when others
/// did not, with every problem found. The CLI registers the sensitive
/// values among them before it prints the problems.
pub fn resolve_partial(template: &Template, sources: &[VarSource]) -> (Variables, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut cmdline: BTreeMap<String, RawVar> = BTreeMap::new();
    for s in sources {
        match s {
            VarSource::Pair { name, value } => {
                cmdline.insert(
                    name.clone(),
                    RawVar {
                        value: value.clone(),
                        node: None,
                        origin: "-var",
                    },
                );
            }
            VarSource::File(path) => read_var_file(path, &mut cmdline, &mut diags),
        }
    }
    let mut raw: BTreeMap<String, RawVar> = BTreeMap::new();
    for v in &template.variables {
        let name = &v.name.value;
        if cmdline.contains_key(name) {
            continue;
        }
        match &v.default {
            Some(d) => {
                raw.insert(
                    name.clone(),
                    RawVar {
                        value: d.clone(),
                        node: Some(Node {
                            value: Value::String(d.clone()),
                            pos: v.default_pos,
                            source: template.source.clone(),
                        }),
                        origin: "default",
                    },
                );
            }
            None => {
                diags.push(
                    Diagnostic::at(
                        &template.source,
                        v.name.pos,
                        format!("required variable not set: {name}"),
                    )
                    .with_help(format!(
                        "set it with `-var '{name}=...'` or in a `-var-file`"
                    )),
                );
                // As Packer: an unset required variable is "" meanwhile.
                raw.insert(
                    name.clone(),
                    RawVar {
                        value: String::new(),
                        node: None,
                        origin: "required",
                    },
                );
            }
        }
    }
    raw.extend(cmdline);
    let mut ctx = Context::new(template.dir.clone());
    ctx.allow_env = true;
    let resolver = Resolver {
        raw,
        ctx,
        state: RefCell::new(BTreeMap::new()),
        diags: RefCell::new(Diagnostics::default()),
    };
    let mut values = BTreeMap::new();
    let names: Vec<String> = resolver.raw.keys().cloned().collect();
    for name in names {
        let mut stack = Vec::new();
        if let Ok(v) = resolver.resolve(&name, &mut stack) {
            values.insert(name, v);
        }
    }
    diags.extend(resolver.diags.into_inner());
    let vars = Variables {
        values,
        sensitive: template
            .sensitive_variables
            .iter()
            .map(|s| s.value.clone())
            .collect(),
    };
    (vars, diags)
}

/// Values known to be sensitive before the template is parsed or its
/// variables resolved, so that no diagnostic of those stages can print
/// them: for each name listed in the template's `sensitive-variables`, its
/// default as written and every value given to it by `sources` (`-var`, and
/// `-var-file` files that are JSON objects). Best effort: when the template
/// is not valid JSON, nothing is known to be sensitive (its `-var` values
/// then appear only where kiln prints them, which a syntax error does not).
pub fn early_secrets(path: &std::path::Path, sources: &[VarSource]) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let src = Arc::new(Source {
        path: path.to_path_buf(),
        text,
    });
    early_secrets_in(src, sources)
}

/// [`early_secrets`] of a template already read (so the caller reads it
/// once for this and for parsing).
pub fn early_secrets_in(template: Arc<Source>, sources: &[VarSource]) -> Vec<String> {
    let Ok(root) = crate::json::parse(template) else {
        return Vec::new();
    };
    let names: BTreeSet<&str> = match root.get("sensitive-variables").map(|n| &n.value) {
        Some(Value::Array(items)) => items.iter().filter_map(Node::as_str).collect(),
        _ => BTreeSet::new(),
    };
    if names.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(entries) = root.get("variables").and_then(Node::as_object) {
        for (k, v) in entries {
            if let (true, Some(d)) = (names.contains(k.name.as_str()), v.as_str()) {
                out.push(d.to_string());
            }
        }
    }
    for s in sources {
        match s {
            VarSource::Pair { name, value } if names.contains(name.as_str()) => {
                out.push(value.clone())
            }
            VarSource::Pair { .. } => {}
            VarSource::File(f) => {
                let Ok(text) = std::fs::read_to_string(f) else {
                    continue;
                };
                let src = Arc::new(Source {
                    path: f.clone(),
                    text,
                });
                let Ok(root) = crate::json::parse(src) else {
                    continue;
                };
                for (k, v) in root.as_object().unwrap_or_default() {
                    if let (true, Some(val)) = (names.contains(k.name.as_str()), v.as_str()) {
                        out.push(val.to_string());
                    }
                }
            }
        }
    }
    out.retain(|v| !v.is_empty());
    out
}

/// Parse `name=value` as given to `-var` (the value may contain `=`).
pub fn parse_var_flag(s: &str) -> Result<VarSource, String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("-var {s:?}: missing variable name before `=`")),
        Some((name, value)) => Ok(VarSource::Pair {
            name: name.to_string(),
            value: value.to_string(),
        }),
        None => Err(format!("-var {s:?}: expected `name=value` (no `=` found)")),
    }
}
