//! The root of a Packer legacy JSON template.
//!
//! Parsing follows Packer 1.6.6's `template.Parse` + `Template.Validate` +
//! the minimum-version check of `core.validate`, but reports every problem
//! at once, each at its position.
//!
//! Accepted root keys are Packer's: the seven documented ones, plus
//! `error-cleanup-provisioner` (a provisioner run when a build fails),
//! and the legacy `push` and `comments`, which Packer 1.6.6 still accepts
//! and ignores. Keys starting with `_` are comments and must be strings,
//! as in Packer.
//!
//! Weak typing inside builder/provisioner/post-processor definitions is
//! Packer's: `type`/`name` may be numbers, `only`/`except` may be a single
//! string, `max_retries` may be a string, `keep_input_artifact` may be
//! `"true"`. (Packer 1.6.6 decodes post-processor definitions strictly, so
//! it rejects `"keep_input_artifact": "true"` and a string `only`; kiln
//! accepts them: a superset, so every Packer template still parses.)
use crate::decode::weak_scalar_string;
use crate::diag::{suggest, Diagnostic, Diagnostics, Pos, Source};
use crate::interp::{self, Context, PACKER_COMPAT_VERSION};
use crate::json::{Key, Node, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub source: Arc<Source>,
    /// Absolute path of the template file.
    pub path: PathBuf,
    /// Absolute directory of the template file (`template_dir`).
    pub dir: PathBuf,
    pub description: Option<String>,
    pub min_packer_version: Option<String>,
    pub variables: Vec<VariableDef>,
    pub sensitive_variables: Vec<Spanned<String>>,
    pub builders: Vec<BuilderDef>,
    pub provisioners: Vec<ProvisionerDef>,
    /// Each inner list is a chain (a string or object at the top level is a
    /// chain of one).
    pub post_processors: Vec<Vec<PostProcessorDef>>,
    /// `error-cleanup-provisioner`: run (for each failed build) when a
    /// build errors.
    pub error_cleanup_provisioner: Option<ProvisionerDef>,
}

#[derive(Debug, Clone)]
pub struct VariableDef {
    pub name: Spanned<String>,
    /// `None` means required (`null` in the template).
    pub default: Option<String>,
    pub default_pos: Pos,
}

#[derive(Debug, Clone)]
pub struct BuilderDef {
    pub type_name: Spanned<String>,
    /// The raw (uninterpolated) name; defaults to the type.
    pub name: Spanned<String>,
    /// The whole object; decoders ignore `type` and `name`.
    pub config: Node,
}

#[derive(Debug, Clone)]
pub struct ProvisionerDef {
    pub type_name: Spanned<String>,
    pub only: Vec<Spanned<String>>,
    pub except: Vec<Spanned<String>>,
    /// `override`: build name -> object merged over `config` for that build.
    pub overrides: Vec<(Spanned<String>, Node)>,
    pub pause_before: Option<Duration>,
    pub max_retries: u32,
    /// `max_retries` written as a template (`"{{user `retries`}}"`): Packer
    /// renders it with the user variables when the build starts; see
    /// [`ProvisionerDef::resolved_max_retries`]. `max_retries` is 0 then.
    pub max_retries_template: Option<Spanned<String>>,
    pub timeout: Option<Duration>,
    /// The whole object; decoders ignore the keys above (see
    /// [`PROVISIONER_CORE_KEYS`]).
    pub config: Node,
}

#[derive(Debug, Clone)]
pub struct PostProcessorDef {
    pub type_name: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub keep_input_artifact: Option<bool>,
    pub only: Vec<Spanned<String>>,
    pub except: Vec<Spanned<String>>,
    /// The whole object (or `{"type": ...}` for the string form); decoders
    /// ignore the keys in [`POST_PROCESSOR_CORE_KEYS`].
    pub config: Node,
}

