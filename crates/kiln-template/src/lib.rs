//! Packer legacy JSON templates.
//!
//! Pure functions only: text in, typed values or [`Diagnostics`] out. The only
//! I/O is reading files that the template or the command line names
//! (`-var-file`, the template itself).
//!
//! Modules:
//! - [`json`]: a JSON parser that keeps the `line:col` of every key and value
//!   and rejects duplicate keys (serde_json forgets both).
//! - [`diag`]: diagnostics with source excerpts and "did you mean" hints.
//! - [`interp`]: Packer's interpolation language (a Go `text/template` subset).
//! - [`template`]: the root of a template (builders, provisioners, ...).
//! - [`vars`]: user variables, `-var`/`-var-file`, sensitive variables.
//! - [`decode`]: typed, weakly typed, unknown-key-checking access to a
//!   component's configuration object.

pub mod decode;
pub mod diag;
pub mod interp;
pub mod json;
pub mod template;
pub mod vars;

mod go;

pub use decode::{Decoder, KeyNote, KeyNotes};
pub use diag::{Diagnostic, Diagnostics, Pos, Source};
/// Go's `time.ParseDuration` as (negative?, magnitude): kiln's one parser
/// of Go durations, for the template's keys and the boot command's waits.
pub use go::parse_duration as parse_go_duration;
pub use interp::{BuildKeys, Context};
pub use json::{Node, Value};
pub use template::Template;
pub use vars::{VarSource, Variables};
