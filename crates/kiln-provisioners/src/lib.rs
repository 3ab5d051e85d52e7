//! Packer 1.6.6's `shell`, `file` and `shell-local` provisioners.
//!
//! Register them with [`register`]. Each is a factory over a
//! [`kiln_template::Decoder`] (every key of Packer's provisioner is asked
//! for) and a [`kiln_core::Provisioner`].
pub mod common;
pub mod file;
pub mod shell;
pub mod shell_local;

/// Register `shell`, `file` and `shell-local`.
pub fn register(reg: &mut kiln_core::Registry) {
    reg.provisioner("shell", shell::factory)
        .provisioner("file", file::factory)
        .provisioner("shell-local", shell_local::factory);
}