pub const BUILDER_CORE_KEYS: &[&str] = &["type", "name"];
pub const PROVISIONER_CORE_KEYS: &[&str] = &[
    "type",
    "only",
    "except",
    "override",
    "pause_before",
    "max_retries",
    "timeout",
];
pub const POST_PROCESSOR_CORE_KEYS: &[&str] =
    &["type", "name", "keep_input_artifact", "only", "except"];

/// The root keys Packer 1.6.6 accepts.
pub const ROOT_KEYS: &[&str] = &[
    "description",
    "min_packer_version",
    "variables",
    "sensitive-variables",
    "builders",
    "provisioners",
    "post-processors",
    "error-cleanup-provisioner",
    "push",
    "comments",
];

/// Read and parse a template file. Reports every problem found at once:
/// syntax errors, unknown or duplicate root keys, missing `type`, duplicate
/// builder names, `only`/`except` naming unknown builds, bad durations...
pub fn parse_file(path: &Path) -> Result<Template, Diagnostics> {
    let (t, diags) = parse_file_partial(path);
    diags.into_result()?;
    t.ok_or_else(|| Diagnostics::from(Diagnostic::new("the template could not be parsed")))
}

/// [`parse_file`], but with what could be made of a template that has
/// problems: see [`parse_partial`].
pub fn parse_file_partial(path: &Path) -> (Option<Template>, Diagnostics) {
    match read_source(path) {
        Ok(src) => parse_partial(src),
        Err(d) => (None, d),
    }
}

/// Read a template file as a [`Source`] (UTF-8 checked).
pub fn read_source(path: &Path) -> Result<Arc<Source>, Diagnostics> {
    let text = std::fs::read(path).map_err(|e| {
        Diagnostics::from(Diagnostic::new(format!(
            "{}: cannot read template: {e}",
            path.display()
        )))
    })?;
    let text = String::from_utf8(text).map_err(|e| {
        let src = Arc::new(Source {
            path: path.to_path_buf(),
            text: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        });
        let off = e.utf8_error().valid_up_to();
        Diagnostics::from(Diagnostic::at(
            &src,
            Pos::of_offset(&src.text, off),
            "the template is not valid UTF-8",
        ))
    })?;
    Ok(Arc::new(Source {
        path: path.to_path_buf(),
        text,
    }))
}

/// Parse a template from a source already read. `path`/`dir` are made
/// absolute against the current directory.
pub fn parse(source: Arc<Source>) -> Result<Template, Diagnostics> {
    let (t, diags) = parse_partial(source);
    diags.into_result()?;
    t.ok_or_else(|| Diagnostics::from(Diagnostic::new("the template could not be parsed")))
}

