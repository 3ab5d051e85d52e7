//! The fixers of Packer 1.6.6's `packer fix`, in its order, each written
//! from the behaviour of Packer's `fix/` package (read, not copied) and
//! checked against `packer fix` by this crate's tests.
//!
//! They edit the template in place: a renamed key keeps the place of the
//! old one, a removed key leaves no trace, a key that did not exist is
//! added at the end of its object (Packer sorts every object, so only the
//! values can be compared with it).
use crate::tree::{
    self, bool_of, entries, entries_mut, get, get_str, has, put, str_of, take, Entries, Slot,
};
use crate::RawNote;
use kiln_template::json::{Key, Node, Value};
use kiln_template::{Diagnostic, Pos, Source};
use std::sync::Arc;

/// One fixer: its name (as `packer fix -h` lists it), what it does, and
/// the function.
pub struct FixerInfo {
    pub name: &'static str,
    pub synopsis: &'static str,
    pub(crate) run: fn(&mut Run<'_>, &mut Node) -> Result<(), Diagnostic>,
}

/// Every fixer, in the order Packer 1.6.6 runs them.
pub const FIXERS: &[FixerInfo] = &[
    FixerInfo { name: "iso-md5", synopsis: "builders: `iso_md5` becomes `iso_checksum` with `iso_checksum_type` md5", run: iso_md5 },
    FixerInfo { name: "createtime", synopsis: "builders: `{{ .CreateTime }}` in `ami_name`, `bundle_prefix`, `snapshot_name` becomes `{{timestamp}}`", run: createtime },
    FixerInfo { name: "virtualbox-gaattach", synopsis: "`virtualbox` builders: boolean `guest_additions_attach` becomes `guest_additions_mode` (attach or upload)", run: virtualbox_gaattach },
    FixerInfo { name: "pp-vagrant-override", synopsis: "`vagrant` post-processors: provider sections (aws, digitalocean, virtualbox, vmware) move under `override`", run: pp_vagrant_override },
    FixerInfo { name: "virtualbox-rename", synopsis: "builder type `virtualbox` becomes `virtualbox-iso`, in provisioners' `override` too", run: virtualbox_rename },
    FixerInfo { name: "vmware-rename", synopsis: "builder type `vmware` becomes `vmware-iso`", run: vmware_rename },
    FixerInfo { name: "parallels-headless", synopsis: "Parallels builders: `headless` (unused) is removed", run: parallels_headless },
    FixerInfo { name: "parallels-deprecations", synopsis: "Parallels builders: `parallels_tools_host_path` is removed, `guest_os_distribution` becomes `guest_os_type`", run: parallels_deprecations },
    FixerInfo { name: "sshkeypath", synopsis: "builders: `ssh_key_path` becomes `ssh_private_key_file`", run: sshkeypath },
    FixerInfo { name: "sshdisableagent", synopsis: "builders: `ssh_disable_agent` becomes `ssh_disable_agent_forwarding`", run: sshdisableagent },
    FixerInfo { name: "scaleway-access-key", synopsis: "`scaleway` builders: `access_key` becomes `organization_id`", run: scaleway_access_key },
    FixerInfo { name: "manifest-filename", synopsis: "`manifest` post-processors: `filename` becomes `output`", run: manifest_filename },
    FixerInfo { name: "amazon-shutdown_behavior", synopsis: "Amazon builders: `shutdown_behaviour` becomes `shutdown_behavior`", run: amazon_shutdown_behavior },
    FixerInfo { name: "amazon-enhanced-networking", synopsis: "Amazon builders: boolean `enhanced_networking` becomes `ena_support`", run: amazon_enhanced_networking },
    FixerInfo { name: "amazon-private-ip", synopsis: "Amazon builders: `ssh_private_ip` becomes `ssh_interface` (private_ip or public_ip)", run: amazon_private_ip },
    FixerInfo { name: "amazon-temp-sec-cidrs", synopsis: "Amazon builders: string `temporary_security_group_source_cidr` becomes the list `temporary_security_group_source_cidrs`", run: amazon_temp_sec_cidrs },
    FixerInfo { name: "docker-email", synopsis: "builders and post-processors: `login_email` is removed (only when the template has post-processors, as Packer)", run: docker_email },
    FixerInfo { name: "docker-tag-tags", synopsis: "`docker-tag` post-processors: `tag` is merged into the list `tags`", run: docker_tag_tags },
    FixerInfo { name: "powershell-escapes", synopsis: "`powershell` provisioners: PowerShell backtick escapes are removed from `elevated_user`, `elevated_password`, `environment_vars`", run: powershell_escapes },
    FixerInfo { name: "vmware-compaction", synopsis: "`vmware-iso` builders on esx5 whose disk is not thin get `skip_compaction: true`", run: vmware_compaction },
    FixerInfo { name: "hyperv-deprecations", synopsis: "`hyperv-iso` builders: `vhd_temp_path` is removed", run: hyperv_deprecations },
    FixerInfo { name: "hyperv-vmxc-typo", synopsis: "`hyperv-vmcx` builders: `clone_from_vmxc_path` becomes `clone_from_vmcx_path`", run: hyperv_vmxc_typo },
    FixerInfo { name: "hyperv-cpu-and-ram", synopsis: "Hyper-V builders: `cpu` becomes `cpus`, `ram_size` becomes `memory`", run: hyperv_cpu_and_ram },
    FixerInfo { name: "clean-image-name", synopsis: "builders: `clean_image_name` and `clean_ami_name` in string values become `clean_resource_name`", run: clean_image_name },
    FixerInfo { name: "spot-price-auto-product", synopsis: "amazon-ebs, -ebssurrogate, -ebsvolume, -instance builders: `spot_price_auto_product` is removed", run: spot_price_auto_product },
    FixerInfo { name: "qemu-disk-size", synopsis: "`qemu` builders: a number `disk_size` becomes a string in megabytes (10000 becomes \"10000M\")", run: qemu_disk_size },
    FixerInfo { name: "galaxy-command", synopsis: "`ansible-local` provisioners: `galaxycommand` becomes `galaxy_command`", run: galaxy_command },
    FixerInfo { name: "comm-config", synopsis: "VirtualBox builders: `ssh_host_port_min`, `ssh_host_port_max`, `ssh_skip_nat_mapping` lose their `ssh_` prefix", run: comm_config },
    FixerInfo { name: "ssh-wait-timeout", synopsis: "builders: `ssh_wait_timeout` becomes `ssh_timeout`", run: ssh_wait_timeout },
    FixerInfo { name: "vsphere-iso-net-disk", synopsis: "`vsphere-iso` builders: network and disk keys move into `network_adapters` and `storage`", run: vsphere_iso_net_disk },
    FixerInfo { name: "iso-checksum-type-and-url", synopsis: "builders: `iso_checksum_type` and `iso_checksum_url` are folded into `iso_checksum` (\"md5:...\", \"file:...\")", run: iso_checksum_type_and_url },
    FixerInfo { name: "qemu-host-port", synopsis: "`qemu` builders: `ssh_host_port_min`/`ssh_host_port_max` become `host_port_min`/`host_port_max`", run: qemu_host_port },
    FixerInfo { name: "azure-exclude_from_latest", synopsis: "`azure-chroot` builders: `exlude_from_latest` in `shared_image_destination` becomes `exclude_from_latest`", run: azure_exclude_from_latest },
    FixerInfo { name: "proxmox-type", synopsis: "builder type `proxmox` becomes `proxmox-iso`", run: proxmox_type },
];

/// An object being fixed: where it is (its identity in the notes).
pub(crate) struct Obj {
    pub pos: Pos,
    pub source: Arc<Source>,
}

impl Obj {
    fn of(n: &Node) -> Obj {
        Obj {
            pos: n.pos,
            source: n.source.clone(),
        }
    }
}

/// The state of one fixer's run: its name and where its notes go.
pub(crate) struct Run<'a> {
    pub fixer: &'static str,
    pub notes: &'a mut Vec<RawNote>,
}

