//! Values during evaluation.

/// A value during evaluation (Go's dynamic values, reduced to what Packer
/// templates can produce).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// The context data (`.` at the top level, and `$`).
    Data,
}

impl Val {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::Int(_) => "int",
            Val::Float(_) => "float64",
            Val::Bool(_) => "bool",
            Val::Nil => "<nil>",
            Val::Data => "map[string]string",
        }
    }
}
