//! A JSON parser that keeps positions and rejects duplicate keys.
//!
//! Hand-written (RFC 8259 grammar, as strict as Go's `encoding/json` except
//! that a leading UTF-8 byte-order mark is skipped) so that every key and
//! value keeps its `line:col`, which serde_json forgets. Nesting is limited
//! to [`MAX_DEPTH`] so that hostile input cannot overflow the stack.
use crate::diag::{Diagnostic, Diagnostics, Pos, Source};
use std::sync::{Arc, OnceLock};

/// Deepest nesting of arrays/objects accepted.
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number's literal text, as written (so "22" and 22.0 stay apart).
    Number(String),
    String(String),
    Array(Vec<Node>),
    /// Keys in source order; duplicates are a parse error.
    Object(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

/// A value and where it starts in its source.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    pub source: Arc<Source>,
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// Parse a whole document. Syntax errors carry the position and show the
/// line, as Packer does for JSON syntax errors.
///
/// A syntax error stops the parse (there is no sensible recovery); duplicate
/// keys do not, so every duplicate in the document is reported at once.
pub fn parse(source: Arc<Source>) -> Result<Node, Diagnostics> {
    parse_with(source, false)
}

/// Parse a whole document as Go's `encoding/json` decodes it into a map,
/// which is how `packer fix` reads a template: a duplicate key is no error,
/// its last value wins (in the place of the first). The duplicates are
/// returned beside the tree, to be reported as warnings.
pub fn parse_last_wins(source: Arc<Source>) -> Result<(Node, Diagnostics), Diagnostics> {
    let mut p = Parser::new(&source, true);
    let node = p.start()?;
    Ok((node, p.dups))
}

fn parse_with(source: Arc<Source>, last_wins: bool) -> Result<Node, Diagnostics> {
    let mut p = Parser::new(&source, last_wins);
    // (`last_wins` only changes which value is kept; duplicates are
    // errors here either way.)
    let node = p.start()?;
    if p.dups.is_empty() {
        Ok(node)
    } else {
        Err(p.dups)
    }
}

impl<'s> Parser<'s> {
    fn new(source: &'s Arc<Source>, last_wins: bool) -> Self {
        Parser {
            src: source,
            text: source.text.as_str(),
            bytes: source.text.as_bytes(),
            i: 0,
            line: 1,
            col: 1,
            dups: Diagnostics::default(),
            last_wins,
        }
    }

    /// The document, or every duplicate key and the syntax error.
    fn start(&mut self) -> Result<Node, Diagnostics> {
        if self.text.starts_with('\u{feff}') {
            self.i = 3;
        }
        match self.document() {
            Ok(node) => Ok(node),
            Err(e) => {
                let mut all = std::mem::take(&mut self.dups);
                all.push(e);
                Err(all)
            }
        }
    }
}

struct Parser<'s> {
    src: &'s Arc<Source>,
    text: &'s str,
    bytes: &'s [u8],
    i: usize,
    line: u32,
    col: u32,
    dups: Diagnostics,
    /// A duplicate key replaces the earlier value (Go's decoding into a
    /// map) instead of being dropped.
    last_wins: bool,
}

type PResult<T> = Result<T, Diagnostic>;

