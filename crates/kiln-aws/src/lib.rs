//! AWS for kiln.
//!
//! - [`sigv4`]: Signature Version 4, checked against AWS's test suite.
//! - [`config`]: Packer 1.6.6's access keys (`access_key`, `profile`,
//!   `assume_role`, `aws_polling`, ...) and the environment.
//! - [`credentials`]: the credential chain and region, as Packer/the AWS
//!   SDK resolve them (template, environment, shared files, assumed roles,
//!   instance metadata).
//! - [`client`]: [`Aws`], a connection in one region: endpoints
//!   (`custom_endpoint_ec2`, `AWS_ENDPOINT_URL[_<SERVICE>]`), signed
//!   requests, retries with backoff and jitter; [`AwsError`].
//! - [`ec2`], [`s3`]: typed calls; [`wait`]: waiters, cancellable.
//! - [`artifact`]: AMIs as an artifact (`region: ami-...`).
//! - [`import`]: the `amazon-import` post-processor; [`qcow2`]: the
//!   streaming qcow2 reader it converts with.
pub mod artifact;
pub mod client;
pub mod config;
pub mod credentials;
pub mod ec2;
pub mod error;
pub mod import;
pub mod qcow2;
pub mod s3;
pub mod sigv4;
pub mod vmdk;
pub mod wait;
mod xml;

pub use client::{Aws, Retry};
pub use config::{AccessConfig, Env};
pub use error::AwsError;

/// Register the `amazon-import` post-processor.
pub fn register(reg: &mut kiln_core::Registry) {
    reg.post_processor("amazon-import", import::factory);
}

/// The HTTP client kiln-aws is built on (for tests and tools that talk to
/// the same endpoints).
pub use reqwest;
