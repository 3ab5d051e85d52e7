//! `boot_command` in a template: decoded uninterpolated (as Packer, which
//! renders it only when it types it), checked at validate time with every
//! problem at its `file:line:col`, and rendered at run time with
//! `{{ .HTTPIP }}`, `{{ .HTTPPort }}` and `{{ .Name }}`.
use crate::parse::{self, ParseError};
use crate::typist::{self, Step};
use kiln_template::{Context, Decoder, Diagnostic, Node, Pos, Value};
use std::ops::Range;
use std::time::Duration;

/// The strings of `boot_command`, as written (uninterpolated). Packer
/// joins them with nothing in between, renders the result, then parses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootCommand {
    pub parts: Vec<String>,
}

/// A problem found in the uninterpolated command, located in the string
/// of `boot_command` it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub error: ParseError,
    /// Which string of `boot_command` (0-based).
    pub part: usize,
    /// Byte offset of the problem in that string.
    pub offset: usize,
    /// 1-based line and column (in characters) in that string.
    pub line: u32,
    pub col: u32,
}

/// What the boot command's template may refer to at run time, besides
/// the template's own context (user variables, `build_name`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    /// `{{ .HTTPIP }}`: the host as the guest reaches it (`10.0.2.2` under
    /// QEMU's user networking).
    pub http_ip: String,
    /// `{{ .HTTPPort }}`: the `http_directory` server's port; 0 when there
    /// is no `http_directory` (as Packer).
    pub http_port: u16,
    /// `{{ .Name }}`: the machine's name (`vm_name`).
    pub name: String,
}

/// How many times a boot command is rendered at most while it keeps
/// changing (Packer has no bound).
const MAX_RENDERS: usize = 16;

/// The command could not be made into key presses at run time.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("boot_command: {0}")]
    Interp(#[from] kiln_template::interp::InterpError),
    /// The rendered text is malformed (only possible through what the
    /// template inserts: the uninterpolated text was checked at validate
    /// time). Positions are in the rendered text, which is not shown (it
    /// may hold passwords).
    #[error("boot_command, once rendered, cannot be typed: {}", describe(.0))]
    Parse(Vec<ParseError>),
}

fn describe(errs: &[ParseError]) -> String {
    errs.iter()
        .map(|e| format!("{} (character {})", e.kind, e.span.start + 1))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Set on the decoder when `boot_command` is unusable; its problems were
/// recorded in the decoder's diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

impl BootCommand {
    pub fn new(parts: Vec<String>) -> Self {
        BootCommand { parts }
    }
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(String::is_empty)
    }
    /// The strings joined, as Packer types them.
    pub fn joined(&self) -> String {
        self.parts.concat()
    }
    /// The string and the offset in it of a byte of [`BootCommand::joined`].
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let mut start = 0;
        for (i, p) in self.parts.iter().enumerate() {
            if offset < start + p.len() || i + 1 == self.parts.len() {
                return (i, offset - start);
            }
            start += p.len();
        }
        (0, offset)
    }

    /// Every problem of the uninterpolated command: unknown keys, unclosed
    /// `<`, malformed waits, characters a US keyboard cannot type. Template
    /// actions (`{{ ... }}`) are not looked into; an expression an action
    /// cuts (`<wait{{user `t`}}>`) is checked once rendered.
    pub fn check(&self) -> Vec<Located> {
        let text = self.joined();
        let (_, errs) = parse::scan(&text, &action_spans(&text));
        errs.into_iter()
            .map(|error| {
                let (part, offset) = self.locate(error.span.start);
                let pos = Pos::of_offset(&self.parts[part], offset);
                Located {
                    error,
                    part,
                    offset,
                    line: pos.line,
                    col: pos.col,
                }
            })
            .collect()
    }

    /// Render with the template's context and the run-time values (again
    /// and again until the text no longer changes, as Packer), then parse:
    /// the key events and waits to type.
    pub fn render(&self, ctx: &Context, values: &Values) -> Result<Vec<Step>, RenderError> {
        let ctx = ctx
            .with("HTTPIP", values.http_ip.clone())
            .with("HTTPPort", values.http_port.to_string())
            .with("Name", values.name.clone());
        // As Packer's `interpolate.Render`: again until the text stops
        // changing, so that actions inside a user variable's value are
        // rendered too (`"boot_command": "{{user `boot_command`}}"`).
        let mut text = self.joined();
        for _ in 0..MAX_RENDERS {
            let next = kiln_template::interp::render(&text, &ctx)?;
            if next == text {
                break;
            }
            text = next;
        }
        let cmds = parse::parse(&text).map_err(RenderError::Parse)?;
        Ok(typist::steps(&cmds))
    }
}