/// Parse a template and return every problem found, together with the
/// template made of the definitions that had none (`None` only when the
/// text is not a JSON object). The partial template is for reporting
/// further problems in the same run (its components' keys, types and
/// values): it must not be built when the diagnostics are not empty. A
/// variable whose default is malformed is kept with an empty default there,
/// so its uses are not reported again as undefined.
pub fn parse_partial(source: Arc<Source>) -> (Option<Template>, Diagnostics) {
    let root = match crate::json::parse(source.clone()) {
        Ok(r) => r,
        Err(d) => return (None, d),
    };
    let path = std::path::absolute(&source.path).unwrap_or_else(|_| source.path.clone());
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut p = TemplateParser {
        diags: Diagnostics::default(),
        any_builder_error: false,
    };
    let mut t = Template {
        source: source.clone(),
        path,
        dir,
        description: None,
        min_packer_version: None,
        variables: Vec::new(),
        sensitive_variables: Vec::new(),
        builders: Vec::new(),
        provisioners: Vec::new(),
        post_processors: Vec::new(),
        error_cleanup_provisioner: None,
    };
    let Some(entries) = root.as_object() else {
        p.err(
            &root,
            root.pos,
            format!("a template must be a JSON object, found {}", root.kind()),
        );
        return (None, p.diags);
    };
    let mut builders_key: Option<Pos> = None;
    let mut raw_provisioners: Vec<&Node> = Vec::new();
    let mut raw_post: Vec<&Node> = Vec::new();
    let mut cleanup: Option<&Node> = None;
    for (k, v) in entries {
        match k.name.as_str() {
            "description" => t.description = p.strict_string(v, "description"),
            "min_packer_version" => t.min_packer_version = p.strict_string(v, "min_packer_version"),
            "variables" => t.variables = p.variables(v),
            "sensitive-variables" => {
                if let Some(items) = p.strict_array(v, "sensitive-variables") {
                    for item in items {
                        if let Some(s) = item.as_str() {
                            t.sensitive_variables.push(Spanned {
                                value: s.to_string(),
                                pos: item.pos,
                            });
                        } else {
                            p.err(
                                item,
                                item.pos,
                                format!(
                                    "`sensitive-variables` must list strings, found {}",
                                    item.kind()
                                ),
                            );
                        }
                    }
                }
            }
            "builders" => {
                builders_key = Some(k.pos);
                if let Some(items) = p.strict_array(v, "builders") {
                    for (i, b) in items.iter().enumerate() {
                        if let Some(b) = p.builder(i + 1, b, &t.builders) {
                            t.builders.push(b);
                        }
                    }
                }
            }
            "provisioners" => {
                if let Some(items) = p.strict_array(v, "provisioners") {
                    raw_provisioners.extend(items);
                }
            }
            "post-processors" => {
                if let Some(items) = p.strict_array(v, "post-processors") {
                    raw_post.extend(items);
                }
            }
            "error-cleanup-provisioner" => cleanup = Some(v),
            "push" => {
                if !matches!(v.value, Value::Object(_) | Value::Null) {
                    p.err(
                        v,
                        v.pos,
                        format!("`push` must be an object, found {}", v.kind()),
                    );
                }
            }
            "comments" => p.comments(v),
            name if name.starts_with('_') => {
                if !matches!(v.value, Value::String(_)) {
                    p.err(
                        v,
                        v.pos,
                        format!(
                            "root-level comment `{name}` must be a string, found {}",
                            v.kind()
                        ),
                    );
                }
            }
            name => {
                let d = Diagnostic::at(
                    &source,
                    k.pos,
                    format!("unknown root key `{name}` in template"),
                );
                let d = match suggest(name, ROOT_KEYS.iter().copied()) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None => d.with_help(
                        "valid root keys are `description`, `min_packer_version`, `variables`, \
                         `sensitive-variables`, `builders`, `provisioners`, `post-processors`; \
                         keys starting with `_` are comments",
                    ),
                };
                p.diags.push(d);
            }
        }
    }
    let names: Vec<&str> = t.builders.iter().map(|b| b.name.value.as_str()).collect();
    for (i, node) in raw_provisioners.iter().enumerate() {
        let label = format!("provisioner {}", i + 1);
        if let Some(prov) = p.provisioner(&label, node, &names) {
            t.provisioners.push(prov);
        }
    }
    if let Some(node) = cleanup {
        if let Some(prov) = p.provisioner("error-cleanup-provisioner", node, &names) {
            t.error_cleanup_provisioner = Some(prov);
        }
    }
    for (i, node) in raw_post.iter().enumerate() {
        if let Some(chain) = p.post_chain(i + 1, node, &names) {
            t.post_processors.push(chain);
        }
    }
    if t.builders.is_empty() && !p.any_builder_error {
        let pos = builders_key.unwrap_or(root.pos);
        p.diags.push(Diagnostic::at(
            &source,
            pos,
            "at least one builder must be defined",
        ));
    }
    if let Some(v) = &t.min_packer_version {
        let node = root.get("min_packer_version").unwrap_or(&root);
        p.check_min_version(v, node);
    }
    (Some(t), p.diags)
}

struct TemplateParser {
    diags: Diagnostics,
    /// A builder definition was rejected (so "at least one builder" would
    /// be noise).
    any_builder_error: bool,
}

impl TemplateParser {
    fn err(&mut self, node: &Node, pos: Pos, msg: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::at(&node.source, pos, msg);
        self.diags.push(d.clone());
        d
    }

