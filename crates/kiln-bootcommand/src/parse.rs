//! The boot command grammar (Packer 1.6.6's `boot_command.pigeon`, read
//! for behaviour), with kiln's errors where Packer silently types a
//! malformed expression as literal characters.
//!
//! At a `<`, in Packer's order:
//! 1. `<wait>`, `<waitN>` (N whole seconds, no leading zero),
//!    `<waitD>` (D a Go duration: `300ms`, `1.5s`, `1m30s`; units `ns`,
//!    `us`, `µs`, `ms`, `s`, `m`, `h`). `wait` and the units are case
//!    sensitive; the wait must be positive.
//! 2. `<XOn>` / `<XOff>`: hold or release any single character X
//!    (`On`/`Off` in any case).
//! 3. `<name>`, `<nameOn>`, `<nameOff>`: a named key ([`SPECIALS`]), in
//!    any case (`<ENTER>`, `<pageup>`).
//! 4. Otherwise Packer types the `<` and what follows as characters. kiln
//!    does the same for text that cannot be meant as a key (`a < b`,
//!    `<<EOF`, `<>`, a `<` at the end), and reports an error for
//!    - `<word>` that is none of the above (`<entr>`, `<WAIT>`, `<wait5S>`,
//!      `<wait05>`): an unknown key or a malformed wait;
//!    - `<word` with no `>` where `word` is a key or a wait (`<enter` at
//!      the end, `<wait 5>`): an unclosed `<`.
//!
//! Every other character is typed as itself.
use crate::keys::{Special, SPECIALS};
use std::ops::Range;
use std::time::Duration;

/// What happens to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAction {
    /// Pressed and released.
    Press,
    /// Pressed and held (`<leftAltOn>`, `<aOn>`).
    On,
    /// Released (`<leftAltOff>`, `<aOff>`).
    Off,
}

/// One expression of a boot command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A character, typed with the US keyboard layout.
    Char { ch: char, action: KeyAction },
    /// A named key.
    Special { key: Special, action: KeyAction },
    /// A pause.
    Wait(Duration),
}

/// A command and the bytes of the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    pub command: Command,
    pub span: Range<usize>,
}

/// A problem in a boot command, and the bytes of the text it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ErrorKind,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unknown key `<{name}>`")]
    UnknownKey { name: String },
    #[error("`<{name}` is not closed by `>`")]
    Unclosed { name: String },
    #[error("`<{text}>`: {reason}")]
    BadWait { text: String, reason: String },
    #[error("cannot type {ch:?} (U+{:04X}): a US keyboard has no key for it", *.ch as u32)]
    Untypable { ch: char },
}

impl ErrorKind {
    /// A hint for the user, when there is one.
    pub fn help(&self) -> Option<String> {
        match self {
            ErrorKind::UnknownKey { name } => {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("wait") {
                    return Some(format!(
                        "`wait` is written in lower case: `<{}{}>`",
                        "wait",
                        &name[4..]
                    ));
                }
                let candidates = candidate_names();
                let mut h = match kiln_template::diag::suggest(
                    name,
                    candidates.iter().map(String::as_str),
                ) {
                    Some(s) => format!("did you mean `<{s}>`? "),
                    None => String::new(),
                };
                h.push_str("Packer 1.6.6 would type these characters as they are");
                Some(h)
            }
            ErrorKind::Unclosed { .. } => Some("add the closing `>`".into()),
            ErrorKind::BadWait { .. } => Some(
                "waits are `<wait>` (1 s), `<waitN>` (N seconds) or `<waitD>` with D a duration such as `300ms`, `1.5s` or `1m30s` (units ns, us, µs, ms, s, m, h, in lower case)".into(),
            ),
            ErrorKind::Untypable { ch } => Some(match ch {
                '\n' | '\r' => "a line break in the text is not a key press: write `<enter>`".into(),
                '\t' => "a tab character in the text is not a key press: write `<tab>`".into(),
                _ => "kiln types with US keyboard key codes: printable ASCII characters and the named keys only".into(),
            }),
        }
    }
}

/// The names an unknown key may be a typo of.
fn candidate_names() -> Vec<String> {
    let mut v: Vec<String> = vec!["wait".into()];
    for (n, _) in SPECIALS {
        v.push(n.to_string());
        v.push(format!("{n}On"));
        v.push(format!("{n}Off"));
    }
    v
}

