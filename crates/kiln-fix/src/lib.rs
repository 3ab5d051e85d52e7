//! `kiln fix`: Packer 1.6.6's template fixers.
//!
//! A template written for an older Packer uses keys that Packer 1.6.6 no
//! longer accepts (`iso_checksum_type` above all, `ssh_key_path`,
//! `ssh_disable_agent`, Amazon's renamed keys, ...). `packer fix` rewrites
//! them; so does this crate, with every fixer of Packer 1.6.6 ([`FIXERS`]),
//! run in Packer's order with Packer's rules (read from Packer's `fix/`
//! package and checked against `packer fix` in this crate's tests: for
//! each fixer a template it changes, both outputs parse to the same JSON
//! value).
//!
//! Where kiln differs on purpose:
//! - The template keeps its shape: keys stay in the order of the file, a
//!   renamed key takes the place of the old one, keys starting with `_`
//!   (comments) stay where they were, numbers are written as they were
//!   (`1.50` stays `1.50`). Packer re-sorts every object and re-prints
//!   numbers as Go floats.
//! - Indentation is the file's own (the leading white space of its first
//!   indented line, when it is all spaces or all tabs), else Packer's two
//!   spaces; the layout is Packer's (one member or element per line, `[]`
//!   and `{}` for empty ones). `&`, `<`, `>` stay as they are (Go writes
//!   `\u0026`), and the output ends with one newline (Packer's with two).
//! - Where Packer's fixer crashes (a builder without a string `type`, a
//!   non-string `elevated_user`, ...), kiln reports an error at the place.
//!
//! The same fixers tell `kiln validate` and `kiln build` what a key
//! becomes: [`key_notes`] runs them on a template and returns, for every
//! key a fixer rewrites, a note (what it becomes, which fixer) that the
//! configuration decoders report at the key's position, with a suggestion
//! to run `kiln fix` (see `kiln_template::decode::KeyNotes`).
mod fixers;
mod tree;
mod write;

pub use fixers::{FixerInfo, FIXERS};
pub use write::{compact, to_text, Indent};

use kiln_template::decode::{KeyNote, KeyNotes};
use kiln_template::json::{Node, Value};
use kiln_template::{Diagnostic, Diagnostics, Pos, Source};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a template could not be fixed.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// The file is not JSON, or not an object (positions in the message).
    #[error("{0}")]
    Parse(Diagnostics),
    /// A fixer met a shape it cannot work on (Packer's fails there too).
    #[error("{fixer}: {diag}")]
    Fixer {
        fixer: &'static str,
        diag: Diagnostic,
    },
}

/// One change a fixer made to a key of the original file.
#[derive(Debug, Clone)]
pub struct RawNote {
    pub fixer: &'static str,
    /// The key's name as written.
    pub key: String,
    /// Where the key and its value were in the file (a key made by an
    /// earlier fixer has the position of the key it replaced).
    pub key_pos: Pos,
    pub value_pos: Pos,
    /// The object the key is in (identifies it in the fixed tree).
    pub obj_pos: Pos,
    /// What happens, e.g. "`ssh_key_path` is now `ssh_private_key_file`".
    pub what: String,
    /// Keys of that object that hold the result.
    pub results: Vec<String>,
}

/// A fixed template.
#[derive(Debug, Clone)]
pub struct Fixed {
    pub root: Node,
    pub notes: Vec<RawNote>,
}

impl Fixed {
    /// Whether any fixer changed anything.
    pub fn changed(&self, original: &Node) -> bool {
        self.root.to_json() != original.to_json()
    }
}

/// Run every fixer on a parsed template, in Packer's order; the first
/// fixer that cannot work stops it, as `packer fix`.
pub fn fix(root: &Node) -> Result<Fixed, FixError> {
    run_all(root, false)
}

/// Like [`fix`], but a fixer that cannot work is skipped (its partial
/// edits undone) and the others still run: for notes on a template that
/// has other problems too.
pub fn fix_lenient(root: &Node) -> Fixed {
    match run_all(root, true) {
        Ok(f) => f,
        Err(_) => Fixed {
            root: root.clone(),
            notes: Vec::new(),
        },
    }
}

fn run_all(root: &Node, lenient: bool) -> Result<Fixed, FixError> {
    if root.as_object().is_none() {
        let d = Diagnostic::at(
            &root.source,
            root.pos,
            format!("a template must be a JSON object, found {}", root.kind()),
        );
        return Err(FixError::Parse(d.into()));
    }
    let mut tree = root.clone();
    let mut notes = Vec::new();
    for f in FIXERS {
        let before = (tree.clone(), notes.len());
        let mut run = fixers::Run {
            fixer: f.name,
            notes: &mut notes,
        };
        if let Err(diag) = (f.run)(&mut run, &mut tree) {
            if !lenient {
                return Err(FixError::Fixer {
                    fixer: f.name,
                    diag,
                });
            }
            tree = before.0;
            notes.truncate(before.1);
        }
    }
    Ok(Fixed { root: tree, notes })
}

