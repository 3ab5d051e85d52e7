//! OpenStack for kiln.
//!
//! - [`client`]: the API client (Keystone v3/v2.0, Nova, Neutron, Glance,
//!   Cinder).
//! - [`builder`]: the `openstack` builder, Packer 1.6.6 compatible.
//! - [`qcow2`]: a streaming raw -> qcow2 writer (no raw copy on disk).
//! - [`create_box`]: the `create_box` post-processor: a Glance raw image
//!   (or a local disk image) becomes a qcow2 Glance image.
pub mod client;

pub use client::{Cloud, OsError, Session};
pub mod builder;
pub mod create_box;
pub mod qcow2;

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
    let (config, connector) = decode_builder(d);
    Some(Box::new(builder::OpenStackBuilder { config, connector }))
}

/// The `openstack` builder's configuration and connector from a template
/// object (what the registered factory does; `finish()` is the caller's).
pub fn decode_builder(
    d: &mut Decoder<'_>,
) -> (builder::Config, std::sync::Arc<dyn builder::Connector>) {
    let (comm, connector) = comm::decode(d);
    (builder::config::decode(d, comm), connector)
}

mod comm;
pub use comm::set_connector_factory;
