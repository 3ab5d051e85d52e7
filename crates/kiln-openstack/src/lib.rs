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