/// The byte ranges of the template actions (`{{ ... }}`) in `text`, with
/// quoted strings inside an action skipped (`{{ "}}" }}`). An action with
/// no end runs to the end of the text (the decoder reports it).
pub fn action_spans(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = text[i..].find("{{") {
        let start = i + p;
        let mut j = start + 2;
        let mut end = text.len();
        while j < b.len() {
            match b[j] {
                b'}' if b.get(j + 1) == Some(&b'}') => {
                    end = j + 2;
                    break;
                }
                q @ (b'"' | b'\'') => {
                    j += 1;
                    while j < b.len() && b[j] != q {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    j += 1;
                }
                b'`' => {
                    j += 1 + text[j + 1..].find('`').map_or(b.len(), |k| k + 1);
                }
                _ => j += 1,
            }
        }
        out.push(start..end.min(text.len()));
        i = end.min(text.len());
    }
    out
}

/// Decode `key` (`boot_command`) from a builder's configuration: the
/// strings uninterpolated (their template syntax checked), every problem
/// of the command recorded in the decoder at its `file:line:col`. An
/// absent or null key is the empty command.
///
/// A single string is split at commas, as Packer's decoder does for any
/// list; the commas are then not typed, which kiln warns about.
pub fn decode(d: &mut Decoder<'_>, key: &str) -> Result<BootCommand, Invalid> {
    let node = d.node(key);
    let Some(node) = node.filter(|n| !matches!(n.value, Value::Null)) else {
        return Ok(BootCommand::default());
    };
    let Some(parts) = d.raw_string_list(key) else {
        return Err(Invalid);
    };
    let bc = BootCommand::new(parts);
    if matches!(node.value, Value::String(_)) && bc.parts.len() > 1 {
        d.warn(format!(
            "`{key}` is a single string: Packer splits it at its {} comma(s), which are then not typed; write it as a list of strings to type them",
            bc.parts.len() - 1
        ));
    }
    let problems = bc.check();
    if problems.is_empty() {
        return Ok(bc);
    }
    for p in &problems {
        let pos = position(node, &bc, p);
        let mut diag = Diagnostic::at(&node.source, pos, format!("`{key}`: {}", p.error.kind));
        if let Some(h) = p.error.kind.help() {
            diag = diag.with_help(h);
        }
        d.push(diag);
    }
    Err(Invalid)
}

/// Where a problem is in the template file.
fn position(node: &Node, bc: &BootCommand, p: &Located) -> Pos {
    match &node.value {
        Value::Array(items) => items
            .get(p.part)
            .map_or(node.pos, |n| n.string_pos(p.offset)),
        // One string split at commas: the part's start in the string.
        Value::String(_) => {
            let before: usize = bc.parts[..p.part].iter().map(|s| s.len() + 1).sum();
            node.string_pos(before + p.offset)
        }
        _ => node.pos,
    }
}

/// Packer's `boot_wait`: unset or zero is 10 s, negative is none ("To set
/// boot_wait to 0s, use a negative number"). `parsed` is the key's value as
/// (negative?, magnitude), e.g. from [`kiln_template::parse_go_duration`].
pub fn boot_wait(parsed: Option<(bool, Duration)>) -> Duration {
    match parsed {
        None => Duration::from_secs(10),
        Some((true, _)) => Duration::ZERO,
        Some((false, d)) if d.is_zero() => Duration::from_secs(10),
        Some((false, d)) => d,
    }
}

/// A duration key that may be negative, as Packer reads it: a Go duration
/// string (`"5s"`, `"-1s"`), or a bare JSON number of seconds (kiln's rule
/// for every duration). `None` when absent, null or empty.
fn signed_duration(d: &mut Decoder<'_>, key: &str) -> Result<Option<(bool, Duration)>, Invalid> {
    let Some(node) = d.node(key).filter(|n| !matches!(n.value, Value::Null)) else {
        return Ok(None);
    };
    if let Value::Number(lit) = &node.value {
        return match lit.parse::<f64>() {
            Ok(f) if f.is_finite() && f.abs() < 1e15 => {
                Ok(Some((f < 0.0, Duration::from_secs_f64(f.abs()))))
            }
            _ => {
                d.error(key, format!("`{key}` must be a duration, found {lit}"));
                Err(Invalid)
            }
        };
    }
    let Some(s) = d.string(key) else {
        return Err(Invalid);
    };
    if s.is_empty() {
        return Ok(None);
    }
    match kiln_template::parse_go_duration(&s) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            d.push(
                Diagnostic::at(
                    &node.source,
                    node.pos,
                    format!("`{key}` must be a duration: {e}"),
                )
                .with_help("durations are written like \"5s\", \"1m30s\" or \"500ms\""),
            );
            Err(Invalid)
        }
    }
}

