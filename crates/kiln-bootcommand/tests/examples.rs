//! The parser and the template handling against the boot commands of
//! Packer 1.6.6's documentation and of real templates, each decoded from
//! JSON as a builder would, checked (no problem may be reported), rendered
//! with the run-time values, and compared with what must be typed.
//!
//! Sources (read for the commands only):
//! - Packer 1.6.6, `packer-plugin-sdk/bootcommand/config.go` (the text of
//!   the boot command section of the qemu builder's documentation): the
//!   CentOS 6.4 and Ubuntu 12.04 examples.
//! - chef/bento, `archive/packer_templates/debian/debian-10.11-amd64.json`
//!   (its `qemu` builder), `archive/packer_templates/ubuntu/ubuntu-18.04-amd64.json`,
//!   `archive/packer_templates/ubuntu/ubuntu-20.04-live-amd64.json`,
//!   `archive/packer_templates/rockylinux/rockylinux-8.7-x86_64.json`
//!   (`boot_command` as a user variable), and
//!   `os_pkrvars/debian/debian-12-x86_64.pkrvars.hcl` (as JSON here).
//! - vmware/packer-examples-for-vsphere,
//!   `builds/linux/debian/11/linux-debian.pkr.hcl`: GRUB's command line
//!   (`c`), `<wait30s>`, and Alt+F2 / Alt+F1 to switch consoles.
use kiln_bootcommand::template::{decode, BootCommand, Values};
use kiln_bootcommand::typist::{describe, duration, Step};
use kiln_bootcommand::Key;
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn values() -> Values {
    Values {
        http_ip: "10.0.2.2".into(),
        http_port: 8421,
        name: "packer-qemu".into(),
    }
}

/// Decode `{"boot_command": <json>}`; panics on any diagnostic.
fn decode_json(json: &str) -> BootCommand {
    let n = kiln_template::json::parse(Arc::new(Source {
        path: "t.json".into(),
        text: format!("{{\"boot_command\": {json}}}"),
    }))
    .unwrap();
    let ctx = Context::default();
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&n, &ctx, &mut diags);
    let bc = decode(&mut d, "boot_command");
    d.finish();
    assert!(diags.0.is_empty(), "{:?}", diags.0);
    bc.unwrap()
}

fn typed(json: &str, ctx: &Context) -> (String, Vec<Step>) {
    let steps = decode_json(json).render(ctx, &values()).unwrap();
    (describe(&steps), steps)
}

#[test]
fn packer_docs_centos_6_4() {
    let (text, steps) = typed(
        r#"["<tab><wait>", " ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/centos6-ks.cfg<enter>"]"#,
        &Context::default(),
    );
    assert_eq!(
        text,
        "[tab][wait 1s] ks=http://10.0.2.2:8421/centos6-ks.cfg[ret]"
    );
    // The first events exactly: Tab down and up, the wait, a space.
    assert_eq!(
        steps[..5],
        [
            Step::Key {
                key: Key("tab"),
                down: true
            },
            Step::Key {
                key: Key("tab"),
                down: false
            },
            Step::Wait(Duration::from_secs(1)),
            Step::Key {
                key: Key("spc"),
                down: true
            },
            Step::Key {
                key: Key("spc"),
                down: false
            },
        ]
    );
    // `:` is Shift+semicolon.
    let colon = steps.windows(4).position(|w| {
        w == [
            Step::Key {
                key: Key::SHIFT,
                down: true,
            },
            Step::Key {
                key: Key("semicolon"),
                down: true,
            },
            Step::Key {
                key: Key("semicolon"),
                down: false,
            },
            Step::Key {
                key: Key::SHIFT,
                down: false,
            },
        ]
    });
    assert!(colon.is_some());
    // 39 characters of which 2 shifted (the two `:`): 2*39 + 2*2 key
    // events, plus Tab and Enter, at Packer's 100 ms, plus the wait.
    assert_eq!(
        duration(&steps, Duration::from_millis(100)),
        Duration::from_millis((2 * 39 + 4 + 4) * 100 + 1000)
    );
}