/// Parse a boot command (the strings of `boot_command` joined, after
/// interpolation). Every problem is reported, in text order.
pub fn parse(text: &str) -> Result<Vec<Spanned>, Vec<ParseError>> {
    let (cmds, errs) = scan(text, &[]);
    if errs.is_empty() {
        Ok(cmds)
    } else {
        Err(errs)
    }
}

/// The scanner. `opaque` are byte ranges (sorted, disjoint) that are not
/// checked: template actions (`{{ .HTTPIP }}`) while validating the
/// uninterpolated text. Characters of an opaque range produce no command,
/// and a `<` whose expression an opaque range interrupts is left for the
/// run-time check. Untypable characters are reported too.
pub(crate) fn scan(text: &str, opaque: &[Range<usize>]) -> (Vec<Spanned>, Vec<ParseError>) {
    let mut cmds = Vec::new();
    let mut errs = Vec::new();
    let mut i = 0;
    let mut op = opaque.iter().peekable();
    while i < text.len() {
        while op.peek().is_some_and(|r| r.end <= i) {
            op.next();
        }
        if let Some(r) = op.peek() {
            if r.start <= i {
                i = r.end.max(i + 1);
                continue;
            }
        }
        let next_opaque = op.peek().map_or(usize::MAX, |r| r.start);
        let c = text[i..].chars().next().unwrap_or('\u{fffd}');
        if c != '<' {
            push_char(
                &mut cmds,
                &mut errs,
                c,
                KeyAction::Press,
                i..i + c.len_utf8(),
            );
            i += c.len_utf8();
            continue;
        }
        let rest = &text[i + 1..];
        let start = i;
        if let Some((len, r)) = wait(rest) {
            // A wait is ASCII up to its `>`: no action can start inside.
            let span = start..start + 1 + len;
            match r {
                Ok(d) => cmds.push(Spanned {
                    command: Command::Wait(d),
                    span: span.clone(),
                }),
                Err(reason) => errs.push(ParseError {
                    kind: ErrorKind::BadWait {
                        text: rest[..len - 1].to_string(),
                        reason,
                    },
                    span: span.clone(),
                }),
            }
            i = span.end;
            continue;
        }
        if let Some((ch, action, len)) = toggle(rest) {
            if start + 1 + len <= next_opaque {
                push_char(&mut cmds, &mut errs, ch, action, start..start + 1 + len);
                i = start + 1 + len;
                continue;
            }
        }
        if let Some((key, action, len)) = special(rest) {
            if start + 1 + len <= next_opaque {
                cmds.push(Spanned {
                    command: Command::Special { key, action },
                    span: start..start + 1 + len,
                });
                i = start + 1 + len;
                continue;
            }
        }
        // Not an expression: Packer types `<` as a character.
        let word_len = rest
            .char_indices()
            .find(|&(_, c)| !is_word_char(c))
            .map_or(rest.len(), |(j, _)| j);
        let word = &rest[..word_len];
        let word_end = start + 1 + word_len;
        let deferred = next_opaque <= word_end;
        if !deferred && !word.is_empty() {
            if rest[word_len..].starts_with('>') {
                let kind = if let Some(arg) = word.strip_prefix("wait") {
                    ErrorKind::BadWait {
                        text: word.to_string(),
                        reason: format!(
                            "{arg:?} is not a number of seconds (without leading zeros) nor a duration"
                        ),
                    }
                } else {
                    ErrorKind::UnknownKey {
                        name: word.to_string(),
                    }
                };
                errs.push(ParseError {
                    kind,
                    span: start..word_end + 1,
                });
                i = word_end + 1;
                continue;
            }
            if looks_like_expression(word) {
                errs.push(ParseError {
                    kind: ErrorKind::Unclosed {
                        name: word.to_string(),
                    },
                    span: start..word_end,
                });
                i = word_end;
                continue;
            }
        }
        push_char(
            &mut cmds,
            &mut errs,
            '<',
            KeyAction::Press,
            start..start + 1,
        );
        i = start + 1;
    }
    (cmds, errs)
}

fn push_char(
    cmds: &mut Vec<Spanned>,
    errs: &mut Vec<ParseError>,
    ch: char,
    action: KeyAction,
    span: Range<usize>,
) {
    if crate::keys::us_key(ch).is_none() {
        errs.push(ParseError {
            kind: ErrorKind::Untypable { ch },
            span,
        });
    } else {
        cmds.push(Spanned {
            command: Command::Char { ch, action },
            span,
        });
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | 'µ')
}