impl Run<'_> {
    /// Record that `key` (with `value`, both as they are now) of the object
    /// at `obj` is rewritten: `what` says how, `results` names the keys of
    /// that object that hold the result.
    fn note(&mut self, obj: &Obj, key: &Key, value: &Node, what: String, results: &[&str]) {
        self.notes.push(RawNote {
            fixer: self.fixer,
            key: key.name.clone(),
            key_pos: key.pos,
            value_pos: value.pos,
            obj_pos: obj.pos,
            what,
            results: results.iter().map(|s| s.to_string()).collect(),
        });
    }
    /// Note a key that is still in `e` (looked up by name).
    fn note_key(&mut self, obj: &Obj, e: &Entries, key: &str, what: String, results: &[&str]) {
        if let Some((k, v)) = e.iter().find(|(k, _)| k.name == key) {
            let (k, v) = (k.clone(), v.clone());
            self.note(obj, &k, &v, what, results);
        }
    }
}

fn shape_error(n: &Node, msg: String) -> Diagnostic {
    Diagnostic::at(&n.source, n.pos, msg)
}

fn kind_of(n: &Node) -> &'static str {
    n.kind()
}

/// Run `f` on every builder object. As Packer's fixers (which decode
/// `builders` as a list of maps and write it back): a missing `builders`
/// becomes `null`; anything but a list of objects is an error.
fn each_builder(
    run: &mut Run<'_>,
    root: &mut Node,
    mut f: impl FnMut(&mut Run<'_>, &Obj, &mut Entries) -> Result<(), Diagnostic>,
) -> Result<(), Diagnostic> {
    let root_pos = root.pos;
    let source = root.source.clone();
    let Some(e) = entries_mut(root) else {
        return Ok(());
    };
    let Some(b) = tree::get_mut(e, "builders") else {
        e.push((
            Key {
                name: "builders".into(),
                pos: Pos::default(),
            },
            Node {
                value: Value::Null,
                pos: root_pos,
                source,
            },
        ));
        return Ok(());
    };
    let items = match &mut b.value {
        Value::Null => return Ok(()),
        Value::Array(items) => items,
        _ => {
            return Err(shape_error(
                b,
                format!(
                    "`builders` must be a list of objects for Packer's fixers, found {}",
                    kind_of(b)
                ),
            ))
        }
    };
    for (i, item) in items.iter_mut().enumerate() {
        let pos = item.pos;
        let kind = kind_of(item);
        let obj = Obj::of(item);
        let Some(e) = entries_mut(item) else {
            return Err(Diagnostic::at(
                &item.source,
                pos,
                format!(
                    "builder {}: expected an object, found {kind} (Packer's fixers fail on it too)",
                    i + 1
                ),
            ));
        };
        f(run, &obj, e)?;
    }
    Ok(())
}

/// Builders of a given type (its `type` a string equal to one of `types`,
/// or starting with `prefix` when `types` is empty).
fn builders_of(
    run: &mut Run<'_>,
    root: &mut Node,
    matches: impl Fn(&str) -> bool,
    mut f: impl FnMut(&mut Run<'_>, &Obj, &mut Entries) -> Result<(), Diagnostic>,
) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, pos, e| match get_str(e, "type") {
        Some(t) if matches(t) => f(run, pos, e),
        _ => Ok(()),
    })
}