#[test]
fn packer_docs_ubuntu_12_04() {
    let (text, _) = typed(
        r#"[
          "<esc><esc><enter><wait>",
          "/install/vmlinuz noapic ",
          "preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg ",
          "debian-installer=en_US auto locale=en_US kbd-chooser/method=us ",
          "hostname={{ .Name }} ",
          "fb=false debconf/frontend=noninteractive ",
          "keyboard-configuration/modelcode=SKIP keyboard-configuration/layout=USA ",
          "keyboard-configuration/variant=USA console-setup/ask_detect=false ",
          "initrd=/install/initrd.gz -- <enter>"
        ]"#,
        &Context::default(),
    );
    assert_eq!(
        text,
        "[esc][esc][ret][wait 1s]/install/vmlinuz noapic preseed/url=http://10.0.2.2:8421/preseed.cfg \
         debian-installer=en_US auto locale=en_US kbd-chooser/method=us hostname=packer-qemu \
         fb=false debconf/frontend=noninteractive keyboard-configuration/modelcode=SKIP \
         keyboard-configuration/layout=USA keyboard-configuration/variant=USA \
         console-setup/ask_detect=false initrd=/install/initrd.gz -- [ret]"
    );
}

#[test]
fn bento_debian_10_qemu() {
    let mut vars = BTreeMap::new();
    vars.insert(
        "preseed_path".to_string(),
        "debian-9/preseed.cfg".to_string(),
    );
    let ctx = Context {
        user_vars: Arc::new(vars),
        ..Context::default()
    };
    let (text, _) = typed(
        r#"[
        "<esc><wait>",
        "install <wait>",
        " preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/{{user `preseed_path`}} <wait>",
        "debian-installer=en_US.UTF-8 <wait>",
        "auto <wait>",
        "locale=en_US.UTF-8 <wait>",
        "kbd-chooser/method=us <wait>",
        "keyboard-configuration/xkb-keymap=us <wait>",
        "netcfg/get_hostname={{ .Name }} <wait>",
        "netcfg/get_domain=vagrantup.com <wait>",
        "fb=false <wait>",
        "debconf/frontend=noninteractive <wait>",
        "console-setup/ask_detect=false <wait>",
        "console-keymaps-at/keymap=us <wait>",
        "grub-installer/bootdev=/dev/vda <wait>",
        "<enter><wait>"
      ]"#,
        &ctx,
    );
    assert_eq!(
        text,
        "[esc][wait 1s]install [wait 1s] preseed/url=http://10.0.2.2:8421/debian-9/preseed.cfg [wait 1s]\
         debian-installer=en_US.UTF-8 [wait 1s]auto [wait 1s]locale=en_US.UTF-8 [wait 1s]\
         kbd-chooser/method=us [wait 1s]keyboard-configuration/xkb-keymap=us [wait 1s]\
         netcfg/get_hostname=packer-qemu [wait 1s]netcfg/get_domain=vagrantup.com [wait 1s]\
         fb=false [wait 1s]debconf/frontend=noninteractive [wait 1s]console-setup/ask_detect=false [wait 1s]\
         console-keymaps-at/keymap=us [wait 1s]grub-installer/bootdev=/dev/vda [wait 1s][ret][wait 1s]"
    );
}

