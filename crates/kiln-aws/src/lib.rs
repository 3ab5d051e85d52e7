//! AWS for kiln: the client the `amazon-ebs` builder and the
//! `amazon-import` post-processor use, and `amazon-import` itself.
//!
//! - [`sigv4`]: Signature Version 4, checked against AWS's published test
//!   suite (`tests/sigv4-suite`).
//! - [`config`]: Packer 1.6.6's access keys (`access_key`, `secret_key`,
//!   `token`, `profile`, `region`, `custom_endpoint_ec2`,
//!   `shared_credentials_file`, `skip_metadata_api_check`, `max_retries`,
//!   `insecure_skip_tls_verify`, `assume_role`, `aws_polling`; refused by
//!   name: `vault_aws_engine`, `mfa_code`, `decode_authorization_messages`)
//!   and the environment.
//! - [`credentials`]: the credential chain and region, as Packer/the AWS
//!   SDK resolve them (template, environment, shared files, roles assumed
//!   through STS, instance metadata), renewed before they expire.
//! - [`client`]: [`Aws`], a connection in one region: endpoints
//!   (`custom_endpoint_ec2`, `AWS_ENDPOINT_URL_<SERVICE>`,
//!   `AWS_ENDPOINT_URL`), signed requests, retries with backoff and full
//!   jitter on throttling, 5xx and dropped connections; [`AwsError`] tells a
//!   refusal from a server error from no answer at all.
//! - [`ec2`], [`s3`]: typed calls; [`wait`]: waiters, cancellable.
//! - creates follow kiln-commonsteps' [`kiln_commonsteps::create`]
//!   routine ("record before send, settle, find, delete, release"):
//!   [`AwsError`] implements its [`kiln_commonsteps::CloudError`].
//! - [`ebs`]: the `amazon-ebs` builder.
//! - [`artifact`]: AMIs as an artifact (`region: ami-...`, Packer's id).
//! - [`import`]: the `amazon-import` post-processor (it converts with
//!   `kiln_diskimage`'s streaming qcow2 reader and stream-optimized VMDK
//!   writer).
//!
//! # Why its own signer and calls, not the AWS SDK for Rust
//!
//! Measured on this 2-core machine (shared with four other builds, so wall
//! times are long and noisy; CPU time, user + system, is the steadier
//! figure), a clean `cargo build` (dev profile, as `cargo test` compiles)
//! of a scratch crate with kiln's HTTP stack (tokio, reqwest with rustls,
//! serde_json, sha2, time) and then each candidate on top:
//!
//! | candidate | crates | CPU | wall | target dir |
//! | --- | --- | --- | --- | --- |
//! | kiln's stack alone | 170 | 75 s | 156 s | 450 MiB |
//! | + `hmac` + `roxmltree` (own signer and calls: chosen) | 172 | 73 s | 78 s | 453 MiB |
//! | + `aws-sigv4` + `aws-credential-types` + `aws-smithy-runtime-api` + `roxmltree` | 194 | 95 s | 110 s | 527 MiB |
//! | + `aws-config` + `aws-sdk-ec2` + `aws-sdk-s3` + `aws-sdk-sts` (1.x; `aws-sdk-ec2` 1.274) | 266 | 663 s | 1799 s | 2807 MiB |
//!
//! The SDK adds about ten minutes of CPU (five minutes of wall time on two
//! idle cores, thirty on this loaded one) and 2.3 GiB to every clean build
//! — a large part of CI's 90 minutes, which include compiling everything —
//! for what kiln needs of it: about thirty calls, one credential chain and
//! a signer. `aws-sigv4` costs less (+20 s CPU, 24 crates) but signs only;
//! the calls, the credential chain and the retries are still kiln's to
//! write. Its own signer costs nothing measurable: `hmac` 0.13 and `sha2`
//! 0.11 are already in kiln's lock (through russh), so the crate adds only
//! `roxmltree` (no dependencies of its own). The signer is small (one
//! function) and checked against AWS's own test vectors; the calls are
//! checked against moto, and against Packer 1.6.6's calls in the lab.
//!
//! # What the builder uses
//!
//! `Aws::connect(&AccessConfig)` (or `connect_with` and an [`Env`]), then
//! `aws.ec2()` / `aws.s3()`; `aws.in_region(r)` for copies; waiters on
//! [`Aws`] take a `CancellationToken` (`&ctx.cancel`). Creates follow the
//! "record before send, settle, find, release" rule: `RunInstances`,
//! `CopyImage` and `ImportImage` carry a client token (sent again, they
//! make nothing new; `find_instances_by_client_token` finds what an
//! unanswered `RunInstances` made); creates without one (security group,
//! key pair, `CreateImage`) are retried only after answers that prove
//! nothing was done, and on [`AwsError::outcome_unknown`] the caller looks
//! for them by name (`describe_security_groups` with a `group-name`
//! filter, `describe_key_pairs`, `find_own_images_by_name`).
pub mod artifact;
pub mod client;
pub mod config;
pub mod credentials;
pub mod ebs;
pub mod ec2;
pub mod error;
pub mod import;
pub mod s3;
pub mod sigv4;
pub mod wait;
mod xml;

pub use client::{Aws, Retry};
pub use config::{AccessConfig, Env};
pub use error::AwsError;

/// Register the `amazon-ebs` builder and the `amazon-import`
/// post-processor.
pub fn register(reg: &mut kiln_core::Registry) {
    reg.builder("amazon-ebs", ebs::factory);
    reg.post_processor("amazon-import", import::factory);
}

/// The HTTP client kiln-aws is built on (for tests and tools that talk to
/// the same endpoints).
pub use reqwest;