/// The post-processor objects, as Packer's fixers list them: objects at
/// the top level and objects inside a chain; names (strings) skipped.
/// `None` when the template has none (these fixers then do nothing).
fn each_post_processor(
    run: &mut Run<'_>,
    root: &mut Node,
    mut f: impl FnMut(&mut Run<'_>, &Obj, &mut Entries) -> Result<(), Diagnostic>,
) -> Result<bool, Diagnostic> {
    let Some(e) = entries_mut(root) else {
        return Ok(false);
    };
    let Some(pp) = tree::get_mut(e, "post-processors") else {
        return Ok(false);
    };
    let items = match &mut pp.value {
        Value::Null => return Ok(false),
        Value::Array(items) => items,
        _ => {
            return Err(shape_error(
                pp,
                format!(
                    "`post-processors` must be a list for Packer's fixers, found {}",
                    kind_of(pp)
                ),
            ))
        }
    };
    for item in items.iter_mut() {
        let obj = Obj::of(item);
        match &mut item.value {
            Value::Object(e) => f(run, &obj, e)?,
            Value::Array(chain) => {
                for inner in chain.iter_mut() {
                    let obj = Obj::of(inner);
                    if let Value::Object(e) = &mut inner.value {
                        f(run, &obj, e)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(true)
}

/// The provisioner objects (after `virtualbox-rename` has made the list a
/// list, as Packer's weak decoding does).
fn each_provisioner(
    run: &mut Run<'_>,
    root: &mut Node,
    mut f: impl FnMut(&mut Run<'_>, &Obj, &mut Entries) -> Result<(), Diagnostic>,
) -> Result<(), Diagnostic> {
    let Some(e) = entries_mut(root) else {
        return Ok(());
    };
    let Some(p) = tree::get_mut(e, "provisioners") else {
        return Ok(());
    };
    if let Value::Array(items) = &mut p.value {
        for item in items.iter_mut() {
            let obj = Obj::of(item);
            if let Value::Object(e) = &mut item.value {
                f(run, &obj, e)?;
            }
        }
    }
    Ok(())
}

/// Move `old` to `new` (in place); the note says `old` is now `new`.
fn rename_noted(run: &mut Run<'_>, obj: &Obj, e: &mut Entries, old: &str, new: &str) -> bool {
    let Some(i) = tree::index(e, old) else {
        return false;
    };
    let (k, v) = e[i].clone();
    run.note(obj, &k, &v, format!("`{old}` is now `{new}`"), &[new]);
    tree::rename(e, old, new)
}

/// Remove `key`; the note says it is gone and why.
fn remove_noted(run: &mut Run<'_>, obj: &Obj, e: &mut Entries, key: &str, why: &str) -> bool {
    let Some((_, k, v)) = take(e, key) else {
        return false;
    };
    run.note(obj, &k, &v, format!("`{key}` {why}"), &[]);
    true
}

// ------------------------------------------------------------------ fixers

fn iso_md5(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        let Some(i) = tree::index(e, "iso_md5") else {
            return Ok(());
        };
        let Some(md5) = str_of(&e[i].1).map(str::to_string) else {
            return Ok(());
        };
        let (k, v) = e[i].clone();
        run.note(
            obj,
            &k,
            &v,
            "`iso_md5` is now an `iso_checksum`".into(),
            &["iso_checksum", "iso_checksum_type"],
        );
        e.remove(i);
        let slot = Some(Slot::of(i, &k));
        put(e, "iso_checksum", tree::string(md5, &v), slot);
        put(
            e,
            "iso_checksum_type",
            tree::string("md5", &v),
            slot.map(|s| Slot {
                index: s.index + 1,
                ..s
            }),
        );
        Ok(())
    })
}

/// Replace every `{{ .CreateTime }}` (white space allowed inside the
/// braces) with `{{timestamp}}`.
fn replace_create_time(s: &str) -> String {
    const WS: &[char] = &[' ', '\t', '\n', '\r', '\x0c'];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let t = after.trim_start_matches(WS);
        let matched = t.strip_prefix(".CreateTime").and_then(|t| {
            let t = t.trim_start_matches(WS);
            t.strip_prefix("}}").map(|t2| rest.len() - t2.len())
        });
        match matched {
            Some(end) => {
                out.push_str(&rest[..i]);
                out.push_str("{{timestamp}}");
                rest = &rest[end..];
            }
            None => {
                out.push_str(&rest[..i + 1]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn createtime(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        for key in ["ami_name", "bundle_prefix", "snapshot_name"] {
            let Some(s) = get_str(e, key) else { continue };
            let fixed = replace_create_time(s);
            if fixed != s {
                run.note_key(
                    obj,
                    e,
                    key,
                    format!("`.CreateTime` in `{key}` is now `timestamp`"),
                    &[key],
                );
                let like = get(e, key).cloned().expect("present");
                put(e, key, tree::string(fixed, &like), None);
            }
        }
        Ok(())
    })
}

fn virtualbox_gaattach(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "virtualbox",
        |run, obj, e| {
            let Some(i) = tree::index(e, "guest_additions_attach") else {
                return Ok(());
            };
            let Some(attach) = bool_of(&e[i].1) else {
                return Ok(());
            };
            let (k, v) = e.remove(i);
            run.note(
                obj,
                &k,
                &v,
                "`guest_additions_attach` is now `guest_additions_mode`".into(),
                &["guest_additions_mode"],
            );
            let mode = if attach { "attach" } else { "upload" };
            put(
                e,
                "guest_additions_mode",
                tree::string(mode, &v),
                Some(Slot::of(i, &k)),
            );
            Ok(())
        },
    )
}

fn pp_vagrant_override(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_post_processor(run, root, |run, obj, e| {
        if get_str(e, "type") != Some("vagrant") {
            return Ok(());
        }
        let mut moved: Entries = Vec::new();
        let mut first: Option<Slot> = None;
        let mut i = 0;
        while i < e.len() {
            let name = e[i].0.name.as_str();
            if ["aws", "digitalocean", "virtualbox", "vmware"].contains(&name) {
                let (k, v) = e.remove(i);
                run.note(
                    obj,
                    &k,
                    &v,
                    format!(
                        "the `{}` section of a `vagrant` post-processor now goes under `override`",
                        k.name
                    ),
                    &["override"],
                );
                first.get_or_insert(Slot::of(i, &k));
                moved.push((k, v));
            } else {
                i += 1;
            }
        }
        if let Some(slot) = first {
            let like = moved[0].1.clone();
            put(
                e,
                "override",
                tree::fresh(Value::Object(moved), &like),
                Some(slot),
            );
        }
        Ok(())
    })
    .map(|_| ())
}

/// A provisioner's `override`, decoded as Packer's weak decoding does: an
/// object, or a list of objects merged in order.
fn weak_object(n: &Node) -> Option<Entries> {
    match &n.value {
        Value::Object(e) => Some(e.clone()),
        Value::Array(items) => {
            let mut out: Entries = Vec::new();
            for i in items {
                for (k, v) in entries(i)? {
                    put(
                        &mut out,
                        &k.name,
                        v.clone(),
                        Some(Slot {
                            index: usize::MAX,
                            key_pos: k.pos,
                        }),
                    );
                }
            }
            Some(out)
        }
        _ => None,
    }
}

fn virtualbox_rename(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    // Builders are decoded weakly here; `iso-md5` has already failed on
    // anything but a list of objects.
    if let Some(e) = entries_mut(root) {
        if let Some(Value::Array(items)) = tree::get_mut(e, "builders").map(|b| &mut b.value) {
            for item in items.iter_mut() {
                let obj = Obj::of(item);
                let obj = &obj;
                if let Some(e) = entries_mut(item) {
                    if get_str(e, "type") == Some("virtualbox") {
                        run.note_key(
                            obj,
                            e,
                            "type",
                            "builder type `virtualbox` is now `virtualbox-iso`".into(),
                            &["type"],
                        );
                        let like = get(e, "type").cloned().expect("present");
                        put(e, "type", tree::string("virtualbox-iso", &like), None);
                    }
                }
            }
        }
        // Provisioners: weakly a list (a single value is a list of one).
        if let Some(p) = tree::get_mut(e, "provisioners") {
            match &p.value {
                Value::Null | Value::Array(_) => {}
                _ => {
                    let one = p.clone();
                    p.value = Value::Array(vec![one]);
                }
            }
            if let Value::Array(items) = &mut p.value {
                for item in items.iter_mut() {
                    let Some(pe) = entries_mut(item) else {
                        continue;
                    };
                    let Some(oi) = tree::index(pe, "override") else {
                        continue;
                    };
                    let onode = pe[oi].1.clone();
                    if matches!(onode.value, Value::Null) {
                        continue;
                    }
                    let Some(mut over) = weak_object(&onode) else {
                        return Err(shape_error(
                            &onode,
                            format!("a provisioner's `override` must be an object for Packer's fixers, found {}", onode.kind()),
                        ));
                    };
                    if tree::has(&over, "virtualbox") {
                        let obj = &Obj::of(&onode);
                        run.note_key(
                            obj,
                            &over,
                            "virtualbox",
                            "the builder name `virtualbox` in `override` is now `virtualbox-iso`"
                                .into(),
                            &["virtualbox-iso"],
                        );
                        tree::rename(&mut over, "virtualbox", "virtualbox-iso");
                        pe[oi].1 = tree::made(Value::Object(over), &onode);
                    }
                }
            }
        }
    }
    Ok(())
}

fn rename_type(run: &mut Run<'_>, root: &mut Node, from: &str, to: &str) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == from,
        |run, obj, e| {
            run.note_key(
                obj,
                e,
                "type",
                format!("builder type `{from}` is now `{to}`"),
                &["type"],
            );
            let like = get(e, "type").cloned().expect("present");
            put(e, "type", tree::string(to, &like), None);
            Ok(())
        },
    )
}

fn vmware_rename(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    rename_type(run, root, "vmware", "vmware-iso")
}

fn is_parallels(t: &str) -> bool {
    t == "parallels-iso" || t == "parallels-pvm"
}

fn parallels_headless(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(run, root, is_parallels, |run, obj, e| {
        remove_noted(
            run,
            obj,
            e,
            "headless",
            "is not used by Parallels builders and is removed",
        );
        Ok(())
    })
}

fn parallels_deprecations(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(run, root, is_parallels, |run, obj, e| {
        remove_noted(
            run,
            obj,
            e,
            "parallels_tools_host_path",
            "is deprecated and removed",
        );
        rename_noted(run, obj, e, "guest_os_distribution", "guest_os_type");
        Ok(())
    })
}

/// `old` (a value for which `accept` holds) becomes `new` unless `new` is
/// already set; `old` goes either way.
fn move_unless_set(
    run: &mut Run<'_>,
    obj: &Obj,
    e: &mut Entries,
    old: &str,
    new: &str,
    accept: impl Fn(&Node) -> bool,
) {
    let Some(i) = tree::index(e, old) else { return };
    if !accept(&e[i].1) {
        return;
    }
    let (k, v) = e.remove(i);
    if has(e, new) {
        run.note(
            obj,
            &k,
            &v,
            format!("`{old}` is now `{new}`, which is already set: it is removed"),
            &[new],
        );
    } else {
        run.note(obj, &k, &v, format!("`{old}` is now `{new}`"), &[new]);
        put(e, new, v, Some(Slot::of(i, &k)));
    }
}

fn sshkeypath(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        move_unless_set(run, obj, e, "ssh_key_path", "ssh_private_key_file", |v| {
            str_of(v).is_some()
        });
        Ok(())
    })
}

fn sshdisableagent(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        move_unless_set(
            run,
            obj,
            e,
            "ssh_disable_agent",
            "ssh_disable_agent_forwarding",
            |v| bool_of(v).is_some(),
        );
        Ok(())
    })
}

fn scaleway_access_key(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "scaleway",
        |run, obj, e| {
            move_unless_set(run, obj, e, "access_key", "organization_id", |v| {
                str_of(v).is_some()
            });
            Ok(())
        },
    )
}