    fn strict_string(&mut self, v: &Node, key: &str) -> Option<String> {
        match &v.value {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            _ => {
                self.err(
                    v,
                    v.pos,
                    format!("`{key}` must be a string, found {}", v.kind()),
                );
                None
            }
        }
    }

    fn strict_array<'n>(&mut self, v: &'n Node, key: &str) -> Option<&'n [Node]> {
        match &v.value {
            Value::Array(items) => Some(items),
            Value::Null => None,
            _ => {
                self.err(
                    v,
                    v.pos,
                    format!("`{key}` must be an array, found {}", v.kind()),
                );
                None
            }
        }
    }

    fn variables(&mut self, v: &Node) -> Vec<VariableDef> {
        let mut out = Vec::new();
        let Some(entries) = v.as_object() else {
            if !matches!(v.value, Value::Null) {
                self.err(
                    v,
                    v.pos,
                    format!("`variables` must be an object, found {}", v.kind()),
                );
            }
            return out;
        };
        for (k, d) in entries {
            let default = match &d.value {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                _ => {
                    // Packer decodes defaults strictly as strings.
                    let d2 = Diagnostic::at(
                        &d.source,
                        d.pos,
                        format!(
                            "variable `{}`: the default must be a string (or null for a required variable), found {}",
                            k.name,
                            d.kind()
                        ),
                    );
                    let d2 = match &d.value {
                        Value::Number(n) => d2.with_help(format!("write it as a string: \"{n}\"")),
                        Value::Bool(b) => d2.with_help(format!("write it as a string: \"{b}\"")),
                        _ => d2,
                    };
                    self.diags.push(d2);
                    // Kept (empty) so later uses are not reported as
                    // undefined in the same run; the template is rejected.
                    Some(String::new())
                }
            };
            out.push(VariableDef {
                name: Spanned {
                    value: k.name.clone(),
                    pos: k.pos,
                },
                default,
                default_pos: d.pos,
            });
        }
        out
    }

    fn comments(&mut self, v: &Node) {
        let ok = match &v.value {
            Value::Null => true,
            Value::Array(items) => items.iter().all(|i| {
                i.as_object()
                    .is_some_and(|e| e.iter().all(|(_, v)| matches!(v.value, Value::String(_))))
            }),
            _ => false,
        };
        if !ok {
            self.err(v, v.pos, "`comments` must be a list of objects of strings");
        }
    }

    /// A weakly typed string field of a definition (`type`, `name`).
    fn weak_field(&mut self, obj: &Node, key: &str, label: &str) -> Option<Spanned<String>> {
        let v = obj.get(key)?;
        match weak_scalar_string(v) {
            Ok(Some(s)) => Some(Spanned {
                value: s,
                pos: v.pos,
            }),
            Ok(None) => None,
            Err(kind) => {
                self.err(
                    v,
                    v.pos,
                    format!("{label}: `{key}` must be a string, found {kind}"),
                );
                None
            }
        }
    }

    /// `only`/`except`: a list of strings, or a single string.
    fn name_list(&mut self, obj: &Node, key: &str, label: &str) -> Vec<Spanned<String>> {
        let Some(v) = obj.get(key) else {
            return Vec::new();
        };
        let items: Vec<&Node> = match &v.value {
            Value::Array(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![v],
        };
        let mut out = Vec::new();
        for item in items {
            match weak_scalar_string(item) {
                Ok(Some(s)) => out.push(Spanned {
                    value: s,
                    pos: item.pos,
                }),
                Ok(None) => {}
                Err(kind) => {
                    self.err(
                        item,
                        item.pos,
                        format!("{label}: `{key}` must list builder names, found {kind}"),
                    );
                }
            }
        }
        out
    }

    /// Check `only`/`except` against the builder names (as
    /// `OnlyExcept.Validate`).
    fn check_only_except(
        &mut self,
        obj: &Node,
        label: &str,
        only: &[Spanned<String>],
        except: &[Spanned<String>],
        names: &[&str],
    ) {
        if !only.is_empty() && !except.is_empty() {
            let pos = obj.get("except").map_or(obj.pos, |n| n.pos);
            self.err(
                obj,
                pos,
                format!("{label}: only one of `only` or `except` may be specified"),
            );
        }
        for (which, list) in [("only", only), ("except", except)] {
            for n in list {
                if !names.contains(&n.value.as_str()) {
                    let d = Diagnostic::at(
                        &obj.source,
                        n.pos,
                        format!(
                            "{label}: '{which}' specified builder `{}` not found",
                            n.value
                        ),
                    );
                    self.diags.push(with_builder_help(d, &n.value, names));
                }
            }
        }
    }

    fn duration_field(&mut self, obj: &Node, key: &str, label: &str) -> Option<Duration> {
        let v = obj.get(key)?;
        let bad = |kind: String| {
            format!(
                "{label}: `{key}` must be a duration such as \"30s\" or \"1m30s\", found {kind}"
            )
        };
        match &v.value {
            Value::Null => None,
            Value::String(s) => match crate::go::parse_duration(s) {
                Ok((false, d)) => Some(d),
                Ok((true, _)) => {
                    self.err(v, v.pos, format!("{label}: `{key}` must not be negative"));
                    None
                }
                Err(e) => {
                    self.err(v, v.pos, format!("{label}: `{key}`: {e}"));
                    None
                }
            },
            // A bare number is seconds (see `Decoder::duration`).
            Value::Number(n) => match n.parse::<f64>() {
                Ok(f) if f.is_finite() && (0.0..1e15).contains(&f) => {
                    Some(Duration::from_secs_f64(f))
                }
                _ => {
                    self.err(v, v.pos, bad(format!("number {n}")));
                    None
                }
            },
            _ => {
                self.err(v, v.pos, bad(v.kind().to_string()));
                None
            }
        }
    }

    fn builder(&mut self, i: usize, b: &Node, existing: &[BuilderDef]) -> Option<BuilderDef> {
        let label = format!("builder {i}");
        if b.as_object().is_none() {
            self.any_builder_error = true;
            self.err(
                b,
                b.pos,
                format!("{label}: must be an object, found {}", b.kind()),
            );
            return None;
        }
        let type_name = self.weak_field(b, "type", &label);
        let name = self.weak_field(b, "name", &label);
        let Some(type_name) = type_name.filter(|t| !t.value.is_empty()) else {
            self.any_builder_error = true;
            self.err(b, b.pos, format!("{label}: missing `type`"));
            return None;
        };
        let name = name
            .filter(|n| !n.value.is_empty())
            .unwrap_or_else(|| type_name.clone());
        if let Some(first) = existing.iter().find(|e| e.name.value == name.value) {
            self.any_builder_error = true;
            let d = Diagnostic::at(
                &b.source,
                name.pos,
                format!(
                    "{label}: a builder named `{}` already exists (first at {})",
                    name.value, first.name.pos
                ),
            )
            .with_help("give each builder a distinct `name`");
            self.diags.push(d);
            return None;
        }
        Some(BuilderDef {
            type_name,
            name,
            config: b.clone(),
        })
    }

    fn provisioner(&mut self, label: &str, node: &Node, names: &[&str]) -> Option<ProvisionerDef> {
        if node.as_object().is_none() {
            self.err(
                node,
                node.pos,
                format!("{label}: must be an object, found {}", node.kind()),
            );
            return None;
        }
        let type_name = self.weak_field(node, "type", label);
        let only = self.name_list(node, "only", label);
        let except = self.name_list(node, "except", label);
        self.check_only_except(node, label, &only, &except, names);
        let mut overrides = Vec::new();
        if let Some(o) = node.get("override") {
            match &o.value {
                Value::Object(entries) => {
                    for (k, v) in entries {
                        if !names.contains(&k.name.as_str()) {
                            let d = Diagnostic::at(
                                &o.source,
                                k.pos,
                                format!("{label}: override `{}` doesn't exist", k.name),
                            );
                            self.diags.push(with_builder_help(d, &k.name, names));
                        }
                        if v.as_object().is_none() {
                            self.err(
                                v,
                                v.pos,
                                format!(
                                    "{label}: override `{}` must be an object, found {}",
                                    k.name,
                                    v.kind()
                                ),
                            );
                            continue;
                        }
                        overrides.push((
                            Spanned {
                                value: k.name.clone(),
                                pos: k.pos,
                            },
                            v.clone(),
                        ));
                    }
                }
                Value::Null => {}
                _ => {
                    self.err(
                        o,
                        o.pos,
                        format!("{label}: `override` must be an object, found {}", o.kind()),
                    );
                }
            }
        }
        let pause_before = self.duration_field(node, "pause_before", label);
        let timeout = self.duration_field(node, "timeout", label);
        let mut max_retries = 0;
        let mut max_retries_template = None;
        if let Some(v) = node.get("max_retries") {
            match weak_scalar_string(v) {
                Ok(None) => {}
                Ok(Some(s)) if s.contains("{{") => {
                    if let Err(e) = interp::check_syntax(&s) {
                        self.err(
                            v,
                            v.string_pos(e.offset),
                            format!("{label}: `max_retries`: {}", e.message),
                        );
                    }
                    max_retries_template = Some(Spanned {
                        value: s,
                        pos: v.pos,
                    });
                }
                Ok(Some(s)) => match parse_retries(&s) {
                    Ok(n) => max_retries = n,
                    Err(m) => {
                        self.err(v, v.pos, format!("{label}: {m}"));
                    }
                },
                Err(kind) => {
                    self.err(
                        v,
                        v.pos,
                        format!("{label}: `max_retries` must be an integer, found {kind}"),
                    );
                }
            }
        }
        let Some(type_name) = type_name.filter(|t| !t.value.is_empty()) else {
            self.err(node, node.pos, format!("{label}: missing `type`"));
            return None;
        };
        Some(ProvisionerDef {
            type_name,
            only,
            except,
            overrides,
            pause_before,
            max_retries,
            max_retries_template,
            timeout,
            config: node.clone(),
        })
    }

    fn post_chain(
        &mut self,
        i: usize,
        node: &Node,
        names: &[&str],
    ) -> Option<Vec<PostProcessorDef>> {
        let configs: Vec<Node> = match &node.value {
            Value::String(_) => vec![string_form(node)],
            Value::Object(_) => vec![node.clone()],
            Value::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (j, item) in items.iter().enumerate() {
                    match &item.value {
                        Value::String(_) => out.push(string_form(item)),
                        Value::Object(_) => out.push(item.clone()),
                        Value::Array(_) => {
                            ok = false;
                            self.err(
                                item,
                                item.pos,
                                format!("post-processor {i}.{}: sequence not allowed to be nested in a sequence", j + 1),
                            );
                        }
                        _ => {
                            ok = false;
                            self.err(
                                item,
                                item.pos,
                                format!(
                                    "post-processor {i}.{}: unknown format: expected a type name or an object, found {}",
                                    j + 1,
                                    item.kind()
                                ),
                            );
                        }
                    }
                }
                if !ok {
                    return None;
                }
                out
            }
            _ => {
                self.err(
                    node,
                    node.pos,
                    format!(
                        "post-processor {i}: bad format: expected a type name, an object or a list, found {}",
                        node.kind()
                    ),
                );
                return None;
            }
        };
        let mut chain = Vec::new();
        for (j, c) in configs.into_iter().enumerate() {
            let label = format!("post-processor {i}.{}", j + 1);
            let type_name = self.weak_field(&c, "type", &label);
            let name = self
                .weak_field(&c, "name", &label)
                .filter(|n| !n.value.is_empty());
            let only = self.name_list(&c, "only", &label);
            let except = self.name_list(&c, "except", &label);
            self.check_only_except(&c, &label, &only, &except, names);
            let mut keep_input_artifact = None;
            if let Some(v) = c.get("keep_input_artifact") {
                keep_input_artifact = match &v.value {
                    Value::Null => None,
                    Value::Bool(b) => Some(*b),
                    Value::String(s) => match crate::go::parse_bool(s) {
                        Some(b) => Some(b),
                        None => {
                            self.err(v, v.pos, format!("{label}: `keep_input_artifact` must be true or false, found string {s:?}"));
                            None
                        }
                    },
                    _ => {
                        self.err(
                            v,
                            v.pos,
                            format!(
                                "{label}: `keep_input_artifact` must be true or false, found {}",
                                v.kind()
                            ),
                        );
                        None
                    }
                };
            }
            let Some(type_name) = type_name.filter(|t| !t.value.is_empty()) else {
                self.err(&c, c.pos, format!("{label}: type is required"));
                continue;
            };
            chain.push(PostProcessorDef {
                type_name,
                name,
                keep_input_artifact,
                only,
                except,
                config: c,
            });
        }
        Some(chain)
    }

    fn check_min_version(&mut self, v: &str, node: &Node) {
        let Some(min) = Version::parse(v) else {
            self.err(
                node,
                node.pos,
                format!("min_packer_version is invalid: Malformed version: {v}"),
            );
            return;
        };
        let ours = Version::parse(PACKER_COMPAT_VERSION).unwrap_or_default();
        if ours.cmp_to(&min) == std::cmp::Ordering::Less {
            self.err(
                node,
                node.pos,
                format!(
                    "This template requires Packer version {v} or higher; using {PACKER_COMPAT_VERSION}"
                ),
            );
        }
    }
}

