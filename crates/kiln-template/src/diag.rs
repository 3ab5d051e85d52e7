//! Diagnostics: every problem names `file:line:col`, shows the line, and
//! where it can, suggests the nearest valid name.
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A position in a source text. `line` and `col` are 1-based (col counts
/// characters, not bytes); `offset` is the byte offset.
///
/// `line == 0` means "no real position" (a synthetic node); such positions
/// are printed without `:line:col` and without an excerpt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
    pub offset: usize,
}

impl fmt::Display for Pos {
    /// `line:col`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl Pos {
    /// The position of byte `offset` in `text` (clamped to the text and to a
    /// character boundary).
    pub fn of_offset(text: &str, offset: usize) -> Pos {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() as u32 + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() as u32 + 1;
        Pos { line, col, offset }
    }
}

/// A named source text (a template, a var file, or `<command line>`).
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// One problem, at a position in a source when it has one.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub source: Option<Arc<Source>>,
    pub pos: Option<Pos>,
    pub message: String,
    /// e.g. "did you mean `scripts`?"
    pub help: Option<String>,
}

/// What makes two diagnostics the same for [`Diagnostics::dedup`]: source
/// path, offset, message, help.
type DedupKey = (
    Option<std::path::PathBuf>,
    Option<usize>,
    String,
    Option<String>,
);

/// A non-empty list of diagnostics; the error type of this crate.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostic {
    /// A diagnostic with no position (e.g. a file that cannot be read).
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            source: None,
            pos: None,
            message: message.into(),
            help: None,
        }
    }
    pub fn at(source: &Arc<Source>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            source: Some(source.clone()),
            pos: Some(pos),
            message: message.into(),
            help: None,
        }
    }
    pub fn with_help(self, help: impl Into<String>) -> Self {
        Diagnostic {
            help: Some(help.into()),
            ..self
        }
    }
    /// Adds "did you mean `x`?" when [`suggest`] finds a close candidate.
    pub fn with_suggestion<'a>(
        self,
        name: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        match suggest(name, candidates) {
            Some(s) => self.with_help(format!("did you mean `{s}`?")),
            None => self,
        }
    }
}