fn manifest_filename(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_post_processor(run, root, |run, obj, e| {
        if get_str(e, "type") != Some("manifest") {
            return Ok(());
        }
        let Some(i) = tree::index(e, "filename") else {
            return Ok(());
        };
        if str_of(&e[i].1).is_none() {
            return Ok(());
        }
        let (k, v) = e.remove(i);
        run.note(
            obj,
            &k,
            &v,
            "`filename` of the `manifest` post-processor is now `output`".into(),
            &["output"],
        );
        put(e, "output", v, Some(Slot::of(i, &k)));
        Ok(())
    })
    .map(|_| ())
}

fn is_amazon(t: &str) -> bool {
    t.starts_with("amazon-")
}

fn amazon_shutdown_behavior(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(run, root, is_amazon, |run, obj, e| {
        rename_noted(run, obj, e, "shutdown_behaviour", "shutdown_behavior");
        Ok(())
    })
}

fn amazon_enhanced_networking(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(run, root, is_amazon, |run, obj, e| {
        if let Some(i) = tree::index(e, "enhanced_networking") {
            if bool_of(&e[i].1).is_some() {
                rename_noted(run, obj, e, "enhanced_networking", "ena_support");
            }
        }
        Ok(())
    })
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn amazon_private_ip(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(run, root, is_amazon, |run, obj, e| {
        if has(e, "ssh_interface") {
            return Ok(());
        }
        let Some(i) = tree::index(e, "ssh_private_ip") else {
            return Ok(());
        };
        let v = &e[i].1;
        let private = match &v.value {
            Value::Bool(b) => *b,
            Value::String(s) => parse_go_bool(s).ok_or_else(|| {
                shape_error(v, format!("`ssh_private_ip` is not a boolean: {s:?}"))
            })?,
            _ => {
                return Err(shape_error(
                    v,
                    format!(
                    "`ssh_private_ip` must be a boolean, found {} (Packer's fixer fails on it too)",
                    v.kind()
                ),
                ))
            }
        };
        let (k, v) = e.remove(i);
        run.note(
            obj,
            &k,
            &v,
            "`ssh_private_ip` is now `ssh_interface`".into(),
            &["ssh_interface"],
        );
        let iface = if private { "private_ip" } else { "public_ip" };
        put(
            e,
            "ssh_interface",
            tree::string(iface, &v),
            Some(Slot::of(i, &k)),
        );
        Ok(())
    })
}

fn amazon_temp_sec_cidrs(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(run, root, is_amazon, |run, obj, e| {
        let Some(i) = tree::index(e, "temporary_security_group_source_cidr") else {
            return Ok(());
        };
        if str_of(&e[i].1).is_none() {
            return Ok(());
        }
        let (k, v) = e.remove(i);
        run.note(obj, &k, &v, "`temporary_security_group_source_cidr` is now the list `temporary_security_group_source_cidrs`".into(), &["temporary_security_group_source_cidrs"]);
        let list = tree::made(Value::Array(vec![v.clone()]), &v);
        put(
            e,
            "temporary_security_group_source_cidrs",
            list,
            Some(Slot::of(i, &k)),
        );
        Ok(())
    })
}

fn docker_email(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    // Packer's fixer does nothing at all when there are no post-processors.
    let has_pps = entries(root)
        .and_then(|e| get(e, "post-processors"))
        .is_some_and(|p| !matches!(p.value, Value::Null));
    if !has_pps {
        return Ok(());
    }
    // Its decoding of post-processors fails first on a bad shape.
    each_post_processor(run, root, |_, _, _| Ok(()))?;
    each_builder(run, root, |run, obj, e| {
        remove_noted(
            run,
            obj,
            e,
            "login_email",
            "is no longer used and is removed",
        );
        Ok(())
    })?;
    each_post_processor(run, root, |run, obj, e| {
        remove_noted(
            run,
            obj,
            e,
            "login_email",
            "is no longer used and is removed",
        );
        Ok(())
    })
    .map(|_| ())
}

/// Tags from `tag`/`tags`: a list (of strings) or a comma-separated string.
fn tags_of(n: &Node, out: &mut Vec<String>) -> Result<(), Diagnostic> {
    match &n.value {
        Value::Array(items) => {
            for t in items {
                let Some(s) = str_of(t) else {
                    return Err(shape_error(t, format!("a docker-tag tag must be a string, found {} (Packer's fixer crashes on it)", t.kind())));
                };
                out.push(s.to_string());
            }
        }
        Value::String(s) => out.extend(s.split(',').map(|t| t.trim().to_string())),
        _ => {}
    }
    Ok(())
}

fn docker_tag_tags(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_post_processor(run, root, |run, obj, e| {
        if get_str(e, "type") != Some("docker-tag") {
            return Ok(());
        }
        let mut all = Vec::new();
        if let Some(t) = get(e, "tag") {
            tags_of(t, &mut all)?;
        }
        if let Some(t) = get(e, "tags") {
            tags_of(t, &mut all)?;
        }
        let mut tags: Vec<String> = Vec::new();
        for t in all {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let like = get(e, "tags")
            .or_else(|| get(e, "tag"))
            .or_else(|| get(e, "type"))
            .cloned()
            .expect("type is present");
        let list = tree::made(
            Value::Array(tags.into_iter().map(|t| tree::string(t, &like)).collect()),
            &like,
        );
        let old = take(e, "tag");
        if let Some((_, k, v)) = &old {
            run.note(
                obj,
                k,
                v,
                "`tag` of the `docker-tag` post-processor is now the list `tags`".into(),
                &["tags"],
            );
        } else if get(e, "tags") != Some(&list) {
            let key = if has(e, "tags") { "tags" } else { "type" };
            run.note_key(
                obj,
                e,
                key,
                "`tags` of the `docker-tag` post-processor is rewritten as a list".into(),
                &["tags"],
            );
        }
        put(
            e,
            "tags",
            list,
            old.as_ref().map(|(i, k, _)| Slot::of(*i, k)),
        );
        Ok(())
    })
    .map(|_| ())
}

/// PowerShell's escapes that Packer used to need: `` `$ `` `` `" `` `` `` `` `` `' ``.
fn ps_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if let Some(&n) = chars.peek() {
                if matches!(n, '$' | '"' | '`' | '\'') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

fn powershell_escapes(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_provisioner(run, root, |run, obj, e| {
        if get_str(e, "type") != Some("powershell") {
            return Ok(());
        }
        let mut work = e.clone();
        let mut notes = Vec::new();
        for key in ["elevated_user", "elevated_password"] {
            let Some(v) = get(&work, key).cloned() else {
                continue;
            };
            let Some(s) = str_of(&v) else {
                return Err(shape_error(
                    &v,
                    format!("`{key}` must be a string (Packer's fixer crashes on it)"),
                ));
            };
            let fixed = ps_unescape(s);
            if fixed != s {
                notes.push(key);
                put(&mut work, key, tree::string(fixed, &v), None);
            }
        }
        if let Some(v) = get(&work, "environment_vars").cloned() {
            // Packer decodes it strictly as a list of strings and leaves the
            // whole provisioner unchanged when it cannot.
            let empty = Vec::new();
            let items = match &v.value {
                Value::Array(items) => items,
                Value::Null => &empty,
                _ => return Ok(()),
            };
            let mut out = Vec::new();
            for i in items {
                let Some(s) = str_of(i) else { return Ok(()) };
                out.push(tree::string(ps_unescape(s), i));
            }
            let list = tree::made(Value::Array(out), &v);
            if list != v {
                notes.push("environment_vars");
            }
            put(&mut work, "environment_vars", list, None);
        }
        for key in notes {
            run.note_key(
                obj,
                e,
                key,
                format!("PowerShell escapes in `{key}` are no longer needed"),
                &[key],
            );
        }
        *e = work;
        Ok(())
    })
}

fn vmware_compaction(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "vmware-iso",
        |run, obj, e| {
            if get_str(e, "remote_type") != Some("esx5") {
                return Ok(());
            }
            let trigger = if has(e, "disk_type_id") {
                "disk_type_id"
            } else {
                "remote_type"
            };
            match get(e, "disk_type_id") {
                None => {
                    let like = get(e, "remote_type").cloned().expect("present");
                    put(e, "disk_type_id", tree::string("zeroedthick", &like), None);
                }
                Some(v) => match str_of(v) {
                    None | Some("thin") => return Ok(()),
                    Some(_) => {}
                },
            }
            let like = get(e, trigger).cloned().expect("present");
            match get(e, "skip_compaction").map(|v| &v.value) {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) | None => {
                    run.note_key(obj, e, trigger, "an esx5 `vmware-iso` disk that is not thin cannot be compacted: `skip_compaction` must be true".into(), &["disk_type_id", "skip_compaction"]);
                    put(
                        e,
                        "skip_compaction",
                        tree::made(Value::Bool(true), &like),
                        None,
                    );
                }
                Some(_) => {}
            }
            Ok(())
        },
    )
}

fn hyperv_deprecations(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "hyperv-iso",
        |run, obj, e| {
            remove_noted(run, obj, e, "vhd_temp_path", "is deprecated and removed");
            Ok(())
        },
    )
}

