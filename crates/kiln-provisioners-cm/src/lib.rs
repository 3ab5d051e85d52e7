//! Packer 1.6.6's configuration-management provisioners:
//!
//! - [`ansible`]: Ansible on the build host, reaching the machine over SSH
//!   directly or through kiln's SSH proxy ([`adapter`]);
//! - [`ansible_local`]: Ansible on the machine, against itself;
//! - [`salt`]: `salt-masterless`, `salt-call --local` on the machine;
//! - [`puppet`]: `puppet-masterless`, `puppet apply` on the machine;
//! - [`chef`]: `chef-solo` and `chef-client`, refused at validate time with
//!   the reason.
//!
//! Each has every key of its Packer 1.6.6 provisioner (unknown keys are
//! refused by name at validate time, by the decoder), checks its local
//! paths at validate time as Packer does, streams the output of what it
//! runs as it comes, and keeps secrets out of the output. Register them
//! with [`register`]. Windows guests (`guest_os_type: windows`) are
//! refused at validate time.
pub mod adapter;
pub mod ansible;
pub mod ansible_local;
pub mod chef;
pub mod common;
pub mod puppet;
pub mod salt;

/// Register `ansible`, `ansible-local`, `salt-masterless`,
/// `puppet-masterless`, and the refusals of `chef-solo` and `chef-client`.
pub fn register(reg: &mut kiln_core::Registry) {
    reg.provisioner("ansible", ansible::factory)
        .provisioner("ansible-local", ansible_local::factory)
        .provisioner("salt-masterless", salt::factory)
        .provisioner("puppet-masterless", puppet::factory)
        .provisioner("chef-solo", chef::chef_solo)
        .provisioner("chef-client", chef::chef_client);
}