/// The nearest candidate to `name` by edit distance, if close enough to be a
/// plausible typo (used for "did you mean").
///
/// Scoring is Jaro-Winkler similarity (which favours a shared prefix, the
/// common case for config keys), accepted from 0.8 up; for very short names,
/// where Jaro-Winkler is noisy, a Levenshtein distance of 1 is also
/// accepted. Exact matches are never suggested (they are not typos), and
/// ties keep the first candidate so results are deterministic.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&'a str, f64)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let jw = strsim::jaro_winkler(name, c);
        let lev = strsim::levenshtein(name, c);
        let ok = jw >= 0.8 || (lev == 1 && name.chars().count().min(c.chars().count()) >= 1);
        if !ok {
            continue;
        }
        // Case-only differences are the best possible suggestion.
        let score = if c.eq_ignore_ascii_case(name) {
            2.0
        } else {
            jw
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

impl fmt::Display for Diagnostic {
    /// `path:line:col: message`, then the source line and a caret under the
    /// column, then `help: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pos = self.pos.filter(|p| p.line > 0);
        match (&self.source, pos) {
            (Some(src), Some(p)) => write!(f, "{}:{}:{}: ", src.path.display(), p.line, p.col)?,
            (Some(src), None) if !src.path.as_os_str().is_empty() => {
                write!(f, "{}: ", src.path.display())?
            }
            _ => {}
        }
        write!(f, "{}", self.message)?;
        if let (Some(src), Some(p)) = (&self.source, pos) {
            if let Some(line) = src.text.split('\n').nth(p.line as usize - 1) {
                let line = line.strip_suffix('\r').unwrap_or(line);
                let num = p.line.to_string();
                let gutter = " ".repeat(num.len());
                // Keep tabs in the caret line so the caret stays aligned.
                let pad: String = line
                    .chars()
                    .take(p.col.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n {gutter} |\n {num} | {line}\n {gutter} | {pad}^")?;
            }
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0)
    }
    /// Drop repeated diagnostics (same source, position, message and
    /// help), keeping the first of each in order. A component decoded once
    /// per build reports a problem of its configuration once, not once per
    /// build.
    pub fn dedup(&mut self) {
        let mut seen: Vec<DedupKey> = Vec::new();
        self.0.retain(|d| {
            let key = (
                d.source.as_ref().map(|s| s.path.clone()),
                d.pos.map(|p| p.offset),
                d.message.clone(),
                d.help.clone(),
            );
            if seen.contains(&key) {
                false
            } else {
                seen.push(key);
                true
            }
        });
    }
    /// Order by place: by source (in order of first appearance), then by
    /// offset; diagnostics without a position last, in their order.
    pub fn sort_by_position(&mut self) {
        let mut sources: Vec<std::path::PathBuf> = Vec::new();
        for d in &self.0 {
            if let Some(s) = &d.source {
                if !sources.contains(&s.path) {
                    sources.push(s.path.clone());
                }
            }
        }
        self.0.sort_by_key(|d| match (&d.source, d.pos) {
            (Some(s), Some(p)) => (
                0,
                sources.iter().position(|x| *x == s.path).unwrap_or(0),
                p.offset,
            ),
            _ => (1, 0, 0),
        });
    }
    /// `Err(self)` when non-empty.
    pub fn into_result(self) -> Result<(), Diagnostics> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["scripts", "script", "type", "inline", "execute_command"];
        assert_eq!(suggest("scirpts", keys), Some("scripts"));
        assert_eq!(suggest("typ", keys), Some("type"));
        assert_eq!(suggest("Type", keys), Some("type"));
        assert_eq!(suggest("execute_comand", keys), Some("execute_command"));
        assert_eq!(suggest("zzzzqqq", keys), None);
        assert_eq!(suggest("destination", keys), None);
        assert_eq!(suggest("x", Vec::<&str>::new()), None);
    }

    #[test]
    fn display_with_excerpt() {
        let src = Arc::new(Source {
            path: "t.json".into(),
            text: "{\n  \"scirpts\": 1\n}".into(),
        });
        let d = Diagnostic::at(
            &src,
            Pos {
                line: 2,
                col: 3,
                offset: 4,
            },
            "unknown key",
        )
        .with_help("did you mean `scripts`?");
        assert_eq!(
            d.to_string(),
            "t.json:2:3: unknown key\n   |\n 2 |   \"scirpts\": 1\n   |   ^\n  help: did you mean `scripts`?"
        );
        let ds = Diagnostics(vec![Diagnostic::new("a"), Diagnostic::new("b")]);
        assert_eq!(ds.to_string(), "a\n\nb");
    }

    #[test]
    fn dedup_keeps_first_of_each() {
        let src = Arc::new(Source {
            path: "t.json".into(),
            text: "{}".into(),
        });
        let at = |off: usize, m: &str| {
            Diagnostic::at(
                &src,
                Pos {
                    line: 1,
                    col: off as u32 + 1,
                    offset: off,
                },
                m,
            )
        };
        let mut ds = Diagnostics(vec![
            at(0, "a"),
            at(1, "a"),
            at(0, "a"),
            at(0, "b"),
            Diagnostic::new("c"),
            Diagnostic::new("c"),
            at(0, "a").with_help("h"),
        ]);
        ds.dedup();
        let got: Vec<String> =
            ds.0.iter()
                .map(|d| format!("{:?}:{}:{:?}", d.pos.map(|p| p.offset), d.message, d.help))
                .collect();
        assert_eq!(
            got,
            [
                "Some(0):a:None",
                "Some(1):a:None",
                "Some(0):b:None",
                "None:c:None",
                "Some(0):a:Some(\"h\")"
            ]
        );
    }

    #[test]
    fn sorted_by_position() {
        let a = Arc::new(Source {
            path: "a.json".into(),
            text: String::new(),
        });
        let b = Arc::new(Source {
            path: "b.json".into(),
            text: String::new(),
        });
        let at = |s: &Arc<Source>, off: usize, m: &str| {
            Diagnostic::at(
                s,
                Pos {
                    line: 1,
                    col: 1,
                    offset: off,
                },
                m,
            )
        };
        let mut ds = Diagnostics(vec![
            Diagnostic::new("loose 1"),
            at(&b, 5, "b5"),
            at(&a, 9, "a9"),
            at(&b, 1, "b1"),
            Diagnostic::new("loose 2"),
            at(&a, 2, "a2"),
        ]);
        ds.sort_by_position();
        let got: Vec<&str> = ds.0.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(got, ["b1", "b5", "a2", "a9", "loose 1", "loose 2"]);
    }

    #[test]
    fn pos_of_offset() {
        let p = Pos::of_offset("ab\ncé\nx", 6);
        assert_eq!((p.line, p.col, p.offset), (2, 3, 6));
        let p = Pos::of_offset("ab", 99);
        assert_eq!((p.line, p.col, p.offset), (1, 3, 2));
    }
}