fn hyperv_vmxc_typo(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "hyperv-vmcx",
        |run, obj, e| {
            rename_noted(run, obj, e, "clone_from_vmxc_path", "clone_from_vmcx_path");
            Ok(())
        },
    )
}

fn hyperv_cpu_and_ram(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "hyperv-vmcx" || t == "hyperv-iso",
        |run, obj, e| {
            rename_noted(run, obj, e, "cpu", "cpus");
            rename_noted(run, obj, e, "ram_size", "memory");
            Ok(())
        },
    )
}

/// `clean_image_name` and `clean_ami_name` anywhere in `s` become
/// `clean_resource_name` (a plain text replacement, as Packer's).
fn replace_clean_name(s: &str) -> String {
    s.replace("clean_image_name", "clean_resource_name")
        .replace("clean_ami_name", "clean_resource_name")
}

fn clean_image_name(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        for entry in e.iter_mut() {
            let (k, v) = entry.clone();
            match &v.value {
                Value::String(s) => {
                    let fixed = replace_clean_name(s);
                    if &fixed != s {
                        run.note(obj, &k, &v, format!("`clean_image_name`/`clean_ami_name` in `{}` is now `clean_resource_name`", k.name), &[&k.name]);
                        entry.1 = tree::string(fixed, &v);
                    }
                }
                Value::Object(inner) => {
                    let mut inner = inner.clone();
                    let mut changed = false;
                    for (_, iv) in inner.iter_mut() {
                        if let Value::String(s) = &iv.value {
                            let fixed = replace_clean_name(s);
                            if &fixed != s {
                                changed = true;
                                *iv = tree::string(fixed, iv);
                            }
                        }
                    }
                    if changed {
                        run.note(obj, &k, &v, format!("`clean_image_name`/`clean_ami_name` in `{}` is now `clean_resource_name`", k.name), &[&k.name]);
                        entry.1 = tree::made(Value::Object(inner), &v);
                    }
                }
                _ if k.name == "image_labels" => {
                    return Err(shape_error(&v, format!("`image_labels` must be an object or a string, found {} (Packer's fixer crashes on it)", v.kind())));
                }
                _ => {}
            }
        }
        Ok(())
    })
}