/// Builder-name suggestion for `only`/`except`/`override`.
fn with_builder_help(d: Diagnostic, name: &str, names: &[&str]) -> Diagnostic {
    match suggest(name, names.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None if names.is_empty() => d,
        None => d.with_help(format!("the builders are: {}", names.join(", "))),
    }
}

/// `"manifest"` in post-processors is `{"type": "manifest"}`.
fn string_form(s: &Node) -> Node {
    Node {
        value: Value::Object(vec![(
            Key {
                name: "type".into(),
                pos: s.pos,
            },
            s.clone(),
        )]),
        pos: s.pos,
        source: s.source.clone(),
    }
}

/// `strconv.Atoi` of `max_retries`, non-negative.
fn parse_retries(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return digits
            .parse::<u32>()
            .map_err(|_| format!("`max_retries` is out of range: {s:?}"));
    }
    if s.strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("`max_retries` must not be negative, found {s:?}"));
    }
    Err(format!(
        "`max_retries` must be a valid integer, found {s:?}"
    ))
}

/// hashicorp/go-version's version syntax and ordering (numeric segments,
/// padded with zeros; a pre-release sorts before its release).
#[derive(Debug, Default)]
struct Version {
    segments: Vec<u64>,
    pre: String,
}

impl Version {
    fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let (s, meta) = match s.split_once('+') {
            Some((a, m)) => (a, Some(m)),
            None => (s, None),
        };
        let ok_ident = |x: &str| {
            !x.is_empty()
                && x.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '~')
                })
        };
        if meta.is_some_and(|m| !ok_ident(m)) {
            return None;
        }
        let core_len = s
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
            .map_or(s.len(), |(i, _)| i);
        let (core, rest) = s.split_at(core_len);
        // A trailing '.' belongs to neither part.
        if core.is_empty() || core.ends_with('.') || core.starts_with('.') {
            return None;
        }
        let segments: Option<Vec<u64>> = core.split('.').map(|p| p.parse().ok()).collect();
        let mut segments = segments?;
        let pre = if rest.is_empty() {
            String::new()
        } else {
            let pre = rest.strip_prefix('-').unwrap_or(rest);
            if !ok_ident(pre) {
                return None;
            }
            pre.to_string()
        };
        while segments.len() < 3 {
            segments.push(0);
        }
        Some(Version { segments, pre })
    }

    fn cmp_to(&self, other: &Version) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let n = self.segments.len().max(other.segments.len());
        for i in 0..n {
            let a = self.segments.get(i).copied().unwrap_or(0);
            let b = other.segments.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let (a, b): (Vec<&str>, Vec<&str>) = (
                    self.pre.split('.').collect(),
                    other.pre.split('.').collect(),
                );
                for i in 0..a.len().max(b.len()) {
                    let o = match (a.get(i), b.get(i)) {
                        (Some(x), Some(y)) => match (x.parse::<u64>(), y.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            _ => x.cmp(y),
                        },
                        (Some(_), None) => Ordering::Greater,
                        (None, Some(_)) => Ordering::Less,
                        (None, None) => Ordering::Equal,
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            }
        }
    }
}

