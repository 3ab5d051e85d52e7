//! kiln's build engine.
//!
//! - [`component`]: the `Builder`, `Provisioner`, `PostProcessor` traits and
//!   the [`Registry`] mapping a template's `type` to a factory.
//! - [`step`]: the step runner that guarantees reverse-order cleanup.
//! - [`communicator`]: how provisioners reach a machine.
//! - [`artifact`]: what builds produce.
//! - [`build`]: preparing a template into builds and running them (in
//!   parallel), with provisioner wrapping and post-processor chains.
//! - [`glob`]: glob patterns, one implementation per meaning.
//! - [`hash`]: file digests (md5 to sha512), several in one read.
//! - [`timeline`]: each step's and provisioner's wall time, printed at
//!   the end of every build.
//! - [`ui`]: Packer-style output with secrets scrubbed by construction.
//! - [`context`]: per-build context: cancellation, `-on-error`, ledger.
//! - [`parity`]: validate parity with Packer 1.6.6: which fields Packer
//!   renders while preparing each component, rendered at validate time.
//! - [`unsupported`]: what kiln cannot build (Windows guests, Packer's
//!   components kiln does not have), said once.

pub mod artifact;
pub mod build;
pub mod communicator;
pub mod component;
pub mod context;
pub mod error;
pub mod glob;
pub mod hash;
pub mod local;
pub mod parity;
pub mod step;
pub mod timeline;
pub mod ui;
pub mod unsupported;

pub use artifact::{Artifact, FileArtifact};
pub use async_trait::async_trait;
pub use communicator::{Communicator, ExitStatus, OutputSink};
pub use component::{
    Builder, Hook, PostProcessCtx, PostProcessed, PostProcessor, PrepareOpts, ProvisionCtx,
    ProvisionStep, Provisioner, Registry, StepDone,
};
pub use context::{BuildCtx, Ledger, OnError};
pub use error::BuildError;
pub use step::{run_steps, Outcome, SkipWhen, Step};
pub use ui::{Output, Ui};
