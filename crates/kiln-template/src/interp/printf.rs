//! Go's `fmt` printing for `print`, `printf`, `println`.

use super::*;

impl Eval<'_, '_> {
    /// `fmt.Sprint` / `fmt.Sprintln`.
    pub(super) fn sprint(&self, vals: &[Val], ln: bool) -> String {
        let mut out = String::new();
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                let is_str = |v: &Val| matches!(v, Val::Str(_));
                if ln || (!is_str(v) && !is_str(&vals[i - 1])) {
                    out.push(' ');
                }
            }
            out.push_str(&self.print(v));
        }
        if ln {
            out.push('\n');
        }
        out
    }

    /// `fmt.Sprintf` for the verbs Packer templates use: `%v %s %q %d %x
    /// %X %o %b %c %f %F %e %E %g %G %t %%`, flags `- + 0 space #`, width
    /// and precision. Mismatches print Go's `%!v(type=value)` forms.
    pub(super) fn sprintf(&self, f: &str, args: &[Val]) -> String {
        let mut out = String::new();
        let mut chars = f.chars().peekable();
        let mut argi = 0;
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
            while let Some(&fl) = chars.peek() {
                match fl {
                    '-' => minus = true,
                    '+' => plus = true,
                    '0' => zero = true,
                    ' ' => space = true,
                    '#' => {}
                    _ => break,
                }
                chars.next();
            }
            let mut width: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                width = Some(
                    width
                        .unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d as usize)
                        .min(1 << 16),
                );
                chars.next();
            }
            let mut prec: Option<usize> = None;
            if chars.peek() == Some(&'.') {
                chars.next();
                prec = Some(0);
                while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                    prec = Some(
                        prec.unwrap_or(0)
                            .saturating_mul(10)
                            .saturating_add(d as usize)
                            .min(1 << 16),
                    );
                    chars.next();
                }
            }
            let Some(verb) = chars.next() else {
                out.push_str("%!(NOVERB)");
                break;
            };
            if verb == '%' {
                out.push('%');
                continue;
            }
            let Some(arg) = args.get(argi) else {
                out.push_str(&format!("%!{verb}(MISSING)"));
                continue;
            };
            argi += 1;
            let bad = || format!("%!{verb}({}={})", arg.type_name(), self.print(arg));
            let sign = |neg: bool| {
                if neg {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                }
            };
            // (sign, body, numeric) — numeric bodies may be zero-padded.
            let formatted: Result<(String, String, bool), String> = match (verb, arg) {
                ('v' | 's', Val::Str(s)) => Ok((String::new(), truncate(s, prec), false)),
                ('q', Val::Str(s)) => Ok((String::new(), go_quote(s), false)),
                ('x' | 'X', Val::Str(s)) => {
                    let h: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                    Ok((
                        String::new(),
                        if verb == 'X' { h.to_uppercase() } else { h },
                        false,
                    ))
                }
                ('v' | 'd', Val::Int(i)) => {
                    Ok((sign(*i < 0).into(), i.unsigned_abs().to_string(), true))
                }
                ('x', Val::Int(i)) => {
                    Ok((sign(*i < 0).into(), format!("{:x}", i.unsigned_abs()), true))
                }
                ('X', Val::Int(i)) => {
                    Ok((sign(*i < 0).into(), format!("{:X}", i.unsigned_abs()), true))
                }
                ('o', Val::Int(i)) => {
                    Ok((sign(*i < 0).into(), format!("{:o}", i.unsigned_abs()), true))
                }
                ('b', Val::Int(i)) => {
                    Ok((sign(*i < 0).into(), format!("{:b}", i.unsigned_abs()), true))
                }
                ('c', Val::Int(i)) => Ok((
                    String::new(),
                    u32::try_from(*i)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('\u{fffd}')
                        .to_string(),
                    false,
                )),
                ('q', Val::Int(i)) => Ok((
                    String::new(),
                    format!(
                        "'{}'",
                        u32::try_from(*i)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{fffd}')
                    ),
                    false,
                )),
                ('v' | 'g' | 'G', Val::Float(x)) if prec.is_none() => {
                    let body = go::format_float_v(x.abs());
                    Ok((
                        sign(x.is_sign_negative()).into(),
                        if verb == 'G' {
                            body.to_uppercase()
                        } else {
                            body
                        },
                        true,
                    ))
                }
                ('f' | 'F' | 'v' | 'g' | 'G', Val::Float(x)) => Ok((
                    sign(x.is_sign_negative()).into(),
                    format!("{:.*}", prec.unwrap_or(6), x.abs()),
                    true,
                )),
                ('e' | 'E', Val::Float(x)) => {
                    let r = format!("{:.*e}", prec.unwrap_or(6), x.abs());
                    let (m, e) = r.split_once('e').unwrap_or((&r, "0"));
                    let e: i32 = e.parse().unwrap_or(0);
                    let body = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                    Ok((
                        sign(x.is_sign_negative()).into(),
                        if verb == 'E' {
                            body.to_uppercase()
                        } else {
                            body
                        },
                        true,
                    ))
                }
                ('v' | 't', Val::Bool(b)) => Ok((String::new(), b.to_string(), false)),
                ('v', Val::Nil) => Ok((String::new(), "<nil>".into(), false)),
                (_, Val::Nil) => Err(format!("%!{verb}(<nil>)")),
                ('v' | 's', Val::Data) => Ok((String::new(), self.print(arg), false)),
                _ => Err(bad()),
            };
            match formatted {
                Ok((sign, body, numeric)) => {
                    let len = sign.chars().count() + body.chars().count();
                    let pad = width.unwrap_or(0).saturating_sub(len);
                    if minus {
                        out.push_str(&sign);
                        out.push_str(&body);
                        out.push_str(&" ".repeat(pad));
                    } else if zero && numeric {
                        out.push_str(&sign);
                        out.push_str(&"0".repeat(pad));
                        out.push_str(&body);
                    } else {
                        out.push_str(&" ".repeat(pad));
                        out.push_str(&sign);
                        out.push_str(&body);
                    }
                }
                Err(b) => out.push_str(&b),
            }
        }
        if argi < args.len() {
            let extra: Vec<String> = args[argi..]
                .iter()
                .map(|a| format!("{}={}", a.type_name(), self.print(a)))
                .collect();
            out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
        }
        out
    }
}

pub(super) fn truncate(s: &str, prec: Option<usize>) -> String {
    match prec {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

/// `strconv.Quote`.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
