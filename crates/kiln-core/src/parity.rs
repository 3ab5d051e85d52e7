//! Validate parity: `kiln validate` renders every field that Packer 1.6.6
//! renders while it prepares a build, so a template error Packer reports at
//! validate time (`packer validate`, or the prepare step of `packer
//! build`) is reported at validate time by kiln too, at its position.
//!
//! # When Packer renders a component's fields
//!
//! Packer prepares a build in this order (`packer/build.go`,
//! `CoreBuild.Prepare`), stopping at the first component that fails:
//!
//! 1. the builder: its whole configuration is rendered (every string, in
//!    nested objects and lists too, map keys included) except the keys its
//!    decoder excludes; `{{build `...`}}` fails there (a builder has no
//!    build data), `{{env `...`}}` fails everywhere outside variable
//!    defaults, `{{user `...`}}` of an unknown variable is the empty string;
//! 2. each provisioner (and the `error-cleanup-provisioner`): the same,
//!    with the build data as placeholders: `{{build `Name`}}` must name
//!    one of Packer's common keys ([`kiln_template::interp::COMMON_BUILD_KEYS`])
//!    or one the builder declares (none, for null, file, qemu and
//!    openstack), and `{{ .Field }}` of a name Packer does not know renders
//!    `<no value>`;
//! 3. each post-processor: as the provisioners.
//!
//! The keys each component leaves out (rendered at run time, with the run's
//! context values such as `.Path`, `.Vars`, `.HTTPIP`, `.BuildName`), from
//! the prepare step of each component in Packer 1.6.6's source, are
//! [`PACKER_RENDERS_LATER`]:
//!
//! | component | rendered at run time (all other keys while preparing) |
//! | --- | --- |
//! | builder `null` | none |
//! | builder `file` | none |
//! | builder `qemu` | `boot_command`, `qemuargs` |
//! | builder `openstack` | none |
//! | provisioner `shell` | `execute_command` |
//! | provisioner `file` | none (`source`, `sources`, `destination` are rendered again at run time) |
//! | provisioner `shell-local` | `execute_command` |
//! | provisioner `ansible` | `inventory_file_template` (`extra_arguments`, `ansible_env_vars` rendered again at run time) |
//! | provisioner `ansible-local` | none |
//! | provisioner `salt-masterless` | none |
//! | provisioner `puppet-masterless` | `execute_command`, `extra_arguments` |
//! | post-processor `checksum` | `output` |
//! | post-processor `compress` | `output` |
//! | post-processor `manifest` | none |
//! | post-processor `artifice` | none |
//! | post-processor `shell-local` | `execute_command` |
//! | post-processor `amazon-import` | `s3_key_name` |
//! | post-processor `vagrant` | `output` |
//!
//! kiln's components decode their own configuration and leave some keys
//! for run time that Packer renders while preparing (kiln's `shell` and
//! `shell-local` keep `inline`, `command`; `ansible` keeps
//! `extra_arguments` and `ansible_env_vars`). [`render_like_packer`]
//! closes that gap: after a component is decoded, every key of the table
//! above that is not left for later is rendered as Packer renders it
//! (with Packer's leniency on `.Field`), and what fails is reported at its
//! position, unless the component already reported a problem there.
//! kiln's own components (`debootstrap`, `create_box`) and the `chef-*`
//! refusals are not in the table: their decoders are the reference.
//!
//! What kiln reports that Packer 1.6.6 does not, at validate time: a
//! `.Field` that is not a context value of the field where kiln's
//! component renders it (Packer renders `<no value>` and the build goes on
//! with it), and every problem of every component, where Packer stops at
//! the first component that fails.
use kiln_template::json::{Node, Value};
use kiln_template::{Context, Diagnostic, Diagnostics};

/// Which kind of component a table entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    Builder,
    Provisioner,
    PostProcessor,
}

/// Packer 1.6.6 components kiln implements (or is about to: an entry for
/// a type kiln does not register is never used), and the keys each leaves
/// unrendered while preparing (see the module documentation).
pub const PACKER_RENDERS_LATER: &[(ComponentKind, &str, &[&str])] = &[
    (ComponentKind::Builder, "null", &[]),
    (ComponentKind::Builder, "file", &[]),
    (
        ComponentKind::Builder,
        "qemu",
        &["boot_command", "qemuargs"],
    ),
    (ComponentKind::Builder, "openstack", &[]),
    (ComponentKind::Provisioner, "shell", &["execute_command"]),
    (ComponentKind::Provisioner, "file", &[]),
    (
        ComponentKind::Provisioner,
        "shell-local",
        &["execute_command"],
    ),
    (
        ComponentKind::Provisioner,
        "ansible",
        &["inventory_file_template"],
    ),
    (ComponentKind::Provisioner, "ansible-local", &[]),
    (ComponentKind::Provisioner, "salt-masterless", &[]),
    (
        ComponentKind::Provisioner,
        "puppet-masterless",
        &["execute_command", "extra_arguments"],
    ),
    (ComponentKind::PostProcessor, "checksum", &["output"]),
    (ComponentKind::PostProcessor, "compress", &["output"]),
    (ComponentKind::PostProcessor, "manifest", &[]),
    (ComponentKind::PostProcessor, "artifice", &[]),
    (
        ComponentKind::PostProcessor,
        "shell-local",
        &["execute_command"],
    ),
];

