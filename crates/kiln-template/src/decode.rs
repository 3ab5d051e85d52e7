//! Typed access to a component's configuration object, with Packer's weak
//! typing (`"true"` is a bool, `"22"` an int, `"a,b"` or `"a"` a list where
//! a list is wanted), interpolation of every string value, and an error for
//! every key that no one asked for, with the nearest valid key suggested.
//!
//! A component asks for each of its keys (present or not); [`Decoder::finish`]
//! then reports the keys it never asked for.
//!
//! The conversions are those of Packer 1.6.6's `config.Decode`: mapstructure
//! 1.2.3 with `WeaklyTypedInput` and the decode hooks
//! `StringToSliceHookFunc(",")` and `StringToTimeDurationHookFunc()`, run
//! *after* interpolation:
//! - string wanted: strings as is; numbers as Go prints a float64
//!   (`22`, `1.5`, `1e3` → `1000`); booleans as `1`/`0` (mapstructure's
//!   rule, surprising but Packer's).
//! - bool wanted: `strconv.ParseBool` (`1 t T TRUE true True` and the
//!   false forms), the empty string is false; numbers are `!= 0`.
//! - int wanted: `strconv.ParseInt(s, 0, 64)` (so `0x10`, `017` octal);
//!   JSON numbers are truncated toward zero; booleans are 1/0.
//! - list wanted: an array, or a string split on commas (`""` is the
//!   empty list), or any other scalar as a list of one.
//! - map wanted: an object, or an array of objects merged in order.
//! - `null` is the same as an absent key.
//!
//! One deliberate difference: a bare JSON number where a duration is wanted
//! means seconds (Packer would take it as nanoseconds, never what is meant).
//!
//! Keys that Packer's fixers rewrite (`iso_checksum_type`, `ssh_key_path`,
//! ...): given the template's [`KeyNotes`] (computed by `kiln-fix`),
//! [`Decoder::finish`] reports such a key with what it becomes and a
//! suggestion to run `kiln fix`: as an error where the component does not
//! ask for the key (Packer's "Deprecated configuration key"), as a warning
//! where it does, as help on an error already found in its value.
use crate::diag::{suggest, Diagnostic, Diagnostics, Pos, Source};
use crate::interp::{self, Context};
use crate::json::{Node, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// What `kiln fix` (Packer's fixers) would do to one key of a template:
/// given to decoders (see [`Decoder::fix_notes`]) so that a key a fixer
/// rewrites is reported at its position with what it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNote {
    /// Byte offset of the key (its opening quote) in the template.
    pub key_offset: usize,
    /// Byte range of the key's value in the template.
    pub value_span: Range<usize>,
    /// What the fixers do and what the key becomes, e.g. "`ssh_key_path`
    /// is now `ssh_private_key_file` (Packer's `sshkeypath` fixer): `kiln
    /// fix` writes `\"ssh_private_key_file\": \"key\"`".
    pub message: String,
}

/// The [`KeyNote`]s of one template, by key offset, and the advice to give
/// with each ("run `kiln fix t.json` ...").
#[derive(Debug, Clone, Default)]
pub struct KeyNotes {
    /// The template these offsets are in.
    pub path: PathBuf,
    pub by_key: BTreeMap<usize, KeyNote>,
    pub help: String,
}

