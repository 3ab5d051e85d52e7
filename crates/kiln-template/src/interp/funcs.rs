//! The functions: Packer's, and Go's builtins.

use super::*;

impl Eval<'_, '_> {
    pub(super) fn call(&mut self, name: &str, pos: usize, args: Vec<(Val, usize)>) -> R<Val> {
        let n = args.len();
        let arity = |want: usize| -> R<()> {
            if n == want {
                Ok(())
            } else {
                Err(err(
                    pos,
                    format!("wrong number of args for {name}: want {want} got {n}"),
                ))
            }
        };
        let at_least = |want: usize| -> R<()> {
            if n >= want {
                Ok(())
            } else {
                Err(err(
                    pos,
                    format!("wrong number of args for {name}: want at least {want} got {n}"),
                ))
            }
        };
        let calling = |m: String| err(pos, format!("error calling {name}: {m}"));
        let s = |i: usize| -> R<String> { want_str(&args[i]) };
        let int = |i: usize| -> R<i64> { want_int(&args[i]) };
        let ctx = self.ctx;
        let now = || {
            time::OffsetDateTime::from_unix_timestamp(ctx.timestamp)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        };
        let v = match name {
            "user" => {
                arity(1)?;
                let k = s(0)?;
                if let Some(f) = self.hooks.user.as_mut() {
                    Val::Str(f(&k).map_err(calling)?)
                } else {
                    match ctx.user_vars.get(&k) {
                        Some(v) => Val::Str(v.clone()),
                        None if ctx.allow_env => {
                            return Err(calling(format!("Error: variable not set: {k}")))
                        }
                        // As Packer: outside variable defaults an unknown
                        // variable is the empty string.
                        None => Val::Str(String::new()),
                    }
                }
            }
            "env" => {
                arity(1)?;
                let k = s(0)?;
                if !ctx.allow_env {
                    return Err(calling("env vars are not allowed here".into()));
                }
                Val::Str(std::env::var(&k).unwrap_or_default())
            }
            "consul_key" | "vault" | "aws_secretsmanager" => {
                if !ctx.allow_env {
                    return Err(calling(format!(
                        "{name} is only allowed in the variables section"
                    )));
                }
                return Err(calling(format!("{name} is not supported by kiln")));
            }
            "sed" => {
                arity(2)?;
                return Err(calling(
                    "template function `sed` is deprecated use `replace` or `replace_all` instead"
                        .into(),
                ));
            }
            "timestamp" => {
                arity(0)?;
                Val::Str(ctx.timestamp.to_string())
            }
            "isotime" => {
                let layout = match n {
                    0 => "2006-01-02T15:04:05Z07:00".to_string(),
                    1 => s(0)?,
                    _ => {
                        let all: Result<Vec<String>, _> = (0..n).map(s).collect();
                        return Err(calling(format!(
                            "too many values, 1 needed: [{}]",
                            all?.join(" ")
                        )));
                    }
                };
                Val::Str(go::format_layout(&layout, now()))
            }
            "strftime" => {
                arity(1)?;
                Val::Str(go::strftime(&s(0)?, now()))
            }
            "uuid" => {
                arity(0)?;
                Val::Str(time_ordered_uuid())
            }
            "build_name" | "build_type" => {
                arity(0)?;
                let v = if name == "build_name" {
                    &ctx.build_name
                } else {
                    &ctx.build_type
                };
                match v.as_deref() {
                    Some(v) if !v.is_empty() => Val::Str(v.to_string()),
                    _ => return Err(calling(format!("{name} not available"))),
                }
            }
            "template_dir" => {
                arity(0)?;
                if ctx.template_dir.as_os_str().is_empty() {
                    return Err(calling("template path not available".into()));
                }
                Val::Str(ctx.template_dir.display().to_string())
            }
            "pwd" => {
                arity(0)?;
                let d = std::env::current_dir().map_err(|e| calling(e.to_string()))?;
                Val::Str(d.display().to_string())
            }
            "split" => {
                arity(3)?;
                let (k, sep, i) = (s(0)?, s(1)?, int(2)?);
                let parts = go::split(&k, &sep);
                match usize::try_from(i).ok().and_then(|i| parts.get(i)) {
                    Some(p) => Val::Str(p.to_string()),
                    None => {
                        return Err(calling(format!(
                            "the substring {i} was unavailable using the separator value, {sep}, only {} values were found",
                            parts.len()
                        )))
                    }
                }
            }
            "replace" => {
                arity(4)?;
                Val::Str(go::replace(&s(3)?, &s(0)?, &s(1)?, int(2)?))
            }
            "replace_all" => {
                arity(3)?;
                Val::Str(go::replace(&s(2)?, &s(0)?, &s(1)?, -1))
            }
            "lower" => {
                arity(1)?;
                Val::Str(s(0)?.to_lowercase())
            }
            "upper" => {
                arity(1)?;
                Val::Str(s(0)?.to_uppercase())
            }
            "clean_resource_name" => {
                arity(1)?;
                Val::Str(clean_resource_name(&s(0)?))
            }
            "packer_version" => {
                arity(0)?;
                Val::Str(PACKER_COMPAT_VERSION.into())
            }
            "build" => {
                arity(1)?;
                let k = s(0)?;
                match &ctx.generated {
                    None => match &ctx.build_keys {
                        BuildKeys::Any => Val::Str(build_placeholder(&k)),
                        BuildKeys::Only(keys) if keys.contains(&k) => {
                            Val::Str(build_placeholder(&k))
                        }
                        BuildKeys::Only(keys) => {
                            let all: Vec<&str> = keys.iter().map(String::as_str).collect();
                            return Err(calling(format!(
                                "the builder provides no value {k:?} (it provides: {})",
                                all.join(", ")
                            )));
                        }
                        BuildKeys::Unavailable => {
                            return Err(calling(format!(
                                "{k:?}: build values are not available in a builder's own configuration (only in provisioners and post-processors)"
                            )))
                        }
                    },
                    Some(g) => match g.get(&k) {
                        Some(v) => Val::Str(v.clone()),
                        None => {
                            let keys: Vec<&str> = g.keys().map(String::as_str).collect();
                            return Err(calling(format!(
                                "the builder generated no value {k:?} (available: {})",
                                keys.join(", ")
                            )));
                        }
                    },
                }
            }
            "and" | "or" => {
                at_least(1)?;
                let want = name == "or";
                let mut last = Val::Nil;
                for (v, _) in args {
                    if self.truth(&v) == want {
                        return Ok(v);
                    }
                    last = v;
                }
                last
            }
            "not" => {
                arity(1)?;
                Val::Bool(!self.truth(&args[0].0))
            }
            "len" => {
                arity(1)?;
                match &args[0].0 {
                    Val::Str(s) => Val::Int(s.len() as i64),
                    Val::Data => Val::Int(ctx.data.len() as i64),
                    v => return Err(calling(format!("len of type {}", v.type_name()))),
                }
            }
            "index" => {
                at_least(1)?;
                let mut v = args[0].0.clone();
                for (ix, _) in &args[1..] {
                    v = match (&v, ix) {
                        (Val::Str(s), Val::Int(i)) => {
                            match usize::try_from(*i).ok().and_then(|i| s.as_bytes().get(i)) {
                                Some(b) => Val::Int(*b as i64),
                                None => return Err(calling(format!("index out of range: {i}"))),
                            }
                        }
                        (Val::Str(_), other) => {
                            return Err(calling(format!(
                                "cannot index slice/array with type {}",
                                other.type_name()
                            )))
                        }
                        (Val::Data, Val::Str(k)) => {
                            Val::Str(ctx.data.get(k).cloned().unwrap_or_default())
                        }
                        (Val::Data, other) => {
                            return Err(calling(format!(
                                "value has type {}; should be string",
                                other.type_name()
                            )))
                        }
                        (Val::Nil, _) => return Err(calling("index of untyped nil".into())),
                        (other, _) => {
                            return Err(calling(format!(
                                "can't index item of type {}",
                                other.type_name()
                            )))
                        }
                    };
                }
                v
            }
            "slice" => {
                at_least(1)?;
                let Val::Str(st) = &args[0].0 else {
                    return Err(calling(format!(
                        "can't slice item of type {}",
                        args[0].0.type_name()
                    )));
                };
                if n > 3 {
                    return Err(calling("cannot 3-index slice a string".into()));
                }
                let lo = if n > 1 { int(1)? } else { 0 };
                let hi = if n > 2 { int(2)? } else { st.len() as i64 };
                let (lo, hi) = (usize::try_from(lo).ok(), usize::try_from(hi).ok());
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi && hi <= st.len() => {
                        Val::Str(String::from_utf8_lossy(&st.as_bytes()[lo..hi]).into_owned())
                    }
                    _ => return Err(calling("index out of range".into())),
                }
            }
            "print" | "println" => {
                let vals: Vec<Val> = args.into_iter().map(|(v, _)| v).collect();
                Val::Str(self.sprint(&vals, name == "println"))
            }
            "printf" => {
                at_least(1)?;
                let f = s(0)?;
                let vals: Vec<Val> = args[1..].iter().map(|(v, _)| v.clone()).collect();
                Val::Str(self.sprintf(&f, &vals))
            }
            "eq" | "ne" => {
                if name == "ne" {
                    arity(2)?;
                } else if n < 2 {
                    return Err(calling("missing argument for comparison".into()));
                }
                let first = &args[0].0;
                let mut any = false;
                for (v, _) in &args[1..] {
                    if compare(first, v).map_err(calling)? == std::cmp::Ordering::Equal {
                        any = true;
                    }
                }
                Val::Bool(if name == "eq" { any } else { !any })
            }
            "lt" | "le" | "gt" | "ge" => {
                arity(2)?;
                let (a, b) = (&args[0].0, &args[1].0);
                if matches!(a, Val::Bool(_)) || matches!(b, Val::Bool(_)) {
                    return Err(calling("invalid type for comparison".into()));
                }
                let o = compare(a, b).map_err(calling)?;
                Val::Bool(match name {
                    "lt" => o.is_lt(),
                    "le" => o.is_le(),
                    "gt" => o.is_gt(),
                    _ => o.is_ge(),
                })
            }
            "html" | "js" | "urlquery" => {
                let vals: Vec<Val> = args.into_iter().map(|(v, _)| v).collect();
                let s = if let [Val::Str(s)] = vals.as_slice() {
                    s.clone()
                } else {
                    self.sprint(&vals, false)
                };
                Val::Str(match name {
                    "html" => html_escape(&s),
                    "js" => js_escape(&s),
                    _ => query_escape(&s),
                })
            }
            other => return Err(err(pos, format!("function {other:?} not defined"))),
        };
        Ok(v)
    }
}

