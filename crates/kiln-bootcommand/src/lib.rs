//! Packer 1.6.6's boot command language (docs below are completed later).
pub mod keys;
pub mod parse;
pub mod qmp;
pub mod template;
pub mod typist;

pub use keys::{Key, Special};
pub use parse::{parse, Command, ErrorKind, KeyAction, ParseError, Spanned};
pub use qmp::{QmpError, QmpKeySink};
pub use template::{BootCommand, Values};
pub use typist::{KeySink, Step, TypeError, Typist};
