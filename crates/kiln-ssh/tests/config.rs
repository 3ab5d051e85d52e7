//! Decoding Packer's communicator keys.
use kiln_ssh::{CommType, SshConfig, TempKeyType};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::sync::Arc;
use std::time::Duration;

fn decode(json: &str) -> (SshConfig, String) {
    let src = Arc::new(Source {
        path: "t.json".into(),
        text: json.to_string(),
    });
    let node = kiln_template::json::parse(src).unwrap();
    let ctx = Context::new(std::env::current_dir().unwrap());
    let mut diags = Diagnostics::default();
    let c = {
        let mut d = Decoder::new(&node, &ctx, &mut diags);
        let c = SshConfig::decode(&mut d);
        d.finish();
        c
    };
    let msg = if diags.is_empty() {
        String::new()
    } else {
        diags.to_string()
    };
    (c, msg)
}

#[test]
fn defaults_are_packers() {
    let (c, e) = decode(r#"{"ssh_username": "u"}"#);
    assert_eq!(e, "");
    assert_eq!(c.comm_type, CommType::Ssh);
    assert_eq!(c.port, 22);
    assert_eq!(c.timeout, Duration::from_secs(300));
    assert_eq!(c.keep_alive_interval, Some(Duration::from_secs(5)));
    assert_eq!(c.handshake_attempts, None);
    assert!(!c.pty && !c.clear_authorized_keys && !c.agent_auth);
}

#[test]
fn every_supported_key() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        kiln_ssh::TempKeyPair::generate().private_openssh,
    )
    .unwrap();
    let (c, e) = decode(&format!(
        r#"{{"communicator": "ssh", "pause_before_connecting": "2s", "ssh_host": "10.0.0.5",
            "ssh_port": "2222", "ssh_username": "ubuntu", "ssh_password": "pw",
            "ssh_private_key_file": "{}", "ssh_agent_auth": false, "ssh_timeout": "10m",
            "ssh_handshake_attempts": 3, "ssh_keep_alive_interval": "-1s", "ssh_pty": true,
            "ssh_clear_authorized_keys": "true", "ssh_read_write_timeout": "30s",
            "ssh_ciphers": ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"],
            "ssh_key_exchange_algorithms": ["curve25519-sha256"],
            "ssh_disable_agent_forwarding": true, "ssh_file_transfer_method": "sftp",
            "temporary_key_pair_type": "ed25519", "temporary_key_pair_name": "k",
            "ssh_keypair_name": "existing", "winrm_username": "ignored"}}"#,
        key.path().display()
    ));
    assert_eq!(e, "");
    assert_eq!(c.pause_before_connecting, Some(Duration::from_secs(2)));
    assert_eq!(c.host.as_deref(), Some("10.0.0.5"));
    assert_eq!(c.port, 2222);
    assert_eq!(c.password.as_deref(), Some("pw"));
    assert_eq!(c.timeout, Duration::from_secs(600));
    assert_eq!(c.handshake_attempts, Some(3));
    assert_eq!(c.keep_alive_interval, None);
    assert_eq!(c.read_write_timeout, Some(Duration::from_secs(30)));
    assert!(c.pty && c.clear_authorized_keys);
    assert_eq!(c.keypair_name.as_deref(), Some("existing"));
    assert_eq!(c.temporary_key_pair_name.as_deref(), Some("k"));
    assert_eq!(c.temporary_key_pair_type, Some(TempKeyType::Ed25519));
}

#[test]
fn temporary_key_pair_type_and_bits_as_packer_checks_them() {
    // Not set: the builder chooses.
    let (c, e) = decode(r#"{"ssh_username": "u"}"#);
    assert_eq!(e, "");
    assert_eq!(c.temporary_key_pair_type, None);
    assert_eq!(c.temporary_key_pair_bits, 0);
    for (json, kind, bits) in [
        (r#""temporary_key_pair_type": "rsa""#, TempKeyType::Rsa, 0),
        (
            r#""temporary_key_pair_type": "RSA", "temporary_key_pair_bits": 2048"#,
            TempKeyType::Rsa,
            2048,
        ),
        (
            r#""temporary_key_pair_type": "ecdsa", "temporary_key_pair_bits": "384""#,
            TempKeyType::Ecdsa,
            384,
        ),
        (
            r#""temporary_key_pair_type": "ed25519", "temporary_key_pair_bits": 4096"#,
            TempKeyType::Ed25519,
            4096,
        ),
        // Bits alone: Packer's default type, rsa.
        (r#""temporary_key_pair_bits": 3072"#, TempKeyType::Rsa, 3072),
    ] {
        let (c, e) = decode(&format!(r#"{{"ssh_username": "u", {json}}}"#));
        assert_eq!(e, "", "{json}");
        assert_eq!(c.temporary_key_pair_type, Some(kind), "{json}");
        assert_eq!(c.temporary_key_pair_bits, bits, "{json}");
    }
    for (json, want) in [
        (
            r#""temporary_key_pair_type": "dsa""#,
            "`dsa` is not supported by kiln",
        ),
        (
            r#""temporary_key_pair_type": "rot13""#,
            "possible algorithm types are `dsa` | `ecdsa` | `ed25519` | `rsa`",
        ),
        (
            r#""temporary_key_pair_type": "ecdsa", "temporary_key_pair_bits": 512"#,
            "ECDSA keys are 256, 384 or 521 bits",
        ),
        (r#""temporary_key_pair_bits": -1"#, "is not a key size"),
    ] {
        let (_, e) = decode(&format!(r#"{{"ssh_username": "u", {json}}}"#));
        assert!(e.contains(want), "{json}: {e}");
    }
}

#[test]
fn none_and_errors() {
    let (c, e) = decode(r#"{"communicator": "none"}"#);
    assert_eq!(e, "");
    assert!(c.is_none());
    let (_, e) = decode(r#"{}"#);
    assert!(e.contains("An ssh_username must be specified"), "{e}");
    let (_, e) = decode(r#"{"communicator": "winrm", "winrm_username": "a"}"#);
    assert!(e.contains("not supported by kiln yet"), "{e}");
    let (_, e) = decode(r#"{"communicator": "telnet"}"#);
    assert!(e.contains("Communicator type telnet is invalid"), "{e}");
    let (_, e) = decode(
        r#"{"ssh_username": "u", "ssh_bastion_host": "b", "ssh_bastion_username": "x",
            "ssh_local_tunnels": ["8080:localhost:80"], "temporary_key_pair_type": "rsa",
            "temporary_key_pair_bits": 512, "ssh_ciphers": ["rot13"],
            "ssh_file_transfer_method": "ftp", "ssh_private_key_file": "/nonexistent"}"#,
    );
    for want in [
        "SSH bastion hosts are not supported by kiln yet",
        "SSH tunnels are not supported by kiln yet",
        "temporary_key_pair_bits 512: RSA keys need at least 1024 bits",
        "`rot13` not supported by kiln",
        "ssh_file_transfer_method ('ftp') is invalid",
        "ssh_private_key_file is invalid",
    ] {
        assert!(e.contains(want), "missing `{want}` in:\n{e}");
    }
    let (_, e) = decode(r#"{"ssh_username": "u", "ssh_usrname": "x"}"#);
    assert!(e.contains("ssh_usrname"), "{e}");
}
