//! A small async OpenStack client: Keystone v3 and v2.0 authentication with
//! the service catalog and token renewal ([`session`]), credentials from a
//! template, the `OS_*` environment or clouds.yaml ([`auth`]), and the
//! Nova, Neutron, Glance and Cinder calls the builder and the `create_box`
//! post-processor need ([`api`]).
pub mod api;
pub mod auth;
pub mod error;
pub mod session;

pub use api::Cloud;
pub use auth::{AccessKeys, AuthOptions};
pub use error::OsError;
pub use session::{Service, Session};

/// Resolve `keys` against the process environment and clouds.yaml.
pub fn resolve_from_env(keys: &AccessKeys) -> Result<AuthOptions, OsError> {
    auth::resolve(keys, &|k| std::env::var(k).ok(), &|p| {
        std::fs::read_to_string(p).ok()
    })
}
