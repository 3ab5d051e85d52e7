//! The parser: text and actions into [`Item`]s.

use super::*;

pub(super) enum Stop {
    Eof,
    End,
    Else,
    ElseIf { with: bool, cond: Pipe },
}

pub(super) struct Parser<'t> {
    pub(super) src: &'t str,
    pub(super) i: usize,
    pub(super) trim_next: bool,
}

pub(super) fn parse(src: &str) -> Result<Vec<Item>, InterpError> {
    let mut p = Parser {
        src,
        i: 0,
        trim_next: false,
    };
    let (items, stop, pos) = p.list(0)?;
    match stop {
        Stop::Eof => Ok(items),
        Stop::End => Err(err(pos, "unexpected {{end}}")),
        Stop::Else | Stop::ElseIf { .. } => Err(err(pos, "unexpected {{else}}")),
    }
}

impl Parser<'_> {
    /// Items up to `{{end}}`, `{{else ...}}` or the end of input. Returns
    /// the position of the stopping action.
    fn list(&mut self, depth: usize) -> Result<(Vec<Item>, Stop, usize), InterpError> {
        if depth > MAX_DEPTH {
            return Err(err(self.i, "control structures nested too deeply"));
        }
        let mut items = Vec::new();
        loop {
            let rest = &self.src[self.i..];
            let text_len = rest.find("{{").unwrap_or(rest.len());
            let mut text = &rest[..text_len];
            if self.trim_next {
                text = text.trim_start_matches(SPACE);
                self.trim_next = false;
            }
            let open = self.i + text_len;
            if open >= self.src.len() {
                if !text.is_empty() {
                    items.push(Item::Text(text.to_string()));
                }
                return Ok((items, Stop::Eof, self.src.len()));
            }
            let left_trim = self.src[open + 2..].starts_with('-')
                && self
                    .src
                    .as_bytes()
                    .get(open + 3)
                    .is_some_and(|&c| is_space(c));
            if left_trim {
                text = text.trim_end_matches(SPACE);
            }
            if !text.is_empty() {
                items.push(Item::Text(text.to_string()));
            }
            let lex = lex_action(self.src, open)?;
            self.i = lex.end;
            self.trim_next = lex.right_trim;
            if lex.comment {
                continue;
            }
            let toks = lex.toks;
            let Some(first) = toks.first() else {
                return Err(err(open, "missing value for command"));
            };
            let kw = match &first.t {
                T::Ident(w) => w.as_str(),
                _ => "",
            };
            match kw {
                "if" | "with" => {
                    let cond = self.pipe_all(&toks[1..], open, kw)?;
                    let item = self.cond(kw == "with", cond, open, depth)?;
                    items.push(item);
                }
                "end" => {
                    if toks.len() > 1 {
                        return Err(err(toks[1].pos, "unexpected token in end"));
                    }
                    return Ok((items, Stop::End, open));
                }
                "else" => {
                    if toks.len() == 1 {
                        return Ok((items, Stop::Else, open));
                    }
                    match &toks[1].t {
                        T::Ident(w) if w == "if" || w == "with" => {
                            let with = w == "with";
                            let cond = self.pipe_all(&toks[2..], open, w)?;
                            return Ok((items, Stop::ElseIf { with, cond }, open));
                        }
                        _ => return Err(err(toks[1].pos, "unexpected token in else")),
                    }
                }
                "range" | "define" | "template" | "block" | "break" | "continue" => {
                    return Err(err(
                        open,
                        format!("`{kw}` is not supported in Packer template strings"),
                    ));
                }
                _ => {
                    let pipe = self.pipe_all(&toks, open, "command")?;
                    items.push(Item::Action {
                        pipe,
                        raw: (open, lex.end),
                    });
                }
            }
        }
    }

    /// After `{{if P}}`: the branches up to the matching `{{end}}`.
    fn cond(
        &mut self,
        with: bool,
        cond: Pipe,
        start: usize,
        depth: usize,
    ) -> Result<Item, InterpError> {
        let (then, stop, pos) = self.list(depth + 1)?;
        let otherwise = match stop {
            Stop::Eof => return Err(err(start, "unexpected EOF: missing {{end}}")),
            Stop::End => None,
            Stop::Else => {
                let (items, stop, pos) = self.list(depth + 1)?;
                match stop {
                    Stop::End => Some(items),
                    Stop::Eof => return Err(err(start, "unexpected EOF: missing {{end}}")),
                    _ => return Err(err(pos, "expected {{end}} after {{else}}")),
                }
            }
            Stop::ElseIf { with, cond } => {
                // `else if` shares the outer `end`.
                Some(vec![self.cond(with, cond, pos, depth + 1)?])
            }
        };
        Ok(Item::Cond {
            with,
            cond,
            then,
            otherwise,
        })
    }

    /// A whole pipeline from an action's tokens.
    fn pipe_all(&self, toks: &[Tok], open: usize, ctx: &str) -> Result<Pipe, InterpError> {
        let mut k = 0;
        let pipe = pipeline(toks, &mut k, open, ctx, 0)?;
        if let Some(t) = toks.get(k) {
            return Err(err(
                t.pos,
                format!("unexpected {} in {ctx}", describe(&t.t)),
            ));
        }
        Ok(pipe)
    }
}