impl KeyNotes {
    fn same_source(&self, source: &Source) -> bool {
        source.path == self.path
    }
    /// The note of the key written at `offset` of `source`.
    pub fn at_key(&self, source: &Source, offset: usize) -> Option<&KeyNote> {
        if !self.same_source(source) {
            return None;
        }
        self.by_key.get(&offset)
    }
    /// The note whose key is at `offset`, or whose value contains it.
    pub fn covering(&self, source: &Source, offset: usize) -> Option<&KeyNote> {
        if !self.same_source(source) {
            return None;
        }
        if let Some(n) = self.by_key.get(&offset) {
            return Some(n);
        }
        // Values nest: the innermost (last-starting) span that contains it.
        self.by_key
            .range(..offset)
            .rev()
            .map(|(_, n)| n)
            .find(|n| n.value_span.contains(&offset))
    }
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

pub struct Decoder<'a> {
    node: &'a Node,
    ctx: &'a Context,
    diags: &'a mut Diagnostics,
    /// Keys asked for (for unknown-key detection and suggestions).
    known: Vec<String>,
    /// Keys to interpolate lazily (left raw), as Packer's `Exclude` list.
    raw: Vec<String>,
    /// Keys accepted without decoding ([`Decoder::ignore`]).
    ignored: Vec<String>,
    /// How unknown-key messages name this object ("`shell` configuration").
    what: String,
    /// Warnings: problems that do not stop the component (Packer's
    /// `Prepare` warnings), see [`Decoder::warn`].
    warnings: Vec<Diagnostic>,
    /// What `kiln fix` would change in this object, see
    /// [`Decoder::fix_notes`].
    notes: Option<&'a KeyNotes>,
    /// How many diagnostics there were when this decoder started (those
    /// after are this object's).
    start: usize,
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` of a JSON number literal
/// (mapstructure's number-to-string conversion); `None` if out of range.
pub(crate) fn number_to_string(lit: &str) -> Option<String> {
    let f: f64 = lit.parse().ok()?;
    f.is_finite().then(|| format!("{f}"))
}

/// A JSON number as an int, as mapstructure converts a float64: truncated.
fn number_to_int(lit: &str) -> Option<i64> {
    if let Ok(i) = lit.parse::<i64>() {
        return Some(i);
    }
    let f: f64 = lit.parse().ok()?;
    (f.is_finite() && f.abs() < 9.2e18).then_some(f.trunc() as i64)
}

/// mapstructure's weak string conversion of a scalar (before
/// interpolation). `Err` carries the kind found.
pub(crate) fn weak_scalar_string(node: &Node) -> Result<Option<String>, String> {
    match &node.value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(if *b { "1" } else { "0" }.to_string())),
        Value::Number(n) => number_to_string(n)
            .map(Some)
            .ok_or_else(|| format!("number {n} (out of range)")),
        _ => Err(node.kind().to_string()),
    }
}

/// "found object", "found string \"abc\"", ...
fn found(node: &Node, rendered: Option<&str>) -> String {
    match (&node.value, rendered) {
        (_, Some(s)) => format!("found string {s:?}"),
        (Value::String(s), None) => format!("found string {s:?}"),
        (Value::Number(n), None) => format!("found number {n}"),
        (Value::Bool(b), None) => format!("found boolean {b}"),
        _ => format!("found {}", node.kind()),
    }
}

impl<'a> Decoder<'a> {
    /// `node` must be an object (otherwise an error is recorded and every
    /// getter returns `None`).
    pub fn new(node: &'a Node, ctx: &'a Context, diags: &'a mut Diagnostics) -> Self {
        let what = match node.get("type").and_then(Node::as_str) {
            Some(t) => format!("`{t}` configuration"),
            None => "this object".to_string(),
        };
        if node.as_object().is_none() {
            diags.push(Diagnostic::at(
                &node.source,
                node.pos,
                format!("expected an object, found {}", node.kind()),
            ));
        }
        let start = diags.0.len();
        Decoder {
            node,
            ctx,
            diags,
            known: Vec::new(),
            raw: Vec::new(),
            ignored: Vec::new(),
            what,
            warnings: Vec::new(),
            notes: None,
            start,
        }
    }
    /// What `kiln fix` would change in the template: a key a fixer
    /// rewrites is reported by [`Decoder::finish`] with what it becomes,
    /// instead of as an unknown key; a key the component accepts as it is
    /// gets a warning; an error already reported inside its value gets the
    /// note as its help. Nested objects inherit the notes.
    pub fn fix_notes(&mut self, notes: &'a KeyNotes) {
        self.notes = Some(notes);
    }
    /// How "unknown key" messages name this object, e.g. "`shell`
    /// provisioner" (default: "`<type>` configuration", or "this object").
    pub fn describe(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }
    /// Keys consumed elsewhere (e.g. `type`, `only`): accepted, not decoded.
    pub fn ignore(&mut self, keys: &[&str]) {
        self.ignored.extend(keys.iter().map(|k| k.to_string()));
    }
    /// Keys whose strings are left uninterpolated by every getter (as
    /// Packer's `InterpolateFilter.Exclude`); their syntax is still checked.
    pub fn raw_keys(&mut self, keys: &[&str]) {
        self.raw.extend(keys.iter().map(|k| k.to_string()));
    }
    pub fn ctx(&self) -> &Context {
        self.ctx
    }
    /// The object being decoded.
    pub fn object(&self) -> &'a Node {
        self.node
    }

    fn mark(&mut self, key: &str) {
        if !self.known.iter().any(|k| k == key) {
            self.known.push(key.to_string());
        }
    }

    /// The value of `key`, marking it known; `None` when absent or null.
    fn get(&mut self, key: &str) -> Option<&'a Node> {
        self.mark(key);
        let n = self.node.get(key)?;
        (!matches!(n.value, Value::Null)).then_some(n)
    }

    fn is_raw(&self, key: &str) -> bool {
        self.raw.iter().any(|k| k.eq_ignore_ascii_case(key))
    }

    /// Interpolate (or, when `raw`, only syntax-check) a string found at
    /// `node`. On error a diagnostic is recorded and `None` returned.
    fn interpolate(&mut self, node: &Node, s: String, label: &str, raw: bool) -> Option<String> {
        let res = if raw {
            interp::check_syntax(&s).map(|_| s)
        } else {
            interp::render(&s, self.ctx)
        };
        match res {
            Ok(v) => Some(v),
            Err(e) => {
                let pos = match &node.value {
                    Value::String(_) => node.string_pos(e.offset),
                    _ => node.pos,
                };
                self.diags.push(Diagnostic::at(
                    &node.source,
                    pos,
                    format!("`{label}`: {}", e.message),
                ));
                None
            }
        }
    }

    /// A scalar as a (rendered) string, with a type error otherwise.
    fn scalar_string(&mut self, node: &Node, label: &str, raw: bool, want: &str) -> Option<String> {
        match weak_scalar_string(node) {
            Ok(None) => None,
            Ok(Some(s)) => {
                if matches!(node.value, Value::String(_)) {
                    self.interpolate(node, s, label, raw)
                } else {
                    Some(s)
                }
            }
            Err(kind) => {
                self.push(Diagnostic::at(
                    &node.source,
                    node.pos,
                    format!("`{label}` must be {want}, found {kind}"),
                ));
                None
            }
        }
    }

    fn type_error(&mut self, node: &Node, label: &str, want: &str, rendered: Option<&str>) {
        let msg = format!("`{label}` must be {want}, {}", found(node, rendered));
        self.push(Diagnostic::at(&node.source, node.pos, msg));
    }

    /// An interpolated string. Numbers and bools are accepted and converted
    /// as Packer does (`22`, `1.5`; `true` is `1`, `false` is `0`).
    pub fn string(&mut self, key: &str) -> Option<String> {
        let n = self.get(key)?;
        let raw = self.is_raw(key);
        self.scalar_string(n, key, raw, "a string")
    }
    /// A string left uninterpolated, to render later with run-time context
    /// (e.g. `execute_command` with `.Path`). Its syntax is still checked.
    pub fn raw_string(&mut self, key: &str) -> Option<String> {
        let n = self.get(key)?;
        self.scalar_string(n, key, true, "a string")
    }

    fn bool_of(&mut self, n: &Node, label: &str) -> Option<bool> {
        match &n.value {
            Value::Bool(b) => Some(*b),
            Value::Number(lit) => {
                number_to_string(lit).map(|s| s.parse::<f64>().unwrap_or(0.0) != 0.0)
            }
            Value::String(s) => {
                let raw = self.is_raw(label);
                let r = self.interpolate(n, s.clone(), label, raw)?;
                match crate::go::parse_bool(&r) {
                    Some(b) => Some(b),
                    None if r.is_empty() => Some(false),
                    None => {
                        self.type_error(n, label, "a boolean (true or false)", Some(&r));
                        None
                    }
                }
            }
            _ => {
                self.type_error(n, label, "a boolean (true or false)", None);
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let n = self.get(key)?;
        self.bool_of(n, key)
    }

    fn int_of(&mut self, n: &Node, label: &str) -> Option<i64> {
        match &n.value {
            Value::Bool(b) => Some(*b as i64),
            Value::Number(lit) => {
                let v = number_to_int(lit);
                if v.is_none() {
                    self.type_error(n, label, "an integer in range", None);
                }
                v
            }
            Value::String(s) => {
                let raw = self.is_raw(label);
                let r = self.interpolate(n, s.clone(), label, raw)?;
                match crate::go::parse_int(&r) {
                    Ok(i) => Some(i),
                    Err(_) => {
                        self.type_error(n, label, "an integer", Some(&r));
                        None
                    }
                }
            }
            _ => {
                self.type_error(n, label, "an integer", None);
                None
            }
        }
    }

    pub fn int(&mut self, key: &str) -> Option<i64> {
        let n = self.get(key)?;
        self.int_of(n, key)
    }
    /// A non-negative integer (`strconv.ParseUint` syntax for strings).
    pub fn uint(&mut self, key: &str) -> Option<u64> {
        let n = self.get(key)?;
        if let Value::String(s) = &n.value {
            let raw = self.is_raw(key);
            let r = self.interpolate(n, s.clone(), key, raw)?;
            return match crate::go::parse_uint(&r) {
                Ok(u) => Some(u),
                Err(_) => {
                    self.type_error(n, key, "a non-negative integer", Some(&r));
                    None
                }
            };
        }
        let i = self.int_of(n, key)?;
        match u64::try_from(i) {
            Ok(u) => Some(u),
            Err(_) => {
                self.type_error(n, key, "a non-negative integer", None);
                None
            }
        }
    }
    /// A Go duration string ("1m30s", "500ms", "2h"), weakly: a bare number
    /// is seconds.
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        let n = self.get(key)?;
        self.duration_of(n, key)
    }

    fn duration_of(&mut self, n: &Node, label: &str) -> Option<Duration> {
        match &n.value {
            Value::Number(lit) => match lit.parse::<f64>() {
                Ok(f) if f.is_finite() && (0.0..1e15).contains(&f) => {
                    Some(Duration::from_secs_f64(f))
                }
                _ => {
                    self.type_error(n, label, "a non-negative duration", None);
                    None
                }
            },
            Value::String(s) => {
                let raw = self.is_raw(label);
                let r = self.interpolate(n, s.clone(), label, raw)?;
                match crate::go::parse_duration(&r) {
                    Ok((false, d)) => Some(d),
                    Ok((true, _)) => {
                        self.push(Diagnostic::at(
                            &n.source,
                            n.pos,
                            format!("`{label}` must not be a negative duration, found {r:?}"),
                        ));
                        None
                    }
                    Err(e) => {
                        self.push(
                            Diagnostic::at(&n.source, n.pos, format!("`{label}` must be a duration: {e}"))
                                .with_help("durations are written like \"90s\", \"1m30s\", \"500ms\" or \"2h\""),
                        );
                        None
                    }
                }
            }
            _ => {
                self.type_error(n, label, "a duration such as \"1m30s\"", None);
                None
            }
        }
    }

    /// The elements of a list-typed value, with mapstructure's weak rules;
    /// a string is split on commas (after interpolation unless raw).
    /// Returns (element node, its pre-rendered string when split).
    fn list_elems(
        &mut self,
        n: &'a Node,
        label: &str,
        raw: bool,
    ) -> Option<Vec<(&'a Node, Option<String>)>> {
        match &n.value {
            Value::Array(items) => Some(items.iter().map(|i| (i, None)).collect()),
            Value::Object(entries) if entries.is_empty() => Some(Vec::new()),
            Value::Object(_) => {
                self.type_error(n, label, "a list", None);
                None
            }
            Value::String(s) => {
                let r = self.interpolate(n, s.clone(), label, raw)?;
                if r.is_empty() {
                    return Some(Vec::new());
                }
                Some(r.split(',').map(|p| (n, Some(p.to_string()))).collect())
            }
            _ => Some(vec![(n, None)]),
        }
    }

    fn string_list_of(&mut self, n: &'a Node, label: &str, raw: bool) -> Option<Vec<String>> {
        let elems = self.list_elems(n, label, raw)?;
        let mut out = Vec::with_capacity(elems.len());
        let mut ok = true;
        for (i, (e, pre)) in elems.into_iter().enumerate() {
            if let Some(p) = pre {
                out.push(p);
                continue;
            }
            let l = format!("{label}[{i}]");
            if let Value::Null = e.value {
                out.push(String::new());
                continue;
            }
            match self.scalar_string(e, &l, raw, "a string") {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A list of interpolated strings; a single string is a list of one
    /// (split on commas, as Packer's decode hook does).
    pub fn string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let n = self.get(key)?;
        let raw = self.is_raw(key);
        self.string_list_of(n, key, raw)
    }
    /// A list of uninterpolated strings (e.g. `inline` commands rendered at
    /// run time).
    pub fn raw_string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let n = self.get(key)?;
        self.string_list_of(n, key, true)
    }
    /// A list of lists of strings (`qemuargs`).
    pub fn string_list_list(&mut self, key: &str) -> Option<Vec<Vec<String>>> {
        let n = self.get(key)?;
        let raw = self.is_raw(key);
        let elems = self.list_elems(n, key, raw)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, (e, pre)) in elems.into_iter().enumerate() {
            if let Some(p) = pre {
                out.push(vec![p]);
                continue;
            }
            let l = format!("{key}[{i}]");
            match self.string_list_of(e, &l, raw) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
    pub fn int_list(&mut self, key: &str) -> Option<Vec<i64>> {
        let n = self.get(key)?;
        let raw = self.is_raw(key);
        let elems = self.list_elems(n, key, raw)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, (e, pre)) in elems.into_iter().enumerate() {
            let l = format!("{key}[{i}]");
            let v = match pre {
                Some(p) => match crate::go::parse_int(&p) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        self.type_error(e, &l, "an integer", Some(&p));
                        None
                    }
                },
                None => self.int_of(e, &l),
            };
            match v {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
    /// An object of strings (values interpolated). An array of objects is
    /// merged in order, as mapstructure does.
    pub fn string_map(&mut self, key: &str) -> Option<BTreeMap<String, String>> {
        let n = self.get(key)?;
        let raw = self.is_raw(key);
        let parts: Vec<&Node> = match &n.value {
            Value::Object(_) => vec![n],
            Value::Array(items) if items.iter().all(|i| i.as_object().is_some()) => {
                items.iter().collect()
            }
            _ => {
                self.type_error(n, key, "an object of strings", None);
                return None;
            }
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for p in parts {
            for (k, v) in p.as_object().unwrap_or_default() {
                let l = format!("{key}.{}", k.name);
                if let Value::Null = v.value {
                    out.insert(k.name.clone(), String::new());
                    continue;
                }
                match self.scalar_string(v, &l, raw, "a string") {
                    Some(s) => {
                        out.insert(k.name.clone(), s);
                    }
                    None => ok = false,
                }
            }
        }
        ok.then_some(out)
    }

    fn child<T>(&mut self, n: &Node, what: String, f: impl FnOnce(&mut Decoder<'_>) -> T) -> T {
        let start = self.diags.0.len();
        let mut d = Decoder {
            node: n,
            ctx: self.ctx,
            diags: &mut *self.diags,
            known: Vec::new(),
            raw: Vec::new(),
            ignored: Vec::new(),
            what,
            warnings: Vec::new(),
            notes: self.notes,
            start,
        };
        let r = f(&mut d);
        let w = d.finish_with_warnings();
        self.warnings.extend(w);
        r
    }

    /// A nested object, decoded by `f` with its own unknown-key checks.
    pub fn nested<T>(&mut self, key: &str, f: impl FnOnce(&mut Decoder<'_>) -> T) -> Option<T> {
        let n = self.get(key)?;
        if n.as_object().is_none() {
            self.type_error(n, key, "an object", None);
            return None;
        }
        Some(self.child(n, format!("`{key}`"), f))
    }
    /// A list of objects, each decoded by `f`. A single object is a list of
    /// one.
    pub fn nested_list<T>(
        &mut self,
        key: &str,
        mut f: impl FnMut(&mut Decoder<'_>) -> T,
    ) -> Option<Vec<T>> {
        let n = self.get(key)?;
        let items: Vec<&Node> = match &n.value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![n],
            _ => {
                self.type_error(n, key, "a list of objects", None);
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if item.as_object().is_none() {
                self.type_error(item, &format!("{key}[{i}]"), "an object", None);
                continue;
            }
            out.push(self.child(item, format!("`{key}[{i}]`"), &mut f));
        }
        Some(out)
    }
    /// The raw node of a key (marks it known). `null` is returned as is.
    pub fn node(&mut self, key: &str) -> Option<&'a Node> {
        self.mark(key);
        self.node.get(key)
    }
    /// Where a key's value is (or the object itself if absent).
    pub fn pos(&self, key: &str) -> Pos {
        self.node.get(key).map_or(self.node.pos, |n| n.pos)
    }
    /// Record an error about a key's value (at its position).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let d = Diagnostic::at(&self.node.source, self.pos(key), message);
        self.diags.push(d);
    }
    /// Record an error about the object as a whole.
    pub fn error_here(&mut self, message: impl Into<String>) {
        let d = Diagnostic::at(&self.node.source, self.node.pos, message);
        self.diags.push(d);
    }
    /// Record "`key` must be specified" unless `value` is present.
    pub fn require<T>(&mut self, key: &str, value: &Option<T>) {
        self.mark(key);
        if value.is_none() {
            self.error_here(format!("`{key}` must be specified"));
        }
    }
    /// Push a diagnostic made elsewhere.
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d)
    }
    /// Record a warning about the object as a whole (Packer's prepare
    /// warnings, e.g. the file builder's "target will have no content").
    /// Warnings are not errors; [`Decoder::finish_with_warnings`] returns
    /// them.
    pub fn warn(&mut self, message: impl Into<String>) {
        let d = Diagnostic::at(&self.node.source, self.node.pos, message);
        self.warnings.push(d);
    }
    /// [`Decoder::finish`], returning the warnings recorded.
    pub fn finish_with_warnings(mut self) -> Vec<Diagnostic> {
        self.check_keys();
        std::mem::take(&mut self.warnings)
    }
    /// Report every key never asked for, suggesting the nearest known key.
    /// Keys starting with `packer_` are skipped, as Packer does (they are
    /// the ones it injects itself). A key that a fixer of `kiln fix`
    /// rewrites is reported with what it becomes (see
    /// [`Decoder::fix_notes`]). Warnings are dropped (see
    /// [`Decoder::finish_with_warnings`]).
    pub fn finish(mut self) {
        self.check_keys();
    }

    fn check_keys(&mut self) {
        let Some(entries) = self.node.as_object() else {
            return;
        };
        let candidates: Vec<&str> = self
            .known
            .iter()
            .chain(&self.ignored)
            .map(String::as_str)
            .collect();
        let source = &self.node.source;
        for (k, _) in entries {
            let name = k.name.as_str();
            let note = self
                .notes
                .filter(|_| k.pos.line > 0)
                .and_then(|n| n.at_key(source, k.pos.offset));
            let help = self.notes.map(|n| n.help.clone()).unwrap_or_default();
            if candidates.contains(&name) || name.starts_with("packer_") {
                let Some(note) = note else { continue };
                // Accepted as it is: an error already found in its value
                // gets the note as help; otherwise the note is a warning.
                let mut found = false;
                for d in &mut self.diags.0[self.start..] {
                    let inside = d.source.as_ref().is_some_and(|s| s.path == source.path)
                        && d.pos.is_some_and(|p| {
                            p.offset == note.key_offset || note.value_span.contains(&p.offset)
                        });
                    if inside {
                        found = true;
                        if d.help.is_none() {
                            d.help = Some(format!("{}; {help}", note.message));
                        }
                    }
                }
                if !found {
                    self.warnings
                        .push(Diagnostic::at(source, k.pos, note.message.clone()).with_help(help));
                }
                continue;
            }
            if let Some(note) = note {
                self.diags
                    .push(Diagnostic::at(source, k.pos, note.message.clone()).with_help(help));
                continue;
            }
            let mut d = Diagnostic::at(
                source,
                k.pos,
                format!("unknown key `{name}` in {}", self.what),
            );
            if let Some(s) = suggest(name, candidates.iter().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.diags.push(d);
        }
    }
}