/// Whether an unclosed `<word` is meant as an expression: a key name
/// (with or without `On`/`Off`) or a wait, in any case.
fn looks_like_expression(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    if lower.starts_with("wait") {
        return true;
    }
    match Special::prefix_of(word) {
        Some((_, n)) => {
            let suffix = &lower[n..];
            suffix.is_empty() || suffix == "on" || suffix == "off"
        }
        None => false,
    }
}

/// `On`/`Off` (any case) at the start of `s`, and its length.
fn on_off(s: &str) -> Option<(KeyAction, usize)> {
    let starts =
        |p: &str| s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    if starts("on") {
        Some((KeyAction::On, 2))
    } else if starts("off") {
        Some((KeyAction::Off, 3))
    } else {
        None
    }
}

/// `<XOn>` / `<XOff>` after the `<`: (X, action, length up to and
/// including the `>`).
fn toggle(rest: &str) -> Option<(char, KeyAction, usize)> {
    let ch = rest.chars().next()?;
    let after = &rest[ch.len_utf8()..];
    let (action, n) = on_off(after)?;
    after[n..]
        .starts_with('>')
        .then_some((ch, action, ch.len_utf8() + n + 1))
}

/// `<name>`, `<nameOn>`, `<nameOff>` after the `<`.
fn special(rest: &str) -> Option<(Special, KeyAction, usize)> {
    let (key, n) = Special::prefix_of(rest)?;
    let after = &rest[n..];
    let (action, m) = on_off(after).unwrap_or((KeyAction::Press, 0));
    after[m..]
        .starts_with('>')
        .then_some((key, action, n + m + 1))
}

/// A wait after the `<`: the length up to and including its `>`, and the
/// duration or why it is not a valid one. `None` if the text is not a
/// wait in Packer's grammar.
fn wait(rest: &str) -> Option<(usize, Result<Duration, String>)> {
    let arg = rest.strip_prefix("wait")?;
    if arg.starts_with('>') {
        return Some((5, Ok(Duration::from_secs(1))));
    }
    // Packer's grammar tries a duration first, then an integer; whichever
    // matches must be followed by `>`.
    let (len, value) = if let Some(n) = match_duration(arg) {
        (n, go_duration(&arg[..n]))
    } else if let Some(n) = match_integer(arg) {
        let v = arg[..n]
            .parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .filter(|&ns| ns <= i64::MAX as u64)
            .map(|ns| (false, Duration::from_nanos(ns)))
            .ok_or_else(|| format!("{:?} seconds is too long", &arg[..n]));
        (n, v)
    } else {
        return None;
    };
    if !arg[len..].starts_with('>') {
        return None;
    }
    let r = match value {
        Ok((false, d)) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!(
            "the wait must be positive, found {:?}",
            &arg[..len]
        )),
        Err(e) => Err(e),
    };
    Some((4 + len + 1, r))
}

/// Packer's `Integer`: `0`, or a non-zero digit and digits.
fn match_integer(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    match b.first()? {
        b'0' => Some(1),
        b'1'..=b'9' => Some(1 + b[1..].iter().take_while(|c| c.is_ascii_digit()).count()),
        _ => None,
    }
}

/// Packer's `Number`: `-`? Integer (`.` digits)?.
fn match_number(s: &str) -> Option<usize> {
    let sign = usize::from(s.starts_with('-'));
    let n = match_integer(&s[sign..])?;
    let mut len = sign + n;
    if let Some(frac) = s[len..].strip_prefix('.') {
        let d = frac.bytes().take_while(u8::is_ascii_digit).count();
        if d > 0 {
            len += 1 + d;
        }
    }
    Some(len)
}

/// Packer's `TimeUnit`, in its order.
fn match_unit(s: &str) -> Option<usize> {
    ["ns", "us", "µs", "ms", "s", "m", "h"]
        .iter()
        .find(|u| s.starts_with(*u))
        .map(|u| u.len())
}

/// Packer's `Duration`: (Number TimeUnit)+.
fn match_duration(s: &str) -> Option<usize> {
    let mut len = 0;
    while let Some(n) = match_number(&s[len..]) {
        let Some(u) = match_unit(&s[len + n..]) else {
            break;
        };
        len += n + u;
    }
    (len > 0).then_some(len)
}

