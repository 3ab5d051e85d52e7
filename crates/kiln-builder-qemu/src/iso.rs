//! The cloud-init NoCloud seed (a CD labelled `cidata`). The CD pieces
//! (`cd_files` staging, patterns, making an ISO) are shared with other
//! builders in `kiln_commonsteps::cd`, re-exported here.
pub use kiln_commonsteps::cd::{mkisofs_args, stage_files};

/// cloud-init NoCloud `user-data`: the build's user, allowed to sudo
/// without a password, logging in with the per-build public key only.
pub fn seed_user_data(user: &str, public_key: &str) -> String {
    format!(
        "#cloud-config\n\
         # Written by kiln for one build: a temporary key, no password.\n\
         users:\n  - name: {user}\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    \
         shell: /bin/bash\n    lock_passwd: true\n    groups: [adm, sudo]\n    \
         ssh_authorized_keys:\n      - {public_key}\n\
         ssh_pwauth: false\n"
    )
}

/// cloud-init NoCloud `meta-data`.
pub fn seed_meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_files() {
        let u = seed_user_data("debian", "ssh-ed25519 AAAA kiln-1");
        assert!(u.starts_with("#cloud-config\n"));
        assert!(u.contains("  - name: debian\n"));
        assert!(u.contains("      - ssh-ed25519 AAAA kiln-1\n"));
        assert!(u.contains("lock_passwd: true"));
        assert_eq!(
            seed_meta_data("i-1", "h"),
            "instance-id: i-1\nlocal-hostname: h\n"
        );
    }
}
