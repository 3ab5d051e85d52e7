//! The syntax tree the parser builds and the evaluator walks.

use super::*;

#[derive(Debug)]
pub(super) enum Item {
    Text(String),
    Action {
        pipe: Pipe,
        /// `{{` .. `}}` byte range, for `keep_field_actions`.
        raw: (usize, usize),
    },
    /// `if` or `with`.
    Cond {
        with: bool,
        cond: Pipe,
        then: Vec<Item>,
        otherwise: Option<Vec<Item>>,
    },
}

#[derive(Debug)]
pub(super) struct Pipe {
    /// `$x :=` (true) or `$x =` (false).
    pub(super) decl: Option<(String, bool, usize)>,
    pub(super) cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub(super) struct Cmd {
    pub(super) pos: usize,
    pub(super) args: Vec<Arg>,
}

#[derive(Debug)]
pub(super) struct Arg {
    pub(super) pos: usize,
    pub(super) kind: ArgKind,
    /// `.A.B` after the term.
    pub(super) fields: Vec<String>,
}

#[derive(Debug)]
pub(super) enum ArgKind {
    Ident(String),
    Dot,
    Field(String),
    Var(String),
    Lit(Val),
    Pipe(Box<Pipe>),
}