/// Parse a template text and fix it. As `packer fix` (which reads the
/// template into a Go map), a duplicate key is no error: its last value
/// is kept; the duplicates are returned as warnings.
pub fn fix_source(source: Arc<Source>) -> Result<(Fixed, Diagnostics), FixError> {
    let (root, dups) = kiln_template::json::parse_last_wins(source).map_err(FixError::Parse)?;
    Ok((fix(&root)?, dups))
}

/// Byte offset just after the JSON value starting at `start` of `text`
/// (which is valid JSON: it was parsed).
fn value_end(text: &str, start: usize) -> usize {
    let b = text.as_bytes();
    let mut i = start;
    let mut depth = 0usize;
    loop {
        let Some(&c) = b.get(i) else {
            return text.len();
        };
        match c {
            b'"' => {
                i += 1;
                while let Some(&c) = b.get(i) {
                    i += 1;
                    match c {
                        b'\\' => i += 1,
                        b'"' => break,
                        _ => {}
                    }
                }
                if depth == 0 {
                    return i;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
}

/// Every object of a tree that comes from the file, by offset.
fn objects_by_offset<'a>(n: &'a Node, out: &mut BTreeMap<usize, &'a Node>) {
    match &n.value {
        Value::Object(entries) => {
            if n.has_position() {
                out.insert(n.pos.offset, n);
            }
            for (_, v) in entries {
                objects_by_offset(v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                objects_by_offset(v, out);
            }
        }
        _ => {}
    }
}

/// A short rendering of a value for messages.
fn short(n: &Node) -> String {
    let s = compact(n);
    if s.chars().count() > 72 {
        let cut: String = s.chars().take(69).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// The notes of a fixed template: one per key of the file that a fixer
/// rewrites, saying what it becomes.
pub fn notes_of(fixed: &Fixed, source: &Source, help: String) -> KeyNotes {
    let mut objects = BTreeMap::new();
    objects_by_offset(&fixed.root, &mut objects);
    let mut groups: Vec<(usize, Vec<&RawNote>)> = Vec::new();
    for n in fixed.notes.iter().filter(|n| n.key_pos.line > 0) {
        match groups.iter_mut().find(|(o, _)| *o == n.key_pos.offset) {
            Some((_, g)) => g.push(n),
            None => groups.push((n.key_pos.offset, vec![n])),
        }
    }
    let mut by_key = BTreeMap::new();
    for (offset, group) in groups {
        let first = group[0];
        let mut fixers: Vec<&str> = Vec::new();
        let mut results: Vec<String> = Vec::new();
        for n in &group {
            if !fixers.contains(&n.fixer) {
                fixers.push(n.fixer);
            }
            let Some(obj) = objects.get(&n.obj_pos.offset) else {
                continue;
            };
            for r in &n.results {
                if let Some(v) = obj.get(r) {
                    let shown = format!("\"{r}\": {}", short(v));
                    if !results.contains(&shown) {
                        results.push(shown);
                    }
                }
            }
        }
        let by = if fixers.len() == 1 {
            format!("Packer's `{}` fixer", fixers[0])
        } else {
            format!(
                "Packer's fixers {}",
                fixers
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let result = if results.is_empty() {
            "`kiln fix` removes it".to_string()
        } else {
            format!("`kiln fix` writes `{}`", results.join(", "))
        };
        let start = first.value_pos.offset;
        by_key.insert(
            offset,
            KeyNote {
                key_offset: offset,
                value_span: start..value_end(&source.text, start),
                message: format!("{} ({by}): {result}", first.what),
            },
        );
    }
    KeyNotes {
        path: source.path.clone(),
        by_key,
        help,
    }
}

/// The notes `kiln validate` and `kiln build` report for a template (see
/// [`notes_of`]); none when the text is not a JSON object.
pub fn key_notes(source: &Arc<Source>) -> KeyNotes {
    let help = format!(
        "`kiln fix {}` writes the template with every such key rewritten",
        source.path.display()
    );
    let Ok((root, _)) = kiln_template::json::parse_last_wins(source.clone()) else {
        return KeyNotes::default();
    };
    if root.as_object().is_none() {
        return KeyNotes::default();
    }
    let fixed = fix_lenient(&root);
    notes_of(&fixed, source, help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_ends() {
        let t = r#"{"a": "x\"y", "b": [1, {"c": "]"}], "d": 12.5e3, "e": true}"#;
        let at = |s: &str| t.find(s).unwrap();
        assert_eq!(&t[at("\"x")..value_end(t, at("\"x"))], r#""x\"y""#);
        assert_eq!(&t[at("[1")..value_end(t, at("[1"))], r#"[1, {"c": "]"}]"#);
        assert_eq!(&t[at("12.5")..value_end(t, at("12.5"))], "12.5e3");
        assert_eq!(&t[at("true")..value_end(t, at("true"))], "true");
    }
}
