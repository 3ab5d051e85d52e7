//! Writing a template back as JSON text: keys in their order, every object
//! and list laid out one member per line as `packer fix` writes them, with
//! the indentation of the original file.
use kiln_template::json::{Node, Value};

/// One level of indentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indent(pub String);

impl Default for Indent {
    /// Packer's: two spaces.
    fn default() -> Self {
        Indent("  ".into())
    }
}

impl Indent {
    /// The indentation unit of a JSON text: the leading white space of its
    /// first indented line, when that is all spaces or all tabs; Packer's
    /// two spaces otherwise (a file on one line, mixed white space).
    pub fn detect(text: &str) -> Indent {
        for line in text.lines().skip(1) {
            let lead: String = line
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            if lead.is_empty() || lead.len() == line.len() {
                continue;
            }
            let uniform = lead.chars().all(|c| c == ' ') || lead.chars().all(|c| c == '\t');
            if uniform && lead.len() <= 8 {
                return Indent(lead);
            }
            break;
        }
        Indent::default()
    }
}

/// JSON text of `node`, ending with a newline.
pub fn to_text(node: &Node, indent: &Indent) -> String {
    let mut out = String::new();
    value(&mut out, node, indent, 0);
    out.push('\n');
    out
}

/// One line of JSON (for messages).
pub fn compact(node: &Node) -> String {
    let mut out = String::new();
    value_compact(&mut out, node);
    out
}

fn newline(out: &mut String, indent: &Indent, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str(&indent.0);
    }
}

fn value(out: &mut String, node: &Node, indent: &Indent, depth: usize) {
    match &node.value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                value(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push(']');
        }
        Value::Object(entries) if !entries.is_empty() => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                string(out, &k.name);
                out.push_str(": ");
                value(out, v, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push('}');
        }
        _ => value_compact(out, node),
    }
}

fn value_compact(out: &mut String, node: &Node) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // As written in the file (Packer re-prints it as a float64).
        Value::Number(n) => out.push_str(n),
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                value_compact(out, item);
            }
            out.push(']');
        }
        Value::Object(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(out, &k.name);
                out.push_str(": ");
                value_compact(out, v);
            }
            out.push('}');
        }
    }
}

/// A JSON string: quotes, backslashes and control characters escaped, and
/// U+2028/U+2029 (which JavaScript does not allow raw in strings), as Go
/// does; everything else as it is (Go also escapes `&`, `<`, `>`; Packer
/// turns `<` and `>` back, kiln leaves all three alone).
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indentation_of_the_file() {
        assert_eq!(Indent::detect("{\n    \"a\": 1\n}"), Indent("    ".into()));
        assert_eq!(Indent::detect("{\n\t\"a\": 1\n}"), Indent("\t".into()));
        assert_eq!(Indent::detect("{\"a\": 1}"), Indent::default());
        assert_eq!(Indent::detect("{\n\n  \"a\": 1\n}"), Indent("  ".into()));
        assert_eq!(Indent::detect("{\n \t\"a\": 1\n}"), Indent::default());
    }
}