fn spot_price_auto_product(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| {
            [
                "amazon-ebs",
                "amazon-ebssurrogate",
                "amazon-ebsvolume",
                "amazon-instance",
            ]
            .contains(&t)
        },
        |run, obj, e| {
            remove_noted(
                run,
                obj,
                e,
                "spot_price_auto_product",
                "is deprecated and removed",
            );
            Ok(())
        },
    )
}

fn qemu_disk_size(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "qemu",
        |run, obj, e| {
            let Some(v) = get(e, "disk_size").cloned() else {
                return Ok(());
            };
            let Value::Number(lit) = &v.value else {
                return Ok(());
            };
            let Ok(f) = lit.parse::<f64>() else {
                return Ok(());
            };
            // Go's int(float64): truncated toward zero.
            let mb = f.trunc() as i64;
            run.note_key(
                obj,
                e,
                "disk_size",
                "a number `disk_size` is now a string with its unit".into(),
                &["disk_size"],
            );
            put(e, "disk_size", tree::string(format!("{mb}M"), &v), None);
            Ok(())
        },
    )
}

fn galaxy_command(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_provisioner(run, root, |run, obj, e| {
        if get_str(e, "type") != Some("ansible-local") {
            return Ok(());
        }
        if has(e, "galaxy_command") {
            remove_noted(
                run,
                obj,
                e,
                "galaxycommand",
                "is now `galaxy_command`, which is already set: it is removed",
            );
        } else if let Some(i) = tree::index(e, "galaxycommand") {
            if str_of(&e[i].1).is_some() {
                rename_noted(run, obj, e, "galaxycommand", "galaxy_command");
            }
        }
        Ok(())
    })
}