impl ProvisionerDef {
    /// The configuration for a given build: `config` with that build's
    /// `override` object merged over it (override keys win; the merge is
    /// shallow, key by key).
    pub fn config_for(&self, build_name: &str) -> Node {
        let Some((_, over)) = self.overrides.iter().find(|(n, _)| n.value == build_name) else {
            return self.config.clone();
        };
        let (Some(base), Some(over_entries)) = (self.config.as_object(), over.as_object()) else {
            return self.config.clone();
        };
        let mut entries: Vec<(Key, Node)> = base.to_vec();
        for (k, v) in over_entries {
            match entries.iter_mut().find(|(bk, _)| bk.name == k.name) {
                Some(slot) => *slot = (k.clone(), v.clone()),
                None => entries.push((k.clone(), v.clone())),
            }
        }
        Node {
            value: Value::Object(entries),
            pos: self.config.pos,
            source: self.config.source.clone(),
        }
    }
    /// Whether this provisioner runs for the named build (`only`/`except`).
    pub fn applies_to(&self, build_name: &str) -> bool {
        applies(&self.only, &self.except, build_name)
    }
    /// `max_retries`, rendering [`ProvisionerDef::max_retries_template`]
    /// with `ctx` (the user variables) when it is set.
    pub fn resolved_max_retries(&self, ctx: &Context) -> Result<u32, Diagnostic> {
        let Some(t) = &self.max_retries_template else {
            return Ok(self.max_retries);
        };
        let node = self.config.get("max_retries").unwrap_or(&self.config);
        let rendered = interp::render(&t.value, ctx).map_err(|e| {
            Diagnostic::at(
                &node.source,
                node.string_pos(e.offset),
                format!("failed to interpolate `max_retries`: {}", e.message),
            )
        })?;
        parse_retries(&rendered).map_err(|m| Diagnostic::at(&node.source, t.pos, m))
    }
}

fn applies(only: &[Spanned<String>], except: &[Spanned<String>], build_name: &str) -> bool {
    if !only.is_empty() {
        return only.iter().any(|o| o.value == build_name);
    }
    !except.iter().any(|e| e.value == build_name)
}

impl PostProcessorDef {
    pub fn applies_to(&self, build_name: &str) -> bool {
        applies(&self.only, &self.except, build_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s: &str| Version::parse(s).unwrap();
        use std::cmp::Ordering::*;
        assert_eq!(v("1.6.6").cmp_to(&v("1.6")), Greater);
        assert_eq!(v("1.6.6").cmp_to(&v("v1.6.6")), Equal);
        assert_eq!(v("1.6.6").cmp_to(&v("1.7.0")), Less);
        assert_eq!(v("1.6.6").cmp_to(&v("1.6.6-beta")), Greater);
        assert_eq!(v("1.6.6").cmp_to(&v("1.6.6+meta")), Equal);
        assert_eq!(v("1.6.6").cmp_to(&v("1.6.6.1")), Less);
        assert!(Version::parse("one").is_none());
        assert!(Version::parse("1..2").is_none());
        assert!(Version::parse("").is_none());
        assert!(Version::parse("1.").is_none());
    }
}
