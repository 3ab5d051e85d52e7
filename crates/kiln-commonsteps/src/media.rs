//! What the install-media steps ([`crate::StepDownload`],
//! [`crate::StepCreateFloppy`], [`crate::StepHttpServer`]) leave for the
//! builder's own steps. A builder's state embeds a [`Media`] and
//! implements [`HasMedia`], as it does [`crate::Machine`].
use crate::http::HttpServer;
use std::path::PathBuf;

#[derive(Default)]
pub struct Media {
    /// The ISO or disk image [`crate::StepDownload`] got: a local file
    /// used in place, or the downloaded copy.
    pub source: Option<PathBuf>,
    /// The floppy image [`crate::StepCreateFloppy`] wrote, if any.
    pub floppy: Option<PathBuf>,
    /// The `http_directory` server while it runs (dropping it stops it).
    pub http: Option<HttpServer>,
    /// Its port (`{{ .HTTPPort }}`), 0 without a server.
    pub http_port: u16,
}

/// A builder's state that has [`Media`].
pub trait HasMedia: Send {
    fn media(&mut self) -> &mut Media;
}