/// The keys a Packer component leaves for run time; `None` when the
/// component is not one of Packer's that kiln implements.
pub fn renders_later(kind: ComponentKind, type_name: &str) -> Option<&'static [&'static str]> {
    PACKER_RENDERS_LATER
        .iter()
        .find(|(k, t, _)| *k == kind && *t == type_name)
        .map(|(_, _, later)| *later)
}

/// Render `config` as Packer does while preparing a component of this
/// kind and type (see the module documentation), skipping `skip` (the
/// keys the engine handles itself) and every key or value at whose
/// position `diags` already has a problem. New problems are added to
/// `diags`, each as "`key`: message" at the place in the string.
pub fn render_like_packer(
    config: &Node,
    kind: ComponentKind,
    type_name: &str,
    skip: &[&str],
    ctx: &Context,
    diags: &mut Diagnostics,
) {
    let Some(later) = renders_later(kind, type_name) else {
        return;
    };
    let Some(entries) = config.as_object() else {
        return;
    };
    let mut ctx = ctx.clone();
    ctx.lenient_fields = true;
    let reported = |diags: &Diagnostics, n_source: &Node, offset: usize| {
        diags.0.iter().any(|d| {
            d.pos.is_some_and(|p| p.offset == offset)
                && d.source
                    .as_ref()
                    .is_some_and(|s| s.path == n_source.source.path)
        })
    };
    let mut found = Diagnostics::default();
    for (k, v) in entries {
        let name = k.name.as_str();
        if skip.contains(&name)
            || name.starts_with("packer_")
            || later.iter().any(|l| l.eq_ignore_ascii_case(name))
            || (k.pos.line > 0 && reported(diags, v, k.pos.offset))
        {
            continue;
        }
        walk(v, name.to_string(), &ctx, &mut found);
    }
    for d in found.0 {
        let dup = d.pos.is_some_and(|p| {
            diags.0.iter().any(|e| {
                e.pos.is_some_and(|q| q.offset == p.offset)
                    && e.source.as_ref().map(|s| &s.path) == d.source.as_ref().map(|s| &s.path)
            })
        });
        if !dup {
            diags.push(d);
        }
    }
}

fn walk(n: &Node, label: String, ctx: &Context, out: &mut Diagnostics) {
    match &n.value {
        Value::String(s) => {
            if !s.contains("{{") {
                return;
            }
            if let Err(e) = kiln_template::interp::render(s, ctx) {
                out.push(Diagnostic::at(
                    &n.source,
                    n.string_pos(e.offset),
                    format!("`{label}`: {}", e.message),
                ));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{label}[{i}]"), ctx, out);
            }
        }
        Value::Object(entries) => {
            for (k, v) in entries {
                if k.name.contains("{{") {
                    if let Err(e) = kiln_template::interp::render(&k.name, ctx) {
                        out.push(Diagnostic::at(
                            &n.source,
                            k.pos,
                            format!("`{label}` key {:?}: {}", k.name, e.message),
                        ));
                    }
                }
                walk(v, format!("{label}.{}", k.name), ctx, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_template::Source;
    use std::sync::Arc;

    fn node(text: &str) -> Node {
        let src = Arc::new(Source {
            path: "t.json".into(),
            text: text.into(),
        });
        kiln_template::json::parse(src).unwrap()
    }

    fn messages(d: &Diagnostics) -> Vec<String> {
        d.0.iter()
            .map(|d| {
                format!(
                    "{}:{} {}",
                    d.pos.unwrap().line,
                    d.pos.unwrap().col,
                    d.message
                )
            })
            .collect()
    }

    #[test]
    fn renders_what_packer_renders_and_skips_what_it_leaves_for_later() {
        let n = node(
            r#"{"type": "shell", "execute_command": "{{env `A`}}", "inline": ["ok", "{{env `B`}}"],
"vars": {"{{env `C`}}": "x", "k": "{{ .Whatever }}"}, "only": ["{{env `D`}}"]}"#,
        );
        let mut d = Diagnostics::default();
        render_like_packer(
            &n,
            ComponentKind::Provisioner,
            "shell",
            &["type", "only"],
            &Context::default(),
            &mut d,
        );
        assert_eq!(
            messages(&d),
            [
                "1:73 `inline[1]`: error calling env: env vars are not allowed here",
                "2:10 `vars` key \"{{env `C`}}\": error calling env: env vars are not allowed here",
            ]
        );
    }

    #[test]
    fn a_place_already_reported_is_not_reported_again() {
        let n = node(r#"{"type": "file", "content": "{{env `A`}}", "typo": "{{env `B`}}"}"#);
        let mut d = Diagnostics::default();
        // The component reported the unknown key and the content's error.
        let content = n.get("content").unwrap();
        d.push(kiln_template::Diagnostic::at(
            &n.source,
            content.string_pos(2),
            "its own",
        ));
        let typo = n.entry("typo").unwrap().0.pos;
        d.push(kiln_template::Diagnostic::at(
            &n.source,
            typo,
            "unknown key",
        ));
        render_like_packer(
            &n,
            ComponentKind::Builder,
            "file",
            &["type"],
            &Context::default(),
            &mut d,
        );
        assert_eq!(d.0.len(), 2, "{:?}", messages(&d));
        // A component kiln implements that Packer does not have: untouched.
        render_like_packer(
            &n,
            ComponentKind::Builder,
            "debootstrap",
            &["type"],
            &Context::default(),
            &mut Diagnostics::default(),
        );
        assert!(renders_later(ComponentKind::Builder, "debootstrap").is_none());
    }
}
