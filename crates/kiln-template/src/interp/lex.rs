//! The lexer: an action's tokens, literals, numbers.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum T {
    Ident(String),
    Field(String),
    Dot,
    Var(String),
    Str(String),
    Num(String),
    Char(char),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
pub(super) struct Tok {
    pub(super) t: T,
    pub(super) pos: usize,
    /// Preceded by white space (Go needs a space between arguments).
    pub(super) spaced: bool,
}

pub(super) const SPACE: &[char] = &[' ', '\t', '\r', '\n'];
pub(super) const MAX_DEPTH: usize = 100;

pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(super) fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub(super) const FUNCS: &[&str] = &[
    // Packer
    "build_name",
    "build_type",
    "env",
    "isotime",
    "strftime",
    "pwd",
    "split",
    "template_dir",
    "timestamp",
    "uuid",
    "user",
    "packer_version",
    "consul_key",
    "vault",
    "sed",
    "build",
    "aws_secretsmanager",
    "replace",
    "replace_all",
    "upper",
    "lower",
    "clean_resource_name",
    // Go
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
];

/// One lexed action: its tokens and where it ends.
pub(super) struct ActionLex {
    pub(super) toks: Vec<Tok>,
    /// Byte just after the closing `}}`.
    pub(super) end: usize,
    pub(super) right_trim: bool,
    pub(super) comment: bool,
}

/// Lex an action whose `{{` is at `open`.
pub(super) fn lex_action(src: &str, open: usize) -> Result<ActionLex, InterpError> {
    let b = src.as_bytes();
    let mut i = open + 2;
    if b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|&c| is_space(c)) {
        i += 2;
    }
    // Comment: `{{/*` ... `*/}}` (with optional trim markers).
    let after_ws = i + src[i..].len() - src[i..].trim_start_matches(SPACE).len();
    if src[after_ws..].starts_with("/*") && (after_ws == i || i > open + 2) {
        let Some(close) = src[after_ws + 2..].find("*/") else {
            return Err(err(open, "unclosed comment"));
        };
        let mut j = after_ws + 2 + close + 2;
        let mut right_trim = false;
        if b.get(j).is_some_and(|&c| is_space(c)) && src[j + 1..].starts_with("-}}") {
            right_trim = true;
            j += 2;
        }
        if !src[j..].starts_with("}}") {
            return Err(err(open, "comment ends before closing delimiter"));
        }
        return Ok(ActionLex {
            toks: Vec::new(),
            end: j + 2,
            right_trim,
            comment: true,
        });
    }
    let mut toks = Vec::new();
    let mut spaced = true;
    loop {
        let Some(c) = src[i..].chars().next() else {
            return Err(err(open, "unclosed action"));
        };
        let start = i;
        let push = |t: T, toks: &mut Vec<Tok>, spaced: &mut bool| {
            toks.push(Tok {
                t,
                pos: start,
                spaced: *spaced,
            });
            *spaced = false;
        };
        match c {
            '}' if src[i..].starts_with("}}") => {
                return Ok(ActionLex {
                    toks,
                    end: i + 2,
                    right_trim: false,
                    comment: false,
                });
            }
            ' ' | '\t' | '\r' | '\n' => {
                if src[i + 1..].starts_with("-}}") {
                    return Ok(ActionLex {
                        toks,
                        end: i + 4,
                        right_trim: true,
                        comment: false,
                    });
                }
                i += 1;
                spaced = true;
            }
            '"' => {
                let (s, n) = lex_quoted(src, i)?;
                i += n;
                push(T::Str(s), &mut toks, &mut spaced);
            }
            '`' => {
                let Some(close) = src[i + 1..].find('`') else {
                    return Err(err(i, "unterminated raw quoted string"));
                };
                let s = src[i + 1..i + 1 + close].to_string();
                i += close + 2;
                push(T::Str(s), &mut toks, &mut spaced);
            }
            '\'' => {
                let (ch, n) = lex_char(src, i)?;
                i += n;
                push(T::Char(ch), &mut toks, &mut spaced);
            }
            '|' => {
                i += 1;
                push(T::Pipe, &mut toks, &mut spaced);
            }
            '(' => {
                i += 1;
                push(T::LParen, &mut toks, &mut spaced);
            }
            ')' => {
                i += 1;
                push(T::RParen, &mut toks, &mut spaced);
            }
            ',' => {
                i += 1;
                push(T::Comma, &mut toks, &mut spaced);
            }
            ':' => {
                if b.get(i + 1) == Some(&b'=') {
                    i += 2;
                    push(T::Declare, &mut toks, &mut spaced);
                } else {
                    return Err(err(i, "expected :="));
                }
            }
            '=' => {
                i += 1;
                push(T::Assign, &mut toks, &mut spaced);
            }
            '$' => {
                let n = src[i + 1..]
                    .find(|c: char| !is_alnum(c))
                    .unwrap_or(src.len() - i - 1);
                let name = src[i..i + 1 + n].to_string();
                i += 1 + n;
                push(T::Var(name), &mut toks, &mut spaced);
            }
            '.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let n = lex_number(src, i)?;
                push(T::Num(src[i..i + n].to_string()), &mut toks, &mut spaced);
                i += n;
            }
            '.' => {
                let n = src[i + 1..]
                    .find(|c: char| !is_alnum(c))
                    .unwrap_or(src.len() - i - 1);
                if n == 0 {
                    i += 1;
                    push(T::Dot, &mut toks, &mut spaced);
                } else {
                    let name = src[i + 1..i + 1 + n].to_string();
                    i += 1 + n;
                    push(T::Field(name), &mut toks, &mut spaced);
                }
            }
            '+' | '-' | '0'..='9' => {
                let n = lex_number(src, i)?;
                push(T::Num(src[i..i + n].to_string()), &mut toks, &mut spaced);
                i += n;
            }
            c if is_alnum(c) => {
                let n = src[i..]
                    .find(|c: char| !is_alnum(c))
                    .unwrap_or(src.len() - i);
                let word = src[i..i + n].to_string();
                i += n;
                push(T::Ident(word), &mut toks, &mut spaced);
            }
            c => {
                return Err(err(i, format!("unexpected {c:?} in command")));
            }
        }
    }
}

