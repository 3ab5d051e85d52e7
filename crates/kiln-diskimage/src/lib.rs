//! Disk images for kiln, streamed front to back so that converting one
//! never needs a raw copy of the disk on disk:
//!
//! - [`qcow2`]: a qcow2 reader yielding the guest-visible disk in order
//!   (the `amazon-import` post-processor, the `vagrant` post-processor's
//!   VirtualBox box), and [`qcow2::writer`], a raw -> qcow2 writer (the
//!   `create_box` post-processor).
//! - [`vmdk`]: a stream-optimized VMDK writer (AWS VM Import, OVF/VirtualBox).
//!
//! Each is checked against the real `qemu-img` in `tests/`.
pub mod qcow2;
pub mod vmdk;