impl Parser<'_> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
            offset: self.i,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    /// Advance over one character (any UTF-8 length).
    fn bump(&mut self) -> Option<char> {
        let c = self.text[self.i..].chars().next()?;
        self.i += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, pos: Pos, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.src, pos, msg)
    }

    /// "unexpected X" for whatever is at the cursor.
    fn unexpected(&self, expected: &str) -> Diagnostic {
        match self.text[self.i..].chars().next() {
            None => self.err(
                self.pos(),
                format!("unexpected end of input, expected {expected}"),
            ),
            Some(c) => self.err(
                self.pos(),
                format!("unexpected character {}, expected {expected}", show_char(c)),
            ),
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.bump();
        }
    }

    fn document(&mut self) -> PResult<Node> {
        self.ws();
        if self.peek().is_none() {
            return Err(self.err(
                self.pos(),
                "unexpected end of input: the file is empty, expected a JSON value",
            ));
        }
        let v = self.value(0)?;
        self.ws();
        if self.peek().is_some() {
            return Err(self.unexpected("end of input after the top-level value"));
        }
        Ok(v)
    }

    fn node(&self, value: Value, pos: Pos) -> Node {
        Node {
            value,
            pos,
            source: self.src.clone(),
        }
    }

    fn value(&mut self, depth: usize) -> PResult<Node> {
        let pos = self.pos();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => {
                let s = self.string()?;
                Ok(self.node(Value::String(s), pos))
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = self.number()?;
                Ok(self.node(Value::Number(n), pos))
            }
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            _ => Err(self.unexpected("a JSON value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> PResult<Node> {
        let pos = self.pos();
        if self.text[self.i..].starts_with(word) {
            for _ in 0..word.len() {
                self.bump();
            }
            // `trueish` is not `true` followed by garbage we report later:
            // report it here, at the word.
            if let Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_') = self.peek() {
                return Err(self.err(pos, "invalid literal (expected `true`, `false` or `null`)"));
            }
            Ok(self.node(value, pos))
        } else {
            Err(self.err(
                pos,
                "invalid literal (expected `true`, `false` or `null`; strings need double quotes)",
            ))
        }
    }

    fn number(&mut self) -> PResult<String> {
        let start = self.i;
        let pos = self.pos();
        let bad = |p: &Self| p.err(pos, "invalid number");
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => {
                self.bump();
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err(pos, "invalid number: leading zeros are not allowed"));
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.bump();
                }
            }
            _ => return Err(bad(self)),
        }
        if self.peek() == Some(b'.') {
            self.bump();
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(bad(self));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.bump();
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.bump();
            if let Some(b'+' | b'-') = self.peek() {
                self.bump();
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(bad(self));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.bump();
            }
        }
        Ok(self.text[start..self.i].to_string())
    }

    fn hex4(&mut self) -> PResult<u32> {
        let pos = self.pos();
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.err(pos, "invalid \\u escape: expected 4 hex digits"))?;
            self.bump();
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn string(&mut self) -> PResult<String> {
        let start = self.pos();
        self.bump(); // opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.text[self.i..].chars().next() else {
                return Err(self.err(start, "unterminated string"));
            };
            match c {
                '"' => {
                    self.bump();
                    return Ok(out);
                }
                '\\' => {
                    let esc_pos = self.pos();
                    self.bump();
                    let Some(e) = self.bump() else {
                        return Err(self.err(start, "unterminated string"));
                    };
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let hi = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate must be followed by an
                                // escaped low one; otherwise, as Go does,
                                // it decodes to U+FFFD.
                                if self.text[self.i..].starts_with("\\u") {
                                    let save = (self.i, self.line, self.col);
                                    self.bump();
                                    self.bump();
                                    let lo = self.hex4()?;
                                    if (0xDC00..0xE000).contains(&lo) {
                                        char::from_u32(
                                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                                        )
                                    } else {
                                        (self.i, self.line, self.col) = save;
                                        None
                                    }
                                } else {
                                    None
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(ch.unwrap_or('\u{fffd}'));
                        }
                        other => {
                            return Err(self.err(
                                esc_pos,
                                format!("invalid escape sequence `\\{other}` in string"),
                            ))
                        }
                    }
                }
                c if (c as u32) < 0x20 => {
                    let msg = if c == '\n' {
                        "unterminated string (a newline in a string must be written `\\n`)"
                            .to_string()
                    } else {
                        format!("invalid control character {} in string", show_char(c))
                    };
                    return Err(self.err(self.pos(), msg));
                }
                c => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }

    fn too_deep(&self, depth: usize) -> PResult<()> {
        if depth >= MAX_DEPTH {
            Err(self.err(
                self.pos(),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> PResult<Node> {
        self.too_deep(depth)?;
        let pos = self.pos();
        self.bump();
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.bump();
            return Ok(self.node(Value::Array(items), pos));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                    self.ws();
                    if self.peek() == Some(b']') {
                        return Err(self.err(self.pos(), "trailing comma before `]`"));
                    }
                }
                Some(b']') => {
                    self.bump();
                    return Ok(self.node(Value::Array(items), pos));
                }
                _ => return Err(self.unexpected("`,` or `]` in array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> PResult<Node> {
        self.too_deep(depth)?;
        let pos = self.pos();
        self.bump();
        let mut entries: Vec<(Key, Node)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(self.node(Value::Object(entries), pos));
        }
        loop {
            self.ws();
            let kpos = self.pos();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a string key in object"));
            }
            let name = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected("`:` after object key"));
            }
            self.bump();
            self.ws();
            let v = self.value(depth + 1)?;
            if let Some(i) = entries.iter().position(|(k, _)| k.name == name) {
                let d = self.err(
                    kpos,
                    format!("duplicate key `{name}` (first at {})", entries[i].0.pos),
                );
                self.dups.push(d);
                if self.last_wins {
                    entries[i].1 = v;
                }
            } else {
                entries.push((Key { name, pos: kpos }, v));
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                    self.ws();
                    if self.peek() == Some(b'}') {
                        return Err(self.err(self.pos(), "trailing comma before `}`"));
                    }
                }
                Some(b'}') => {
                    self.bump();
                    return Ok(self.node(Value::Object(entries), pos));
                }
                _ => return Err(self.unexpected("`,` or `}` in object")),
            }
        }
    }
}