/// A number token (Go's scanner rules, loosely): returns its length.
pub(super) fn lex_number(src: &str, i: usize) -> Result<usize, InterpError> {
    let b = src.as_bytes();
    let mut j = i;
    if matches!(b.get(j), Some(b'+' | b'-')) {
        j += 1;
    }
    let hex = b.get(j) == Some(&b'0') && matches!(b.get(j + 1), Some(b'x' | b'X'));
    while let Some(&c) = b.get(j) {
        let ok = c.is_ascii_alphanumeric()
            || c == b'_'
            || c == b'.'
            || ((c == b'+' || c == b'-')
                && j > i
                && (if hex {
                    matches!(b[j - 1], b'p' | b'P')
                } else {
                    matches!(b[j - 1], b'e' | b'E')
                }));
        if !ok {
            break;
        }
        j += 1;
    }
    if j == i || (j == i + 1 && !b[i].is_ascii_digit()) {
        return Err(err(
            i,
            format!(
                "bad number syntax: {:?}",
                &src[i..j.max(i + 1).min(src.len())]
            ),
        ));
    }
    Ok(j - i)
}

/// Parse a number token as Go's template parser does: integers (any Go
/// base syntax) are `int`, anything with `.`/exponent is `float64`.
pub(super) fn number_value(text: &str, pos: usize) -> Result<Val, InterpError> {
    let bad = || err(pos, format!("bad number syntax: {text:?}"));
    if text.ends_with('i') {
        return Err(err(pos, format!("complex number {text:?} not supported")));
    }
    let is_hex = {
        let t = text.trim_start_matches(['+', '-']);
        t.starts_with("0x") || t.starts_with("0X")
    };
    let floaty = if is_hex {
        text.contains(['p', 'P', '.'])
    } else {
        text.contains(['.', 'e', 'E'])
    };
    if !floaty {
        return match go::parse_int(text) {
            Ok(i) => Ok(Val::Int(i)),
            Err(e) if e.contains("out of range") => Err(err(pos, format!("{text} overflows int"))),
            Err(_) => Err(bad()),
        };
    }
    if is_hex {
        return Err(bad());
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let clean = clean.strip_prefix('+').unwrap_or(&clean);
    // Rust accepts "1." and ".5" as Go does; reject things like "1.2.3".
    clean
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Val::Float)
        .ok_or_else(bad)
}

/// A double-quoted Go string starting at `i`: (value, length in source).
pub(super) fn lex_quoted(src: &str, i: usize) -> Result<(String, usize), InterpError> {
    let mut out = String::new();
    let mut chars = src[i + 1..].char_indices();
    let unterminated = || err(i, "unterminated quoted string");
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return Ok((out, k + 2)),
            '\n' => return Err(unterminated()),
            '\\' => {
                let (ek, e) = chars.next().ok_or_else(unterminated)?;
                let epos = i + 1 + ek;
                match e {
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\u{b}'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = (0..n)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let v = (hex.len() == n)
                            .then(|| u32::from_str_radix(&hex, 16).ok())
                            .flatten()
                            .ok_or_else(|| err(epos, "invalid escape in quoted string"))?;
                        if e == 'x' {
                            // A byte; only ASCII can be represented in a
                            // Rust string, others become U+FFFD.
                            out.push(if v < 0x80 {
                                v as u8 as char
                            } else {
                                '\u{fffd}'
                            });
                        } else {
                            out.push(char::from_u32(v).ok_or_else(|| {
                                err(epos, "invalid Unicode escape in quoted string")
                            })?);
                        }
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            let (_, d) = chars.next().ok_or_else(unterminated)?;
                            v = v * 8
                                + d.to_digit(8)
                                    .ok_or_else(|| err(epos, "invalid octal escape"))?;
                        }
                        out.push(if v < 0x80 {
                            v as u8 as char
                        } else {
                            '\u{fffd}'
                        });
                    }
                    _ => {
                        return Err(err(
                            epos,
                            format!("invalid escape `\\{e}` in quoted string"),
                        ))
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(unterminated())
}

/// A character constant `'a'` starting at `i`: (char, length).
pub(super) fn lex_char(src: &str, i: usize) -> Result<(char, usize), InterpError> {
    let bad = || err(i, "malformed character constant");
    let close = src[i + 1..]
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '\'')
        .map(|(k, _)| k)
        .ok_or_else(bad)?;
    let body = &src[i + 1..i + 1 + close];
    let ch = if let Some(esc) = body.strip_prefix('\\') {
        if esc == "'" {
            '\''
        } else {
            let (s, _) = lex_quoted(&format!("\"\\{esc}\""), 0).map_err(|_| bad())?;
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => c,
                _ => return Err(bad()),
            }
        }
    } else {
        let mut it = body.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => c,
            _ => return Err(bad()),
        }
    };
    Ok((ch, close + 2))
}
