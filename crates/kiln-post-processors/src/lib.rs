//! Post-processors compatible with Packer 1.6.6.
//!
//! - [`checksum`]: `checksum` — hash every artifact file into checksum files.
//! - [`manifest`]: `manifest` — record the build's artifact in a JSON manifest.
//! - [`compress`]: `compress` — tar/zip and gzip/bgzf/lz4/xz archives,
//!   streamed, gzip and bgzf compressed on every core.
//! - [`artifice`]: `artifice` — replace the artifact by files named in the
//!   template (globs).
//! - [`shell_local`]: `shell-local` — run commands or scripts on this machine.
//!
//! [`register`] adds them all to a [`Registry`].
//!
//! Every post-processor is created twice by the build engine: once while the
//! template is prepared (to report configuration errors early) and again at
//! run time with the builder's generated data. Factories therefore have no
//! side effects.
use kiln_core::Registry;
use kiln_template::interp::Context;

pub mod artifice;
pub mod checksum;
pub mod compress;
pub mod manifest;
pub mod shell_local;

/// Register `checksum`, `manifest`, `compress`, `artifice` and `shell-local`.
pub fn register(reg: &mut Registry) {
    reg.post_processor("checksum", checksum::factory)
        .post_processor("manifest", manifest::factory)
        .post_processor("compress", compress::factory)
        .post_processor("artifice", artifice::factory)
        .post_processor("shell-local", shell_local::factory);
}

/// The context-data key (and environment variable) naming the current run,
/// shared by every manifest written in one run.
pub const RUN_UUID_KEY: &str = "PACKER_RUN_UUID";

/// The identifier of this run, for the manifest's `packer_run_uuid` and
/// `last_run_uuid`: the interpolation context's `PACKER_RUN_UUID` value if
/// the engine set one, else the run's ([`kiln_core::build::run_uuid`]: the
/// `PACKER_RUN_UUID` environment variable, else one per process), the same
/// as `{{build `PackerRunUUID`}}`.
pub fn run_uuid(interp: &Context) -> String {
    if let Some(u) = interp.data.get(RUN_UUID_KEY).filter(|u| !u.is_empty()) {
        return u.clone();
    }
    kiln_core::build::run_uuid()
}

/// Files joined by ", " for messages.
pub(crate) fn join_paths(files: &[std::path::PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