fn comm_config(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        let Some(t) = get_str(e, "type") else {
            // Packer's fixer crashes on a builder without a string type.
            let at = get(e, "type").map_or(obj.pos, |v| v.pos);
            return Err(Diagnostic::at(
                &obj.source,
                at,
                "a builder needs a string `type` (Packer's comm-config fixer crashes without one)",
            ));
        };
        if !t.starts_with("virtualbox") {
            return Ok(());
        }
        for (old, new) in [
            ("ssh_host_port_min", "host_port_min"),
            ("ssh_host_port_max", "host_port_max"),
        ] {
            if has(e, new) {
                remove_noted(
                    run,
                    obj,
                    e,
                    old,
                    &format!("is now `{new}`, which is already set: it is removed"),
                );
            } else {
                rename_noted(run, obj, e, old, new);
            }
        }
        if has(e, "skip_nat_mapping") {
            remove_noted(
                run,
                obj,
                e,
                "ssh_skip_nat_mapping",
                "is now `skip_nat_mapping`, which is already set: it is removed",
            );
        } else if let Some(i) = tree::index(e, "ssh_skip_nat_mapping") {
            if bool_of(&e[i].1).is_some() {
                rename_noted(run, obj, e, "ssh_skip_nat_mapping", "skip_nat_mapping");
            }
        }
        Ok(())
    })
}

fn ssh_wait_timeout(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        if has(e, "ssh_timeout") {
            remove_noted(
                run,
                obj,
                e,
                "ssh_wait_timeout",
                "is now `ssh_timeout`, which is already set: it is removed",
            );
        } else if let Some(i) = tree::index(e, "ssh_wait_timeout") {
            if str_of(&e[i].1).is_some() {
                rename_noted(run, obj, e, "ssh_wait_timeout", "ssh_timeout");
            }
        }
        Ok(())
    })
}

