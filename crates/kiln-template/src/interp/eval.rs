//! The evaluator: walking the tree, pipelines, fields, variables.

use super::*;

pub(super) struct Eval<'a, 'h> {
    pub(super) ctx: &'a Context,
    pub(super) src: &'a str,
    pub(super) hooks: &'a mut Hooks<'h>,
    pub(super) vars: Vec<(String, Val)>,
    pub(super) out: String,
}

pub(super) type R<T> = Result<T, InterpError>;

impl Eval<'_, '_> {
    pub(super) fn print(&self, v: &Val) -> String {
        match v {
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => go::format_float_v(*f),
            Val::Bool(b) => b.to_string(),
            Val::Nil => "<nil>".into(),
            Val::Data => {
                let body: Vec<String> = self
                    .ctx
                    .data
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("map[{}]", body.join(" "))
            }
        }
    }

    pub(super) fn truth(&self, v: &Val) -> bool {
        match v {
            Val::Str(s) => !s.is_empty(),
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Bool(b) => *b,
            Val::Nil => false,
            Val::Data => !self.ctx.data.is_empty(),
        }
    }

    pub(super) fn list(&mut self, items: &[Item], dot: &Val) -> R<()> {
        for item in items {
            match item {
                Item::Text(t) => self.out.push_str(t),
                Item::Action { pipe, raw } => {
                    if self.hooks.keep_field_actions && is_field_action(&self.src[raw.0..raw.1]) {
                        self.out.push_str(&self.src[raw.0..raw.1]);
                        continue;
                    }
                    let v = self.pipe(pipe, dot)?;
                    if pipe.decl.is_none() {
                        let s = self.print(&v);
                        self.out.push_str(&s);
                    }
                }
                Item::Cond {
                    with,
                    cond,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipe(cond, dot)?;
                    let t = self.truth(&v);
                    let r = if t {
                        let inner = if *with { v } else { dot.clone() };
                        self.list(then, &inner)
                    } else if let Some(o) = otherwise {
                        self.list(o, dot)
                    } else {
                        Ok(())
                    };
                    self.vars.truncate(mark);
                    r?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn pipe(&mut self, pipe: &Pipe, dot: &Val) -> R<Val> {
        let mut v: Option<Val> = None;
        for cmd in &pipe.cmds {
            v = Some(self.cmd(cmd, dot, v)?);
        }
        let v = v.unwrap_or(Val::Nil);
        if let Some((name, declare, pos)) = &pipe.decl {
            if *declare {
                self.vars.push((name.clone(), v.clone()));
            } else {
                match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => return Err(err(*pos, format!("undefined variable {name:?}"))),
                }
            }
        }
        Ok(v)
    }

    pub(super) fn cmd(&mut self, cmd: &Cmd, dot: &Val, piped: Option<Val>) -> R<Val> {
        let Some(first) = cmd.args.first() else {
            return Err(err(cmd.pos, "empty command"));
        };
        if let ArgKind::Ident(name) = &first.kind {
            let mut args = Vec::with_capacity(cmd.args.len());
            for a in &cmd.args[1..] {
                args.push((self.arg(a, dot)?, a.pos));
            }
            if let Some(p) = piped {
                args.push((p, cmd.pos));
            }
            return self.call(name, first.pos, args);
        }
        if cmd.args.len() > 1 || piped.is_some() {
            let what = match &first.kind {
                ArgKind::Lit(Val::Nil) => return Err(err(first.pos, "nil is not a command")),
                ArgKind::Field(f) => format!(".{f}"),
                ArgKind::Var(v) => v.clone(),
                ArgKind::Dot => ".".into(),
                _ => "value".into(),
            };
            return Err(err(
                first.pos,
                format!("can't give argument to non-function {what}"),
            ));
        }
        if let ArgKind::Lit(Val::Nil) = first.kind {
            return Err(err(first.pos, "nil is not a command"));
        }
        self.arg(first, dot)
    }

    pub(super) fn arg(&mut self, a: &Arg, dot: &Val) -> R<Val> {
        let base = match &a.kind {
            ArgKind::Ident(name) => self.call(name, a.pos, Vec::new())?,
            ArgKind::Dot => dot.clone(),
            ArgKind::Field(f) => self.field(dot, f, a.pos)?,
            ArgKind::Var(name) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => v.clone(),
                None => return Err(err(a.pos, format!("undefined variable {name:?}"))),
            },
            ArgKind::Lit(v) => v.clone(),
            ArgKind::Pipe(p) => self.pipe(p, dot)?,
        };
        let mut v = base;
        for f in &a.fields {
            v = self.field(&v, f, a.pos)?;
        }
        Ok(v)
    }

    pub(super) fn field(&self, on: &Val, name: &str, pos: usize) -> R<Val> {
        match on {
            Val::Data => match self.ctx.data.get(name) {
                Some(v) => Ok(Val::Str(v.clone())),
                None if self.ctx.lenient_fields => Ok(Val::Str("<no value>".into())),
                None => {
                    let avail: Vec<String> =
                        self.ctx.data.keys().map(|k| format!(".{k}")).collect();
                    let mut msg = format!("no context value .{name} here");
                    if avail.is_empty() {
                        msg.push_str(" (no context values are available here)");
                    } else {
                        msg.push_str(&format!(" (available: {})", avail.join(", ")));
                    }
                    Err(err(pos, msg))
                }
            },
            other => Err(err(
                pos,
                format!("can't evaluate field {name} in type {}", other.type_name()),
            )),
        }
    }
}

/// Whether an action's source is `{{.X...}}` or `{{ .X...}}` (one white
/// space allowed), the form Packer leaves alone while rendering variables.
pub(super) fn is_field_action(raw: &str) -> bool {
    let inner = &raw[2..];
    let inner = match inner.chars().next() {
        Some(c) if c.is_whitespace() => &inner[c.len_utf8()..],
        _ => inner,
    };
    inner.starts_with('.')
}
