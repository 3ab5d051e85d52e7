//! The steps and pieces every machine builder shares, so that a builder is
//! only what is new about it (Packer's `commonsteps`, typed).
//!
//! A machine builder's state embeds a [`Machine`] and implements
//! [`HasMachine`]; its step list mixes its own steps with these:
//!
//! - [`StepOutputDir`]: the output directory (refused when it exists
//!   without `-force`; removed again unless the build succeeded), with
//!   [`output_dir_problem`] for the same check at validate time;
//! - [`StepConnect`]: connects the communicator through a [`Connector`]
//!   ([`SshConnector`] in production) to [`Machine::host`]:[`Machine::port`];
//! - [`StepProvision`]: runs the template's provisioners, and in its cleanup
//!   the `error-cleanup-provisioner` when the build failed;
//! - [`Liveness`] / [`while_alive`]: a builder that can see its machine die
//!   (QEMU exiting) sets [`Machine::liveness`], and the waits above fail at
//!   once with a [`MachineStopped`] error instead of timing out.
//!
//! For builders that install from media (Packer's `commonsteps` for
//! ISOs), with the decoders of their keys; their results go in a
//! [`Media`] that the state embeds ([`HasMedia`]):
//!
//! - [`StepDownload`] ([`download::IsoConfig`]): `iso_url`/`iso_urls`
//!   with `iso_checksum` (a value, `file:` a checksum file, `none`),
//!   `iso_target_path`;
//! - [`StepCreateFloppy`] ([`floppy::FloppyConfig`]): `floppy_files`,
//!   `floppy_dirs`, `floppy_label` as a FAT12 1.44 MB image;
//! - [`StepHttpServer`] ([`http::HttpConfig`]): `http_directory` served
//!   (streamed, with ranges) on a port of `http_port_min`..`max`;
//! - [`cd`]: `cd_files`/`cd_label` ([`cd::CdConfig`]) and making an ISO
//!   ([`cd::make_iso`]); [`ports`]: picking free ports in a range.
//!
//! For cloud builders, [`create`]: a create request that may leak (a
//! server, a key pair, an image), written once: recorded before it is sent,
//! run to its answer even when its step is dropped, and in the step's
//! cleanup settled, looked for when its outcome is unknown, deleted with
//! retries and released ([`Create`], with a [`Resource`] per kind of thing
//! and a [`CloudError`] for the cloud's error type).
//!
//! See `docs/adding-a-builder.md` for how a new builder is put together.
pub mod cd;
pub mod connect;
pub mod create;
pub mod download;
pub mod floppy;
pub mod http;
pub mod machine;
pub mod media;
pub mod output_dir;
pub mod ports;
pub mod provision;

pub use connect::{Connector, SshConnector, StepConnect};
pub use create::{CloudError, Create, Resource, Retry};
pub use download::StepDownload;
pub use floppy::StepCreateFloppy;
pub use http::StepHttpServer;
pub use machine::{while_alive, HasMachine, Liveness, Machine, MachineStopped};
pub use media::{HasMedia, Media};
pub use output_dir::{output_dir_problem, StepOutputDir};
pub use provision::StepProvision;