fn show_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

fn synthetic_source() -> Arc<Source> {
    static SRC: OnceLock<Arc<Source>> = OnceLock::new();
    SRC.get_or_init(|| {
        Arc::new(Source {
            path: "<generated>".into(),
            text: String::new(),
        })
    })
    .clone()
}

impl Node {
    /// A node not from any file (defaults, command-line values). Its
    /// position is the "no position" `Pos::default()` (line 0).
    pub fn synthetic(value: Value) -> Node {
        Node {
            value,
            pos: Pos::default(),
            source: synthetic_source(),
        }
    }
    pub fn as_object(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Object(entries) => Some(entries),
            _ => None,
        }
    }
    /// The value of `key` when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_object()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }
    /// The entry (key and value) of `key` when this is an object.
    pub fn entry(&self, key: &str) -> Option<&(Key, Node)> {
        self.as_object()?.iter().find(|(k, _)| k.name == key)
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
    /// Convert to serde_json (for manifest output, `inspect`, etc.).
    /// Numbers too large for serde_json's representation become floats.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => n
                .parse::<serde_json::Number>()
                .ok()
                .or_else(|| n.parse::<f64>().ok().and_then(serde_json::Number::from_f64))
                .map_or_else(|| J::String(n.clone()), J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Object(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
    /// Short type name for messages: "string", "number", "object", ...
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    /// Whether this node was read from a source text (not synthetic).
    pub fn has_position(&self) -> bool {
        self.pos.line > 0
    }
    /// The source position of byte `offset` of this string's *decoded*
    /// value (for pointing into a template string). Escapes are accounted
    /// for; for a synthetic node, or a node that is not a string literal,
    /// the node's own position is returned.
    pub fn string_pos(&self, offset: usize) -> Pos {
        let text = &self.source.text;
        if !self.has_position()
            || !matches!(self.value, Value::String(_))
            || text.as_bytes().get(self.pos.offset) != Some(&b'"')
        {
            return self.pos;
        }
        let mut pos = self.pos;
        let mut i = self.pos.offset + 1;
        pos.offset = i;
        pos.col += 1;
        let mut decoded = 0usize;
        let rest = text.get(i..).unwrap_or("");
        let mut chars = rest.chars().peekable();
        while decoded < offset {
            let Some(c) = chars.next() else { break };
            let (src_len, dec_len) = match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        let cp = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
                        let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                        (6, ch.len_utf8())
                    }
                    Some(_) => (2, 1),
                    None => break,
                },
                c => (c.len_utf8(), c.len_utf8()),
            };
            i += src_len;
            decoded += dec_len;
            pos.col += if c == '\\' { src_len as u32 } else { 1 };
        }
        pos.offset = i;
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Arc<Source> {
        Arc::new(Source {
            path: "t.json".into(),
            text: text.into(),
        })
    }

    #[test]
    fn duplicates_last_wins_as_go() {
        let text = r#"{"a": 1, "b": {"c": 2, "c": 3}, "a": 4}"#;
        let errs = parse(src(text)).unwrap_err();
        assert_eq!(errs.0.len(), 2);
        let (n, dups) = parse_last_wins(src(text)).unwrap();
        assert_eq!(dups.0.len(), 2);
        assert_eq!(n.to_json(), serde_json::json!({"a": 4, "b": {"c": 3}}));
        // The kept key stays in the place of the first.
        let keys: Vec<&str> = n
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn string_pos_maps_escapes() {
        let n = parse(src(r#"{"a": "x\ty{{z}}"}"#)).unwrap();
        let v = n.get("a").unwrap();
        // decoded "x\ty{{z}}": `{{` at byte 3; source col of `{` is 13.
        let p = v.string_pos(3);
        assert_eq!((p.line, p.col), (1, 12));
        assert_eq!(&n.source.text[p.offset..p.offset + 2], "{{");
    }
}