#[test]
fn bento_ubuntu_18_04_and_20_04_live() {
    let mut vars = BTreeMap::new();
    vars.insert("preseed_path".to_string(), "preseed.cfg".to_string());
    let ctx = Context {
        user_vars: Arc::new(vars),
        ..Context::default()
    };
    let (text, _) = typed(
        r#"["<esc><wait>", "<esc><wait>", "<enter><wait>", "/install/vmlinuz<wait>", " auto<wait>",
            " initrd=/install/initrd.gz<wait>", " noapic<wait>",
            " preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/{{user `preseed_path`}}<wait>",
            " -- <wait>", "<enter><wait>"]"#,
        &ctx,
    );
    assert_eq!(
        text,
        "[esc][wait 1s][esc][wait 1s][ret][wait 1s]/install/vmlinuz[wait 1s] auto[wait 1s] \
         initrd=/install/initrd.gz[wait 1s] noapic[wait 1s] \
         preseed/url=http://10.0.2.2:8421/preseed.cfg[wait 1s] -- [wait 1s][ret][wait 1s]"
    );
    let (text, _) = typed(
        r#"[" <wait>", " <wait>", "<esc><wait>", "<f6><wait>", "<esc><wait>", "<bs><bs><bs><bs><wait>",
            " autoinstall<wait5>", " ds=nocloud-net<wait5>",
            ";s=http://<wait5>{{.HTTPIP}}<wait5>:{{.HTTPPort}}/<wait5>", " ---<wait5>", "<enter><wait5>"]"#,
        &Context::default(),
    );
    assert_eq!(
        text,
        " [wait 1s] [wait 1s][esc][wait 1s][f6][wait 1s][esc][wait 1s][backspace][backspace][backspace][backspace][wait 1s] \
         autoinstall[wait 5s] ds=nocloud-net[wait 5s];s=http://[wait 5s]10.0.2.2[wait 5s]:8421/[wait 5s] ---[wait 5s][ret][wait 5s]"
    );
}

#[test]
fn bento_rocky_8_boot_command_from_a_user_variable() {
    // The whole command is one string holding an action: nothing to check
    // before it is rendered.
    let bc = decode_json(r#""{{ user `boot_command` }}""#);
    let mut vars = BTreeMap::new();
    vars.insert(
        "boot_command".to_string(),
        "<up><wait><tab> inst.text inst.ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/{{user `ks_path`}}<enter><wait>"
            .to_string(),
    );
    vars.insert("ks_path".to_string(), "8/ks.cfg".to_string());
    let ctx = Context {
        user_vars: Arc::new(vars),
        ..Context::default()
    };
    let steps = bc.render(&ctx, &values()).unwrap();
    assert_eq!(
        describe(&steps),
        "[up][wait 1s][tab] inst.text inst.ks=http://10.0.2.2:8421/8/ks.cfg[ret][wait 1s]"
    );
}

#[test]
fn bento_debian_12() {
    let (text, _) = typed(
        r#"["<wait><esc><wait>auto preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/debian/preseed.cfg netcfg/get_hostname={{ .Name }}<enter>"]"#,
        &Context::default(),
    );
    assert_eq!(
        text,
        "[wait 1s][esc][wait 1s]auto preseed/url=http://10.0.2.2:8421/debian/preseed.cfg netcfg/get_hostname=packer-qemu[ret]"
    );
}

#[test]
fn vsphere_debian_11_grub_and_console_switching() {
    let (text, steps) = typed(
        r#"["<wait3s>c<wait3s>", "linux /install.amd/vmlinuz", " auto-install/enable=true",
            " url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/ks.cfg", " noprompt --<enter>",
            "initrd /install.amd/initrd.gz<enter>", "boot<enter>", "<wait30s>", "<enter><wait>",
            " <leftAltOn><f2><leftAltOff> <enter><wait> mount /dev/sr1 /media<enter> <leftAltOn><f1><leftAltOff>",
            "<down><down><down><down><enter>"]"#,
        &Context::default(),
    );
    assert_eq!(
        text,
        "[wait 3s]c[wait 3s]linux /install.amd/vmlinuz auto-install/enable=true url=http://10.0.2.2:8421/ks.cfg \
         noprompt --[ret]initrd /install.amd/initrd.gz[ret]boot[ret][wait 30s][ret][wait 1s] \
         [alt][f2] [ret][wait 1s] mount /dev/sr1 /media[ret] [alt][f1][down][down][down][down][ret]"
    );
    // Alt+F2: Alt held while F2 goes down and up.
    let i = steps
        .iter()
        .position(|s| {
            *s == Step::Key {
                key: Key("alt"),
                down: true,
            }
        })
        .unwrap();
    assert_eq!(
        steps[i..i + 4],
        [
            Step::Key {
                key: Key("alt"),
                down: true
            },
            Step::Key {
                key: Key("f2"),
                down: true
            },
            Step::Key {
                key: Key("f2"),
                down: false
            },
            Step::Key {
                key: Key("alt"),
                down: false
            },
        ]
    );
}