/// A whole string in the grammar's duration form (`1m30s`, `1.5s`, no
/// sign), as Go's `time.ParseDuration` reads it.
pub(crate) fn go_parse_duration(s: &str) -> Option<Duration> {
    (match_duration(s)? == s.len())
        .then(|| go_duration(s).ok())
        .flatten()
        .map(|(_, d)| d)
}

/// Go's `time.ParseDuration` of text that matched [`match_duration`]
/// (kiln's one implementation, in kiln-template).
fn go_duration(s: &str) -> Result<(bool, Duration), String> {
    kiln_template::parse_go_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_of(s: &str) -> Result<Duration, String> {
        match parse(s) {
            Ok(v) => match v.as_slice() {
                [Spanned {
                    command: Command::Wait(d),
                    ..
                }] => Ok(*d),
                other => Err(format!("not one wait: {other:?}")),
            },
            Err(e) => Err(e[0].to_string()),
        }
    }

    #[test]
    fn waits_as_packer() {
        let ms = Duration::from_millis;
        for (s, d) in [
            ("<wait>", ms(1000)),
            ("<wait5>", ms(5000)),
            ("<wait10>", ms(10_000)),
            ("<wait20>", ms(20_000)),
            ("<wait3s>", ms(3000)),
            ("<wait300ms>", ms(300)),
            ("<wait1.5s>", ms(1500)),
            ("<wait1m30s>", ms(90_000)),
            ("<wait10m>", ms(600_000)),
            ("<wait1h>", ms(3_600_000)),
            ("<wait4m2ns>", Duration::new(240, 2)),
            ("<wait7us>", Duration::from_micros(7)),
            ("<wait7µs>", Duration::from_micros(7)),
        ] {
            assert_eq!(wait_of(s), Ok(d), "{s}");
        }
    }

    #[test]
    fn bad_waits_are_errors_with_the_reason() {
        for (s, want) in [
            ("<wait-1m>", "must be positive"),
            ("<wait0>", "must be positive"),
            ("<wait0s>", "must be positive"),
            ("<wait1m-30s>", "unknown unit \"m-\" in duration \"1m-30s\""),
            ("<wait99999999999h>", "invalid duration"),
            ("<wait99999999999999999999>", "too long"),
            ("<wait9999999999999>", "too long"),
            ("<wait5S>", "not a number of seconds"),
            ("<wait05>", "not a number of seconds"),
            ("<wait.5s>", "not a number of seconds"),
            ("<wait5s5>", "not a number of seconds"),
        ] {
            let e = wait_of(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    fn chars(s: &str) -> String {
        parse(s)
            .unwrap()
            .iter()
            .map(|c| match &c.command {
                Command::Char { ch, action } => match action {
                    KeyAction::Press => ch.to_string(),
                    KeyAction::On => format!("[{ch}On]"),
                    KeyAction::Off => format!("[{ch}Off]"),
                },
                Command::Special { key, action } => format!("[{}{action:?}]", key.name()),
                Command::Wait(d) => format!("[wait {d:?}]"),
            })
            .collect()
    }

    /// Packer's own parser test (boot_command_ast_test.go, Test_parse),
    /// minus what kiln reports instead of typing: `界` (no key on a US
    /// keyboard) and `<foo>` (an unknown key).
    #[test]
    fn packers_parse_example() {
        let s = "<wait><wait20><wait3s><wait4m2ns>foo/bar > one <fon> b<fOff><f3><f12><spacebar><leftalt><rightshift><rightsuper>";
        assert_eq!(
            chars(s),
            "[wait 1s][wait 20s][wait 3s][wait 240.000000002s]foo/bar > one [fOn] b[fOff][f3Press][f12Press][spacebarPress][leftAltPress][rightShiftPress][rightSuperPress]"
        );
        let e = parse("one 界<foo>").unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, ErrorKind::Untypable { ch: '界' });
        assert_eq!(e[0].span, 4..7);
        assert_eq!(e[1].kind, ErrorKind::UnknownKey { name: "foo".into() });
        assert_eq!(e[1].span, 7..12);
    }

    /// Packer's Test_special: key names and On/Off in any case.
    #[test]
    fn case_rules() {
        assert_eq!(
            chars("<rightShift><rightshift><RIGHTSHIFT>"),
            "[rightShiftPress][rightShiftPress][rightShiftPress]"
        );
        assert_eq!(
            chars("<delon><delON><deLoN><DELON>"),
            "[delOn][delOn][delOn][delOn]"
        );
        assert_eq!(
            chars("<enteroff><enterOFF><eNtErOfF><ENTEROFF>"),
            "[enterOff][enterOff][enterOff][enterOff]"
        );
        assert_eq!(chars("<PageUp><pagedown>"), "[pageUpPress][pageDownPress]");
        // `wait` is lower case only; Packer types `<WAIT>` as characters,
        // kiln says so.
        let e = parse("<WAIT><Wait5>").unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(
            e[0].kind.help().unwrap().contains("`<wait>`"),
            "{:?}",
            e[0].kind.help()
        );
        assert!(e[1].kind.help().unwrap().contains("`<wait5>`"));
    }

    #[test]
    fn every_named_key_with_on_and_off() {
        for (name, key) in SPECIALS {
            for (suffix, action) in [
                ("", KeyAction::Press),
                ("On", KeyAction::On),
                ("Off", KeyAction::Off),
            ] {
                let s = format!("<{name}{suffix}>");
                assert_eq!(
                    parse(&s).unwrap(),
                    [Spanned {
                        command: Command::Special { key: *key, action },
                        span: 0..s.len()
                    }],
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn literal_angle_brackets_as_packer() {
        // Packer's Test_validation: a lone `<` is a character.
        assert_eq!(chars("<"), "<");
        assert_eq!(chars("a < b"), "a < b");
        assert_eq!(chars("cat <<EOF"), "cat <<EOF");
        assert_eq!(chars("<>"), "<>");
        assert_eq!(chars("x<"), "x<");
        assert_eq!(chars("cat <file"), "cat <file");
        assert_eq!(chars("echo 1 >/dev/null"), "echo 1 >/dev/null");
        assert_eq!(chars("<!-- x -->"), "<!-- x -->");
        // A character toggle may be any character, `<` and `>` included.
        assert_eq!(chars("<<on><>off>"), "[<On][>Off]");
    }

    #[test]
    fn unknown_and_unclosed() {
        let e = parse("<entr><enter").unwrap_err();
        assert_eq!(e[0].to_string(), "unknown key `<entr>`");
        assert!(e[0]
            .kind
            .help()
            .unwrap()
            .starts_with("did you mean `<enter>`?"));
        assert_eq!(e[0].span, 0..6);
        assert_eq!(e[1].to_string(), "`<enter` is not closed by `>`");
        assert_eq!(e[1].span, 6..12);
        let e = parse("<wait 5s><leftAltOn x>").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(matches!(&e[0].kind, ErrorKind::Unclosed { name } if name == "wait"));
        assert!(matches!(&e[1].kind, ErrorKind::Unclosed { name } if name == "leftAltOn"));
        let e = parse("<left_alt>").unwrap_err();
        assert!(e[0].kind.help().unwrap().contains("`<leftAlt>`"));
        let e = parse("<enterx>").unwrap_err();
        assert!(matches!(&e[0].kind, ErrorKind::UnknownKey { name } if name == "enterx"));
    }

    #[test]
    fn untypable_characters() {
        let e = parse("a\nb\té").unwrap_err();
        assert_eq!(
            e.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
            [
                ErrorKind::Untypable { ch: '\n' },
                ErrorKind::Untypable { ch: '\t' },
                ErrorKind::Untypable { ch: 'é' }
            ]
        );
        assert!(e[0].kind.help().unwrap().contains("<enter>"));
        assert_eq!(e[2].span, 4..6);
        // <éOn> is a character toggle of an untypable character.
        assert!(parse("<éOn>").is_err());
    }

    #[test]
    fn opaque_ranges_are_skipped_and_defer_the_expression_they_cut() {
        let t = "<wait{{user `t`}}s> x{{ .HTTPIP }}<{{user `k`}}><enter{{x}}<entr>";
        let mut spans = vec![];
        let mut i = 0;
        while let Some(p) = t[i..].find("{{") {
            let e = i + p + t[i + p..].find("}}").unwrap() + 2;
            spans.push(i + p..e);
            i = e;
        }
        let (cmds, errs) = scan(t, &spans);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(matches!(&errs[0].kind, ErrorKind::UnknownKey { name } if name == "entr"));
        // No command comes from inside an action.
        for c in &cmds {
            assert!(spans
                .iter()
                .all(|s| c.span.end <= s.start || c.span.start >= s.end));
        }
    }
}