pub(super) fn want_str((v, pos): &(Val, usize)) -> R<String> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        Val::Nil => Err(err(*pos, "invalid value; expected string")),
        other => Err(err(
            *pos,
            format!(
                "wrong type for value; expected string; got {}",
                other.type_name()
            ),
        )),
    }
}

pub(super) fn want_int((v, pos): &(Val, usize)) -> R<i64> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        Val::Nil => Err(err(*pos, "invalid value; expected int")),
        other => Err(err(
            *pos,
            format!(
                "wrong type for value; expected int; got {}",
                other.type_name()
            ),
        )),
    }
}

/// Go 1.15's comparison rules for `eq`/`lt`/...: same basic kind only.
pub(super) fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => Ok(x.partial_cmp(y).unwrap_or(Ordering::Less)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        (Val::Nil | Val::Data, _) | (_, Val::Nil | Val::Data) => {
            Err("invalid type for comparison".into())
        }
        _ => Err("incompatible types for comparison".into()),
    }
}

pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn js_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `url.QueryEscape`.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The Google Compute flavour of Packer's `clean_resource_name`: lower
/// case, every byte that is not `[a-z0-9]` becomes `-`.
pub(super) fn clean_resource_name(s: &str) -> String {
    s.to_lowercase()
        .bytes()
        .map(|b| {
            if b.is_ascii_lowercase() || b.is_ascii_digit() {
                b as char
            } else {
                '-'
            }
        })
        .collect()
}

/// Packer's `TimeOrderedUUID`: UNIX seconds, then 96 random bits.
pub(super) fn time_ordered_uuid() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as u32;
    let r = uuid::Uuid::new_v4();
    let b = r.as_bytes();
    // Skip the version/variant bytes of the v4 UUID: 12 random bytes left.
    let rnd: Vec<u8> = b[..6].iter().chain(&b[10..16]).copied().collect();
    format!(
        "{secs:08x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        rnd[0],
        rnd[1],
        rnd[2],
        rnd[3],
        rnd[4],
        rnd[5],
        rnd[6],
        rnd[7],
        rnd[8],
        rnd[9],
        rnd[10],
        rnd[11]
    )
}