/// Decode `boot_wait` ([`boot_wait`]'s rule; a negative duration is
/// allowed, as in Packer).
pub fn decode_boot_wait(d: &mut Decoder<'_>, key: &str) -> Result<Duration, Invalid> {
    Ok(boot_wait(signed_duration(d, key)?))
}

/// Decode `boot_key_interval`: the pause after each key event, with
/// Packer's rule ([`typist::key_interval`]): the key when positive, else
/// `PACKER_KEY_INTERVAL` from kiln's environment, else 100 ms.
pub fn decode_key_interval(d: &mut Decoder<'_>, key: &str) -> Result<Duration, Invalid> {
    let v = signed_duration(d, key)?
        .filter(|(neg, _)| !neg)
        .map(|(_, d)| d);
    Ok(typist::key_interval(
        v,
        std::env::var(typist::KEY_INTERVAL_ENV).ok().as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_template::{Diagnostics, Source};
    use std::sync::Arc;

    fn node(text: &str) -> Node {
        kiln_template::json::parse(Arc::new(Source {
            path: "t.json".into(),
            text: text.into(),
        }))
        .unwrap()
    }

    fn decode_text(text: &str) -> (Result<BootCommand, Invalid>, Vec<String>) {
        let n = node(text);
        let ctx = Context::default();
        let mut diags = Diagnostics::default();
        let mut d = Decoder::new(&n, &ctx, &mut diags);
        let r = decode(&mut d, "boot_command");
        let warnings = d.finish_with_warnings();
        let mut out: Vec<String> = diags
            .0
            .iter()
            .map(|d| {
                let p = d.pos.unwrap();
                format!(
                    "{}:{}: {}{}",
                    p.line,
                    p.col,
                    d.message,
                    d.help
                        .as_ref()
                        .map(|h| format!(" [{h}]"))
                        .unwrap_or_default()
                )
            })
            .collect();
        out.extend(warnings.iter().map(|w| format!("warning: {}", w.message)));
        (r, out)
    }

    #[test]
    fn every_problem_at_its_file_line_col() {
        // Columns are in the file: the `\"` escapes shift them.
        let t = "{\"boot_command\": [\n  \"<esc><wait>\",\n  \"say \\\"hi\\\"<entr> x\",\n  \"<wait5S><enter\"\n]}";
        let (r, diags) = decode_text(t);
        assert_eq!(r, Err(Invalid));
        assert_eq!(
            diags,
            [
                "3:14: `boot_command`: unknown key `<entr>` [did you mean `<enter>`? Packer 1.6.6 would type these characters as they are]",
                "4:4: `boot_command`: `<wait5S>`: \"5S\" is not a number of seconds (without leading zeros) nor a duration [waits are `<wait>` (1 s), `<waitN>` (N seconds) or `<waitD>` with D a duration such as `300ms`, `1.5s` or `1m30s` (units ns, us, µs, ms, s, m, h, in lower case)]",
                "4:12: `boot_command`: `<enter` is not closed by `>` [add the closing `>`]",
            ]
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(&lines[2][13..19], "<entr>");
        assert_eq!(&lines[3][3..11], "<wait5S>");
        assert_eq!(&lines[3][11..17], "<enter");
    }

    #[test]
    fn template_actions_are_checked_once_rendered() {
        let t = r#"{"boot_command": ["<esc><wait>auto preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg hostname={{ .Name }} t={{user `t`}}<wait{{user `w`}}><enter>"]}"#;
        let (r, diags) = decode_text(t);
        assert_eq!(diags, Vec::<String>::new());
        let bc = r.unwrap();
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("t".to_string(), "X".to_string());
        vars.insert("w".to_string(), "2s".to_string());
        let ctx = Context {
            user_vars: Arc::new(vars),
            ..Context::default()
        };
        let values = Values {
            http_ip: "10.0.2.2".into(),
            http_port: 8123,
            name: "packer-deb".into(),
        };
        let steps = bc.render(&ctx, &values).unwrap();
        let typed: String = crate::typist::describe(&steps);
        assert_eq!(
            typed,
            "[esc][wait 1s]auto preseed/url=http://10.0.2.2:8123/preseed.cfg hostname=packer-deb t=X[wait 2s][ret]"
        );
        // A rendered value that breaks the command is a run-time error.
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("t".to_string(), "<entr>".to_string());
        vars.insert("w".to_string(), "2S".to_string());
        let ctx = Context {
            user_vars: Arc::new(vars),
            ..Context::default()
        };
        let e = bc.render(&ctx, &values).unwrap_err().to_string();
        assert!(
            e.contains("unknown key `<entr>`") && e.contains("`<wait2S>`"),
            "{e}"
        );
    }

    #[test]
    fn a_single_string_is_split_at_commas_as_packer() {
        let (r, diags) = decode_text(r#"{"boot_command": "<esc>a=1,2<entr>"}"#);
        assert_eq!(r, Err(Invalid));
        assert_eq!(diags.len(), 2, "{diags:?}");
        // The position accounts for the comma that split the string.
        assert!(
            diags[0].starts_with("1:29: `boot_command`: unknown key `<entr>`"),
            "{diags:?}"
        );
        assert!(diags[1].starts_with("warning: `boot_command` is a single string"));
        let (r, diags) = decode_text(r#"{"boot_command": "<esc>a=1,2<enter>"}"#);
        assert_eq!(r.unwrap().joined(), "<esc>a=12<enter>");
        assert_eq!(diags.len(), 1);
    }

    #[test]
    fn absent_null_and_wrong_types() {
        assert_eq!(decode_text("{}").0, Ok(BootCommand::default()));
        assert_eq!(
            decode_text(r#"{"boot_command": null}"#).0,
            Ok(BootCommand::default())
        );
        let (r, diags) = decode_text(r#"{"boot_command": [{"a": 1}]}"#);
        assert_eq!(r, Err(Invalid));
        assert_eq!(diags.len(), 1, "{diags:?}");
        let (r, diags) = decode_text(r#"{"boot_command": ["{{ .HTTPIP "]}"#);
        assert_eq!(r, Err(Invalid));
        assert_eq!(diags.len(), 1, "{diags:?}");
    }

    #[test]
    fn locate_and_action_spans() {
        let bc = BootCommand::new(vec!["<ent".into(), "".into(), "er>ab".into()]);
        // An expression may span strings, as in Packer.
        assert!(bc.check().is_empty());
        assert_eq!(bc.locate(0), (0, 0));
        assert_eq!(bc.locate(4), (2, 0));
        assert_eq!(bc.locate(8), (2, 4));
        let t = r#"a{{ "}}" }}b{{`x}}`}}c{{ .X "#;
        let spans = action_spans(t);
        let pieces: Vec<&str> = spans.iter().map(|r| &t[r.clone()]).collect();
        assert_eq!(pieces, [r#"{{ "}}" }}"#, "{{`x}}`}}", "{{ .X "]);
    }

    #[test]
    fn boot_wait_as_packer() {
        let s = Duration::from_secs;
        assert_eq!(boot_wait(None), s(10));
        assert_eq!(boot_wait(Some((false, s(0)))), s(10));
        assert_eq!(boot_wait(Some((true, s(1)))), s(0));
        assert_eq!(boot_wait(Some((false, s(3)))), s(3));
        let wait = |json: &str| {
            let n = node(json);
            let ctx = Context::default();
            let mut diags = Diagnostics::default();
            let mut d = Decoder::new(&n, &ctx, &mut diags);
            let w = decode_boot_wait(&mut d, "boot_wait");
            let k = decode_key_interval(&mut d, "boot_key_interval");
            d.finish();
            let msgs: Vec<String> = diags.0.iter().map(|d| d.message.clone()).collect();
            (w, k, msgs)
        };
        let ms = Duration::from_millis;
        assert_eq!(wait("{}"), (Ok(s(10)), Ok(ms(100)), vec![]));
        assert_eq!(
            wait(r#"{"boot_wait": "-1s", "boot_key_interval": "10ms"}"#),
            (Ok(s(0)), Ok(ms(10)), vec![])
        );
        assert_eq!(
            wait(r#"{"boot_wait": "0s", "boot_key_interval": "-5ms"}"#),
            (Ok(s(10)), Ok(ms(100)), vec![])
        );
        assert_eq!(
            wait(r#"{"boot_wait": 3, "boot_key_interval": ".5s"}"#),
            (Ok(s(3)), Ok(ms(500)), vec![])
        );
        let (w, _, msgs) = wait(r#"{"boot_wait": "5 seconds"}"#);
        assert_eq!(w, Err(Invalid));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].starts_with("`boot_wait` must be a duration"),
            "{msgs:?}"
        );
    }
}