fn vsphere_iso_net_disk(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "vsphere-iso",
        |run, obj, e| {
            for (list, parts) in [
                (
                    "network_adapters",
                    &[
                        ("network", "network"),
                        ("networkCard", "network_card"),
                        ("network_card", "network_card"),
                    ][..],
                ),
                (
                    "storage",
                    &[
                        ("disk_size", "disk_size"),
                        ("disk_thin_provisioned", "disk_thin_provisioned"),
                        ("disk_eagerly_scrub", "disk_eagerly_scrub"),
                    ][..],
                ),
            ] {
                let mut item: Entries = Vec::new();
                let mut first: Option<(Slot, Node)> = None;
                for (old, new) in parts {
                    if let Some((i, k, v)) = take(e, old) {
                        run.note(
                            obj,
                            &k,
                            &v,
                            format!("`{old}` of a `vsphere-iso` builder now goes in `{list}`"),
                            &[list],
                        );
                        first.get_or_insert((Slot::of(i, &k), v.clone()));
                        put(&mut item, new, v, None);
                    }
                }
                let Some((slot, like)) = first else { continue };
                let mut items = vec![tree::fresh(Value::Object(item), &like)];
                if let Some(existing) = get(e, list) {
                    match &existing.value {
                        Value::Array(more) => items.extend(more.iter().cloned()),
                        _ => {
                            return Err(shape_error(
                                existing,
                                format!("`{list}` must be a list (Packer's fixer crashes on it)"),
                            ));
                        }
                    }
                }
                put(e, list, tree::made(Value::Array(items), &like), Some(slot));
            }
            Ok(())
        },
    )
}

fn iso_checksum_type_and_url(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    each_builder(run, root, |run, obj, e| {
        let s = |e: &Entries, k: &str| get_str(e, k).unwrap_or("").to_string();
        let (url, typ, sum) = (
            s(e, "iso_checksum_url"),
            s(e, "iso_checksum_type"),
            s(e, "iso_checksum"),
        );
        let url_entry = take(e, "iso_checksum_url");
        let type_entry = take(e, "iso_checksum_type");
        if url_entry.is_none() && type_entry.is_none() {
            return Ok(());
        }
        let fixed = if sum.is_empty() && url.is_empty() {
            None
        } else if !url.is_empty() {
            Some(format!("file:{url}"))
        } else if !typ.is_empty() {
            Some(format!("{typ}:{sum}"))
        } else {
            Some(sum)
        };
        for (what, entry) in [
            ("iso_checksum_url", &url_entry),
            ("iso_checksum_type", &type_entry),
        ] {
            if let Some((_, k, v)) = entry {
                let how = if fixed.is_some() {
                    format!("`{what}` is now part of `iso_checksum`")
                } else {
                    format!("`{what}` is no longer used (with no checksum it is removed)")
                };
                run.note(obj, k, v, how, &["iso_checksum"]);
            }
        }
        if let Some(fixed) = fixed {
            let slot = match (&url_entry, &type_entry) {
                (Some((i, k, _)), _) | (None, Some((i, k, _))) => Slot::of(*i, k),
                _ => unreachable!("one of them is set"),
            };
            let like = get(e, "iso_checksum")
                .cloned()
                .or_else(|| url_entry.as_ref().map(|(_, _, v)| v.clone()))
                .or_else(|| type_entry.as_ref().map(|(_, _, v)| v.clone()))
                .expect("one of them is set");
            put(e, "iso_checksum", tree::string(fixed, &like), Some(slot));
        }
        Ok(())
    })
}

fn qemu_host_port(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t == "qemu",
        |run, obj, e| {
            for (old, new) in [
                ("ssh_host_port_min", "host_port_min"),
                ("ssh_host_port_max", "host_port_max"),
            ] {
                let Some(i) = tree::index(e, old) else {
                    continue;
                };
                let (k, v) = e.remove(i);
                run.note(obj, &k, &v, format!("`{old}` is now `{new}`"), &[new]);
                put(e, new, v, Some(Slot::of(i, &k)));
            }
            Ok(())
        },
    )
}

fn azure_exclude_from_latest(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    builders_of(
        run,
        root,
        |t| t.starts_with("azure-chroot"),
        |run, _, e| {
            let Some(sid) = tree::get_mut(e, "shared_image_destination") else {
                return Ok(());
            };
            let obj = Obj::of(sid);
            let Some(inner) = entries_mut(sid) else {
                return Ok(());
            };
            rename_noted(
                run,
                &obj,
                inner,
                "exlude_from_latest",
                "exclude_from_latest",
            );
            Ok(())
        },
    )
}

fn proxmox_type(run: &mut Run<'_>, root: &mut Node) -> Result<(), Diagnostic> {
    rename_type(run, root, "proxmox", "proxmox-iso")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_time_pattern() {
        assert_eq!(replace_create_time("a-{{.CreateTime}}"), "a-{{timestamp}}");
        assert_eq!(
            replace_create_time("{{ \t.CreateTime\n }}x{{ .CreateTime}}"),
            "{{timestamp}}x{{timestamp}}"
        );
        assert_eq!(replace_create_time("{{{.CreateTime}}"), "{{{timestamp}}");
        assert_eq!(
            replace_create_time("{{ .CreateTimes }}"),
            "{{ .CreateTimes }}"
        );
        assert_eq!(replace_create_time("{{ CreateTime }}"), "{{ CreateTime }}");
    }

    #[test]
    fn powershell_unescape() {
        assert_eq!(ps_unescape("a`$b`\"c``d`'e`x`"), "a$b\"c`d'e`x`");
        assert_eq!(ps_unescape("````$"), "``$");
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("False"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
