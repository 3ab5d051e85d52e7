//! OpenStack for kiln.
//!
//! - [`client`]: the API client (Keystone v3/v2.0, Nova, Neutron, Glance,
//!   Cinder).
//! - [`builder`]: the `openstack` builder, Packer 1.6.6 compatible.
//! - [`error`]: the crate's own typed errors ([`FileError`]); the
//!   client's is [`OsError`]. Errors reach kiln whole
//!   ([`kiln_core::BuildError::new`] or `BuildError::from`, with a
//!   context), so code that must decide something finds them by type.
//! - [`create_box`]: the `create_box` post-processor: a Glance raw image
//!   (or a local disk image) becomes a qcow2 Glance image, through
//!   `kiln_diskimage`'s streaming raw -> qcow2 writer (no raw copy on disk).
pub mod builder;
pub mod client;
pub mod create_box;
pub mod error;

pub use client::{Cloud, OsError, Session};
pub use error::FileError;

use kiln_core::{Builder, PostProcessor, PrepareOpts, Registry};
use kiln_template::Decoder;

/// Register the `openstack` builder and the `create_box` post-processor.
pub fn register(reg: &mut Registry) {
    reg.builder("openstack", builder_factory);
    reg.post_processor("create_box", create_box_factory);
}

fn create_box_factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    let config = create_box::decode(d);
    Some(Box::new(create_box::CreateBox { config }))
}

fn builder_factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Builder>> {
    Some(Box::new(builder::OpenStackBuilder::new(decode_builder(d))))
}

/// The `openstack` builder's configuration from a template object: the
/// communicator's keys (kiln's SSH communicator decodes every one) and the
/// builder's own (what the registered factory does; `finish()` is the
/// caller's).
pub fn decode_builder(d: &mut Decoder<'_>) -> builder::Config {
    let comm = kiln_ssh::SshConfig::decode(d);
    builder::config::decode(d, comm)
}