pub(super) fn describe(t: &T) -> String {
    match t {
        T::Ident(s) => format!("<{s}>"),
        T::Field(s) => format!("<.{s}>"),
        T::Dot => "<.>".into(),
        T::Var(s) => format!("<{s}>"),
        T::Str(s) => format!("{s:?}"),
        T::Num(s) => s.clone(),
        T::Char(c) => format!("{c:?}"),
        T::Pipe => "\"|\"".into(),
        T::LParen => "\"(\"".into(),
        T::RParen => "\")\"".into(),
        T::Declare => "\":=\"".into(),
        T::Assign => "\"=\"".into(),
        T::Comma => "\",\"".into(),
    }
}

pub(super) fn pipeline(
    toks: &[Tok],
    k: &mut usize,
    open: usize,
    ctx: &str,
    depth: usize,
) -> Result<Pipe, InterpError> {
    if depth > MAX_DEPTH {
        return Err(err(open, "parentheses nested too deeply"));
    }
    let pos = toks.get(*k).map_or(open, |t| t.pos);
    let mut decl = None;
    if let (
        Some(Tok {
            t: T::Var(name),
            pos: vpos,
            ..
        }),
        Some(Tok {
            t: op @ (T::Declare | T::Assign),
            ..
        }),
    ) = (toks.get(*k), toks.get(*k + 1))
    {
        decl = Some((name.clone(), *op == T::Declare, *vpos));
        *k += 2;
    }
    let mut cmds = Vec::new();
    loop {
        let cmd = command(toks, k, open, depth)?;
        if cmd.args.is_empty() {
            return Err(err(
                toks.get(*k).map_or(pos, |t| t.pos),
                format!("missing value for {ctx}"),
            ));
        }
        cmds.push(cmd);
        match toks.get(*k).map(|t| &t.t) {
            Some(T::Pipe) => *k += 1,
            _ => break,
        }
    }
    // A literal may only start a pipeline.
    for c in &cmds[1..] {
        if let Some(a) = c.args.first() {
            if let ArgKind::Lit(_) = a.kind {
                return Err(err(a.pos, "non executable command in pipeline stage"));
            }
        }
    }
    Ok(Pipe { decl, cmds })
}

pub(super) fn command(
    toks: &[Tok],
    k: &mut usize,
    open: usize,
    depth: usize,
) -> Result<Cmd, InterpError> {
    let pos = toks.get(*k).map_or(open, |t| t.pos);
    let mut args: Vec<Arg> = Vec::new();
    while let Some(tok) = toks.get(*k) {
        match tok.t {
            T::Pipe | T::RParen => break,
            _ => {}
        }
        if !args.is_empty() && !tok.spaced {
            return Err(err(tok.pos, "missing space?"));
        }
        let arg = operand(toks, k, open, depth)?;
        args.push(arg);
    }
    Ok(Cmd { pos, args })
}

pub(super) fn operand(
    toks: &[Tok],
    k: &mut usize,
    open: usize,
    depth: usize,
) -> Result<Arg, InterpError> {
    let tok = &toks[*k];
    *k += 1;
    let kind = match &tok.t {
        T::Ident(w) => match w.as_str() {
            "true" => ArgKind::Lit(Val::Bool(true)),
            "false" => ArgKind::Lit(Val::Bool(false)),
            "nil" => ArgKind::Lit(Val::Nil),
            "if" | "else" | "end" | "with" | "range" | "define" | "template" | "block"
            | "break" | "continue" => {
                return Err(err(tok.pos, format!("unexpected <{w}> in operand")))
            }
            name if FUNCS.contains(&name) => ArgKind::Ident(name.to_string()),
            name => {
                let mut e = err(tok.pos, format!("function {name:?} not defined"));
                if let Some(s) = crate::diag::suggest(name, FUNCS.iter().copied()) {
                    e.message.push_str(&format!(" (did you mean `{s}`?)"));
                }
                return Err(e);
            }
        },
        T::Dot => ArgKind::Dot,
        T::Field(f) => ArgKind::Field(f.clone()),
        T::Var(v) => ArgKind::Var(v.clone()),
        T::Str(s) => ArgKind::Lit(Val::Str(s.clone())),
        T::Char(c) => ArgKind::Lit(Val::Int(*c as i64)),
        T::Num(n) => ArgKind::Lit(number_value(n, tok.pos)?),
        T::LParen => {
            let pipe = pipeline(toks, k, open, "parenthesized pipeline", depth + 1)?;
            match toks.get(*k) {
                Some(Tok { t: T::RParen, .. }) => *k += 1,
                _ => return Err(err(tok.pos, "unclosed left paren")),
            }
            ArgKind::Pipe(Box::new(pipe))
        }
        t => {
            return Err(err(
                tok.pos,
                format!("unexpected {} in operand", describe(t)),
            ))
        }
    };
    // Field chains: `$x.A`, `(f).A`, `.A.B`.
    let mut fields = Vec::new();
    while let Some(Tok {
        t: T::Field(f),
        spaced: false,
        ..
    }) = toks.get(*k)
    {
        if matches!(kind, ArgKind::Ident(_) | ArgKind::Lit(_)) {
            return Err(err(toks[*k].pos, "unexpected . after term"));
        }
        fields.push(f.clone());
        *k += 1;
    }
    Ok(Arg {
        pos: tok.pos,
        kind,
        fields,
    })
}
