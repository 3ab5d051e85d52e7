//! Packer 1.6.6's `ansible` provisioner: Ansible runs on this machine (the
//! build host) and reaches the machine being built over SSH.
//!
//! Keys: `playbook_file` (required), `command` (default
//! `ansible-playbook`: one program, not a shell command), `extra_arguments`
//! and `ansible_env_vars` (rendered at run time, so `{{ .Host }}` and the
//! other generated values work), `ansible_ssh_extra_args`, `groups`,
//! `empty_groups`, `host_alias` (default `default`), `user`,
//! `inventory_file`, `inventory_directory`, `inventory_file_template`,
//! `keep_inventory_file`, `galaxy_file`, `galaxy_command`,
//! `galaxy_force_install`, `roles_path`, `collections_path`,
//! `sftp_command`, `use_sftp`, `skip_version_check`, `use_proxy`,
//! `local_port`, `ssh_host_key_file`, `ssh_authorized_key_file`. Files
//! are checked at validate time (a missing `playbook_file` is an error
//! then), and so is Ansible itself: `<command> --version` runs at validate
//! time unless `skip_version_check`, as in Packer.
//!
//! # How Ansible reaches the machine
//!
//! Packer 1.6.6 always (unless `use_proxy: false`) puts an SSH server of
//! its own on `127.0.0.1` in front of its communicator and points Ansible
//! at it. kiln does that only when it must:
//!
//! - **Directly**, when `use_proxy` is not set and the builder connected
//!   over SSH with a key kiln can hand over: the builder's generated
//!   values `Host`, `Port` and `User`, and the key (`SSHPrivateKey`, the
//!   build's temporary key, written to a 0600 file in the build's working
//!   directory; or the template's `ssh_private_key_file` as it is). The
//!   inventory line is `default ansible_host=<Host> ansible_user=<User>
//!   ansible_port=<Port>`, Ansible gets `-e
//!   ansible_ssh_private_key_file=<key>` and `--ssh-extra-args '-o
//!   IdentitiesOnly=yes'`, and host key checking is off
//!   (`ANSIBLE_HOST_KEY_CHECKING=False`), as Packer does with `use_proxy:
//!   false`. Ansible then talks to the machine's own sshd: its own
//!   connection multiplexing, its own sftp or scp, no extra hop. `user`
//!   defaults to the communicator's user; a `user` that differs from it
//!   makes kiln use the proxy instead (through the proxy, Packer's `user`
//!   only names the proxy's login, never a user on the machine).
//! - **Through the proxy** ([`crate::adapter`]), when `use_proxy` is true,
//!   or when the machine cannot be reached directly: no SSH key to give
//!   Ansible (a password or the SSH agent), no host, or no SSH
//!   communicator. Ansible logs in with a key generated for the run (or the user's own, with
//!   `ssh_authorized_key_file`), and its sessions run on the machine over
//!   the build's connection.
//! - `use_proxy: false` is Packer's: direct, with the same fall-back to
//!   the proxy (and a warning) when there is no host or no SSH.
//!
//! Through the proxy, `user` (the login Ansible uses, and `ansible_user`
//! in the inventory) defaults to the communicator's user, which is what
//! the proxied sessions run as. Packer's default is the user running
//! Packer: Ansible then puts its temporary files under `~<that user>` on
//! the machine, which fails when that user exists there (root, say) and is
//! not the login user.
//!
//! Ansible's output is streamed as it comes (stdout and stderr, each line
//! as a message). A failed run fails the build with Ansible's exit status
//! (`Error executing Ansible: Non-zero exit status: exit status 2`).
//! Private keys never reach the output: they go to files only.
//!
//! Environment, as Packer sets it: `ANSIBLE_HOST_KEY_CHECKING=False`
//! unless `ssh_host_key_file` is given, `ANSIBLE_SCP_IF_SSH=True` unless
//! `use_sftp`, then `ansible_env_vars`.
//!
//! # Where kiln differs from Packer 1.6.6
//!
//! - Direct connection by default (above); `use_proxy: true` gives
//!   Packer's default behaviour.
//! - The proxy's default `sftp_command` looks for `sftp-server` where
//!   Debian, Ubuntu, Fedora and Arch put it (Packer's default,
//!   `/usr/lib/sftp-server -e`, exists on none of them).
//! - The proxy's host key and generated client key are ed25519 (Packer:
//!   RSA 2048).
use crate::adapter::{Adapter, AdapterConfig, DEFAULT_SFTP_COMMAND};
use crate::common::{check_path, render, Kind, HTTP_ADDR_NOT_IMPLEMENTED};
use kiln_core::{
    async_trait, BuildCtx, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner,
};
use kiln_template::Decoder;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Packer's inventory line for Ansible 2 and later.
pub const INVENTORY_V2: &str =
    "{{ .HostAlias }} ansible_host={{ .Host }} ansible_user={{ .User }} ansible_port={{ .Port }}\n";
/// ... and for Ansible 1.
pub const INVENTORY_V1: &str = "{{ .HostAlias }} ansible_ssh_host={{ .Host }} ansible_ssh_user={{ .User }} ansible_ssh_port={{ .Port }}\n";

#[derive(Debug, Clone)]
pub struct Config {
    pub command: String,
    /// Uninterpolated (rendered at run time).
    pub extra_arguments: Vec<String>,
    /// Uninterpolated, `KEY=value`, with Packer's additions.
    pub ansible_env_vars: Vec<String>,
    pub playbook_file: String,
    pub ansible_ssh_extra_args: Vec<String>,
    pub groups: Vec<String>,
    pub empty_groups: Vec<String>,
    pub host_alias: String,
    /// Empty when not given.
    pub user: String,
    pub local_port: u16,
    pub ssh_host_key_file: Option<String>,
    pub ssh_authorized_key_file: Option<String>,
    pub sftp_command: String,
    pub use_sftp: bool,
    pub inventory_directory: Option<String>,
    /// Uninterpolated.
    pub inventory_file_template: Option<String>,
    pub inventory_file: Option<String>,
    pub keep_inventory_file: bool,
    pub galaxy_file: Option<String>,
    pub galaxy_command: String,
    pub galaxy_force_install: bool,
    pub roles_path: Option<String>,
    pub collections_path: Option<String>,
    pub use_proxy: Option<bool>,
    /// Ansible's major version (0 when `skip_version_check`, as Packer).
    pub major_version: u32,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// `<command> --version` and the version it prints, once per command per
/// process (validate and build both decode the template).
fn ansible_version(command: &str) -> Result<(String, u32), String> {
    type Versions = HashMap<String, Result<(String, u32), String>>;
    static CACHE: OnceLock<Mutex<Versions>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(command) {
        return r.clone();
    }
    let r = (|| {
        let out = std::process::Command::new(command)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("exec: \"{command}\": executable file not found in $PATH")
                } else {
                    e.to_string()
                };
                format!("Error running \"{command} --version\": {why}")
            })?;
        if !out.status.success() {
            return Err(format!(
                "Error running \"{command} --version\": {}",
                out.status
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let version = find_version(&text)
            .ok_or_else(|| format!("Could not find {command} version in output:\n{text}"))?;
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| format!("Could not parse major version from \"{version}\"."))?;
        Ok((version, major))
    })();
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(command.to_string(), r.clone());
    r
}

/// Packer's version pattern: a word character, a space, then digits and
/// dots with at least one dot (`ansible-playbook [core 2.14.18]` gives
/// `2.14.18`).
pub fn find_version(text: &str) -> Option<String> {
    let b = text.as_bytes();
    for i in 1..b.len() {
        if b[i] != b' ' || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
            continue;
        }
        let rest = &text[i + 1..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let n1 = digits(rest);
        if n1 == 0 || rest.as_bytes().get(n1) != Some(&b'.') {
            continue;
        }
        let n2 = digits(&rest[n1 + 1..]);
        if n2 == 0 {
            continue;
        }
        let mut end = n1 + 1 + n2;
        end += rest[end..]
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.' || *c == b'+')
            .count();
        return Some(rest[..end].to_string());
    }
    None
}

/// The name of the user running kiln.
fn current_user() -> Option<String> {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return Some(u);
        }
    }
    let out = std::process::Command::new("id").arg("-un").output().ok()?;
    let u = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!u.is_empty()).then_some(u)
}

impl Config {
    pub fn decode(d: &mut Decoder<'_>) -> Option<Config> {
        d.raw_keys(&[
            "extra_arguments",
            "ansible_env_vars",
            "inventory_file_template",
        ]);
        let command = non_empty(d.string("command")).unwrap_or_else(|| "ansible-playbook".into());
        let extra_arguments = d.raw_string_list("extra_arguments").unwrap_or_default();
        let mut ansible_env_vars = d.raw_string_list("ansible_env_vars").unwrap_or_default();
        let playbook_file = d.string("playbook_file").unwrap_or_default();
        let ansible_ssh_extra_args = d.string_list("ansible_ssh_extra_args").unwrap_or_default();
        let groups = d.string_list("groups").unwrap_or_default();
        let empty_groups = d.string_list("empty_groups").unwrap_or_default();
        let host_alias = non_empty(d.string("host_alias")).unwrap_or_else(|| "default".into());
        let user = d.string("user").unwrap_or_default();
        let local_port = d.int("local_port").unwrap_or(0);
        let ssh_host_key_file = non_empty(d.string("ssh_host_key_file"));
        let ssh_authorized_key_file = non_empty(d.string("ssh_authorized_key_file"));
        let sftp_command = d.string("sftp_command").unwrap_or_default();
        let skip_version_check = d.bool("skip_version_check").unwrap_or(false);
        let use_sftp = d.bool("use_sftp").unwrap_or(false);
        let inventory_directory = non_empty(d.string("inventory_directory"));
        let inventory_file_template = non_empty(d.raw_string("inventory_file_template"));
        let inventory_file = non_empty(d.string("inventory_file"));
        let keep_inventory_file = d.bool("keep_inventory_file").unwrap_or(false);
        let galaxy_file = non_empty(d.string("galaxy_file"));
        let galaxy_command =
            non_empty(d.string("galaxy_command")).unwrap_or_else(|| "ansible-galaxy".into());
        let galaxy_force_install = d.bool("galaxy_force_install").unwrap_or(false);
        let roles_path = non_empty(d.string("roles_path"));
        let collections_path = non_empty(d.string("collections_path"));
        let use_proxy = d.bool("use_proxy");

        let mut ok = true;
        if playbook_file.is_empty() {
            d.error_here("playbook_file must be specified.");
            ok = false;
        } else {
            ok &= check_path(d, "playbook_file", &playbook_file, Kind::File);
        }
        for (key, v) in [
            ("galaxy_file", &galaxy_file),
            ("ssh_authorized_key_file", &ssh_authorized_key_file),
            ("ssh_host_key_file", &ssh_host_key_file),
        ] {
            if let Some(p) = v {
                ok &= check_path(d, key, p, Kind::File);
            }
        }
        if ssh_host_key_file.is_none() {
            ansible_env_vars.push("ANSIBLE_HOST_KEY_CHECKING=False".into());
        }
        if !use_sftp {
            ansible_env_vars.push("ANSIBLE_SCP_IF_SSH=True".into());
        }
        let local_port = match u16::try_from(local_port) {
            Ok(p) => p,
            Err(_) => {
                d.error(
                    "local_port",
                    format!("local_port: {local_port} must be a valid port"),
                );
                ok = false;
                0
            }
        };
        if let Some(p) = &inventory_directory {
            ok &= check_path(d, "inventory_directory", p, Kind::Dir);
        }
        let mut major_version = 0;
        if !skip_version_check {
            match ansible_version(&command) {
                Ok((_, m)) => major_version = m,
                Err(e) => {
                    d.error("command", e);
                    ok = false;
                }
            }
        }
        if user.is_empty() && current_user().is_none() {
            d.error_here("user: could not determine current user from environment.");
            ok = false;
        }
        ok.then_some(Config {
            command,
            extra_arguments,
            ansible_env_vars,
            playbook_file,
            ansible_ssh_extra_args,
            groups,
            empty_groups,
            host_alias,
            user,
            local_port,
            ssh_host_key_file,
            ssh_authorized_key_file,
            sftp_command,
            use_sftp,
            inventory_directory,
            inventory_file_template,
            inventory_file,
            keep_inventory_file,
            galaxy_file,
            galaxy_command,
            galaxy_force_install,
            roles_path,
            collections_path,
            use_proxy,
            major_version,
        })
    }
}

pub struct Ansible {
    pub config: Config,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    Config::decode(d).map(|config| Box::new(Ansible { config }) as Box<dyn Provisioner>)
}

/// How Ansible gets to the machine for this run.
enum Route {
    /// The machine's own sshd: host, port, user, key file.
    Direct {
        host: String,
        port: String,
        user: String,
        key_file: String,
    },
    /// kiln's proxy on 127.0.0.1: the adapter (stopped on drop), the user
    /// Ansible logs in as, the key file for it (none with
    /// `ssh_authorized_key_file`).
    Proxy {
        adapter: Adapter,
        user: String,
        key_file: String,
    },
}

/// Write `data` to a new 0600 file in `dir`; removed when dropped.
fn secret_file(
    dir: &std::path::Path,
    prefix: &str,
    data: &str,
) -> Result<tempfile::TempPath, BuildError> {
    use std::io::Write;
    let _ = std::fs::create_dir_all(dir);
    let mut f = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)
        .or_else(|_| tempfile::Builder::new().prefix(prefix).tempfile())
        .map_err(|e| {
            BuildError::msg(format!(
                "Error writing private key to temp file for ansible connection: {e}"
            ))
        })?;
    // tempfile creates files 0600.
    f.write_all(data.as_bytes())
        .and_then(|_| f.flush())
        .map_err(|_| BuildError::msg("failed to write private key to temp file"))?;
    Ok(f.into_temp_path())
}

/// Packer's `checkArg`: is `name` one of the `=`-separated parts of any
/// argument?
fn check_arg(name: &str, args: &[String]) -> bool {
    args.iter().any(|a| a.split('=').any(|p| p == name))
}

impl Ansible {
    /// Choose the route and set it up. `keep` holds temporary files
    /// (removed when the run ends).
    async fn route(
        &self,
        ctx: &BuildCtx,
        comm: Option<&Arc<dyn Communicator>>,
        keep: &mut Vec<tempfile::TempPath>,
    ) -> Result<Route, BuildError> {
        let c = &self.config;
        let g = ctx.generated();
        let host = g.get("Host").cloned().unwrap_or_default();
        let port = g.get("Port").cloned().unwrap_or_default();
        let comm_user = g.get("User").cloned().unwrap_or_default();
        let is_ssh = g.get("ConnType").map(String::as_str) == Some("ssh") && comm.is_some();
        let key_file = g
            .get("SSHPrivateKeyFile")
            .filter(|f| !f.is_empty())
            .cloned();
        let key = g
            .get("SSHPrivateKey")
            .filter(|k| !k.trim().is_empty())
            .cloned();
        let ui = &*ctx.ui;

        let mut direct = c.use_proxy != Some(true);
        if c.use_proxy == Some(false) {
            if host.is_empty() {
                ui.error("Warning: use_proxy is false, but instance does not have an IP address to give to Ansible. Falling back to use localhost proxy.");
                direct = false;
            } else if !is_ssh {
                ui.error("Warning: use_proxy is false, but communicator is not ssh, so without the proxy ansible will not function. Falling back to localhost proxy.");
                direct = false;
            } else if key_file.is_none() && key.is_none() {
                ui.error("Warning: use_proxy is false, but the builder has no SSH key kiln can give Ansible (a password or the SSH agent logs in). Falling back to localhost proxy.");
                direct = false;
            }
        } else if direct {
            direct = !host.is_empty()
                && !port.is_empty()
                && is_ssh
                && (key_file.is_some() || key.is_some())
                && (c.user.is_empty() || c.user == comm_user);
        }

        if direct {
            let key_file = match key_file {
                Some(f) => f,
                None => {
                    let p =
                        secret_file(&ctx.work_dir, "ansible-key", key.as_deref().unwrap_or(""))?;
                    let s = p.display().to_string();
                    keep.push(p);
                    s
                }
            };
            let user = if c.user.is_empty() {
                comm_user
            } else {
                c.user.clone()
            };
            ui.message(&format!(
                "Not using Proxy adapter for Ansible run:\n\tAnsible connects to {host}:{port} as {user} with the builder's SSH key"
            ));
            return Ok(Route::Direct {
                host,
                port,
                user,
                key_file,
            });
        }

        let Some(comm) = comm else {
            return Err(BuildError::msg(
                "the ansible provisioner needs a communicator, but this build has `communicator: none`",
            ));
        };
        ui.message("Setting up proxy adapter for Ansible....");
        // Packer's default is the user running Packer; Ansible then
        // expands `~<that user>` on the machine for its temporary files,
        // which is someone else's home (or nobody's) there. The
        // communicator's user is the one the proxy's sessions run as.
        let user = if !c.user.is_empty() {
            c.user.clone()
        } else if !comm_user.is_empty() {
            comm_user
        } else {
            current_user().ok_or_else(|| {
                BuildError::msg("user: could not determine current user from environment.")
            })?
        };
        let (authorized, key_file) = match &c.ssh_authorized_key_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|_| BuildError::msg("Failed to read public key"))?;
                let k = russh::keys::ssh_key::PublicKey::from_openssh(text.trim())
                    .map_err(|_| BuildError::msg("Failed to parse authorized key"))?;
                (k.key_data().clone(), String::new())
            }
            None => {
                let pair = kiln_ssh::TempKeyPair::generate_named("kiln-ansible");
                let k = russh::keys::ssh_key::PublicKey::from_openssh(&pair.public_authorized)
                    .map_err(|e| BuildError::msg(format!("Failed to generate key pair: {e}")))?;
                let p = secret_file(&ctx.work_dir, "ansible-key", &pair.private_openssh)?;
                let s = p.display().to_string();
                keep.push(p);
                (k.key_data().clone(), s)
            }
        };
        let host_key = match &c.ssh_host_key_file {
            Some(f) => kiln_ssh::keys::load_private_key(std::path::Path::new(f)).map_err(|e| {
                BuildError::msg(format!(
                    "error creating host signer: Failed to load private host key: {e}"
                ))
            })?,
            None => kiln_ssh::TempKeyPair::generate_named("kiln-ansible-proxy")
                .private_key()
                .map_err(|e| BuildError::msg(format!("error creating host signer: {e}")))?,
        };
        let sftp_command = if c.sftp_command.is_empty() {
            DEFAULT_SFTP_COMMAND.to_string()
        } else {
            c.sftp_command.clone()
        };
        let adapter = Adapter::start(AdapterConfig {
            comm: comm.clone(),
            ui: ctx.ui.clone(),
            user: user.clone(),
            authorized_key: authorized,
            host_key,
            local_port: c.local_port,
            sftp_command,
        })
        .await?;
        Ok(Route::Proxy {
            adapter,
            user,
            key_file,
        })
    }

    /// Write the inventory (Packer's lines; the route's host, port, user).
    fn write_inventory(
        &self,
        pctx: &ProvisionCtx<'_>,
        host: &str,
        port: &str,
        user: &str,
    ) -> Result<tempfile::TempPath, BuildError> {
        use std::io::Write;
        let c = &self.config;
        let ctx = pctx.build;
        let template = c.inventory_file_template.clone().unwrap_or_else(|| {
            if c.major_version < 2 {
                INVENTORY_V1.to_string()
            } else {
                INVENTORY_V2.to_string()
            }
        });
        let line = render(
            "inventory_file_template",
            &template,
            &pctx.interp,
            ctx,
            &[
                ("HostAlias", &c.host_alias),
                ("User", user),
                ("Host", host),
                ("Port", port),
            ],
        )
        .map_err(|e| e.context("Error generating inventory file from template"))?;
        let mut text = line.clone();
        for g in &c.groups {
            text.push_str(&format!("[{g}]\n{line}"));
        }
        for g in &c.empty_groups {
            text.push_str(&format!("[{g}]\n"));
        }
        let dir = match &c.inventory_directory {
            Some(d) => PathBuf::from(d),
            None => {
                let _ = std::fs::create_dir_all(&ctx.work_dir);
                ctx.work_dir.clone()
            }
        };
        let mut f = tempfile::Builder::new()
            .prefix("packer-provisioner-ansible")
            .tempfile_in(&dir)
            .map_err(|e| BuildError::msg(format!("Error preparing inventory file: {e}")))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .map_err(|e| BuildError::msg(format!("Error preparing inventory file: {e}")))?;
        Ok(f.into_temp_path())
    }

    /// `ansible-galaxy` for `galaxy_file` (roles, and collections when the
    /// file lists some), on this machine.
    async fn galaxy(&self, ctx: &BuildCtx, env: &[(String, String)]) -> Result<(), BuildError> {
        let c = &self.config;
        let Some(file) = &c.galaxy_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| BuildError::msg(format!("Error executing Ansible Galaxy: {file}: {e}")))?;
        let has = |k: &str| text.lines().any(|l| l.starts_with(k));
        let (has_roles, has_collections) = (has("roles:"), has("collections:"));
        let mut runs = Vec::new();
        if has_roles || !has_collections {
            let mut a = vec!["install".to_string(), "-r".into(), file.clone()];
            if c.galaxy_force_install {
                a.push("-f".into());
            }
            if let Some(p) = &c.roles_path {
                a.extend(["-p".to_string(), p.clone()]);
            }
            runs.push(a);
        }
        if has_collections {
            let mut a = vec![
                "collection".to_string(),
                "install".into(),
                "-r".into(),
                file.clone(),
            ];
            if c.galaxy_force_install {
                a.push("-f".into());
            }
            if let Some(p) = &c.collections_path {
                a.extend(["-p".to_string(), p.clone()]);
            }
            runs.push(a);
        }
        for args in runs {
            ctx.ui.message("Executing Ansible Galaxy");
            let mut argv = vec![c.galaxy_command.clone()];
            argv.extend(args);
            let code = run_local(ctx, &argv, env).await?;
            if code != 0 {
                return Err(BuildError::msg(format!(
                    "Error executing Ansible Galaxy: Non-zero exit status: exit status {code}"
                )));
            }
        }
        Ok(())
    }
}

/// Run a command on this machine, its output streamed (stdout and stderr
/// as messages, as Packer shows Ansible's).
async fn run_local(
    ctx: &BuildCtx,
    argv: &[String],
    env: &[(String, String)],
) -> Result<i32, BuildError> {
    use kiln_core::local::{run_streaming, ExecError};
    struct Messages<'a>(&'a dyn kiln_core::Ui);
    impl kiln_core::Ui for Messages<'_> {
        fn say(&self, m: &str) {
            self.0.say(m)
        }
        fn message(&self, m: &str) {
            self.0.message(m)
        }
        fn error(&self, m: &str) {
            self.0.message(m)
        }
        fn machine(&self, k: &str, d: &[&str]) {
            self.0.machine(k, d)
        }
        fn progress(&self, l: &str) -> Box<dyn kiln_core::communicator::TransferProgress> {
            self.0.progress(l)
        }
        fn add_secret(&self, s: &str) {
            self.0.add_secret(s)
        }
        fn name(&self) -> &str {
            self.0.name()
        }
        fn child(&self, l: &str) -> Arc<dyn kiln_core::Ui> {
            self.0.child(l)
        }
    }
    match run_streaming(argv, env, &Messages(&*ctx.ui), &ctx.cancel).await {
        Ok(c) => Ok(c),
        Err(ExecError::Cancelled) => Err(BuildError::Cancelled),
        Err(e) => Err(BuildError::msg(e.to_string())),
    }
}

#[async_trait]
impl Provisioner for Ansible {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let c = &self.config;
        let ui = &*ctx.ui;
        ui.say("Provisioning with Ansible...");
        let mut env_vars = Vec::new();
        for v in &c.ansible_env_vars {
            env_vars.push(
                render("ansible_env_vars", v, &pctx.interp, ctx, &[])
                    .map_err(|e| e.context("Could not interpolate ansible env vars"))?,
            );
        }
        let mut extra = Vec::new();
        for a in &c.extra_arguments {
            extra.push(
                render("extra_arguments", a, &pctx.interp, ctx, &[])
                    .map_err(|e| e.context("Could not interpolate ansible env vars"))?,
            );
        }

        let mut temp_files = Vec::new();
        let route = self.route(ctx, comm, &mut temp_files).await?;
        let (host, port, user, key_file) = match &route {
            Route::Direct {
                host,
                port,
                user,
                key_file,
            } => (host.clone(), port.clone(), user.clone(), key_file.clone()),
            Route::Proxy {
                adapter,
                user,
                key_file,
            } => (
                "127.0.0.1".to_string(),
                adapter.port.to_string(),
                user.clone(),
                key_file.clone(),
            ),
        };

        let mut kept_inventory = None;
        let inventory = match &c.inventory_file {
            Some(f) => f.clone(),
            None => {
                let p = self.write_inventory(pctx, &host, &port, &user)?;
                let s = p.display().to_string();
                if c.keep_inventory_file {
                    let kept = p.keep().map_err(|e| {
                        BuildError::msg(format!("Error preparing inventory file: {e}"))
                    })?;
                    ui.message(&format!("Inventory file kept: {}", kept.display()));
                } else {
                    kept_inventory = Some(p);
                }
                s
            }
        };

        let env: Vec<(String, String)> = env_vars
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.galaxy(ctx, &env).await?;

        // The command line, in Packer's order.
        let mut args: Vec<String> = Vec::new();
        if !ctx.build_name.is_empty() {
            args.push("-e".into());
            args.push(format!("packer_build_name={:?}", ctx.build_name));
        }
        args.push("-e".into());
        args.push(format!("packer_builder_type={}", ctx.build_type));
        let http = crate::common::http_addr(ctx);
        if http != HTTP_ADDR_NOT_IMPLEMENTED {
            args.push("-e".into());
            args.push(format!("packer_http_addr={http}"));
        }
        if !key_file.is_empty() {
            args.push("--ssh-extra-args".into());
            if c.ansible_ssh_extra_args.is_empty() {
                args.push("'-o IdentitiesOnly=yes'".into());
            } else {
                args.push(format!("'{}'", c.ansible_ssh_extra_args.concat()));
            }
        }
        args.extend(extra);
        if !check_arg("ansible_password", &args) && !key_file.is_empty() {
            args.push("-e".into());
            args.push(format!("ansible_ssh_private_key_file={key_file}"));
        }
        if check_arg("ansible_password", &args)
            && !check_arg("ansible_host_key_checking", &args)
            && !check_arg("ANSIBLE_HOST_KEY_CHECKING", &env_vars)
        {
            args.push("-e".into());
            args.push("ansible_host_key_checking=False".into());
        }
        let playbook = std::path::absolute(&c.playbook_file)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| c.playbook_file.clone());
        args.push("-i".into());
        args.push(inventory);
        args.push(playbook);

        let mut argv = vec![c.command.clone()];
        argv.extend(args);
        let mut shown = argv.join(" ");
        if let Some(pw) = ctx.generated().get("Password").filter(|p| !p.is_empty()) {
            shown = shown.replace(pw.as_str(), "*****");
        }
        ui.say(&format!("Executing Ansible: {shown}"));
        let code = run_local(ctx, &argv, &env).await;
        drop(route);
        drop(kept_inventory);
        drop(temp_files);
        let code = code?;
        if code != 0 {
            return Err(BuildError::msg(format!(
                "Error executing Ansible: Non-zero exit status: exit status {code}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            find_version("ansible-playbook [core 2.14.18]\n  config file = None").as_deref(),
            Some("2.14.18")
        );
        assert_eq!(
            find_version("ansible-playbook 2.9.6\n").as_deref(),
            Some("2.9.6")
        );
        assert_eq!(find_version("nothing here 12\n"), None);
    }

    #[test]
    fn check_arg_splits_on_equals() {
        let a = vec!["-e".to_string(), "ansible_password=x".to_string()];
        assert!(check_arg("ansible_password", &a));
        assert!(!check_arg("ansible_pass", &a));
    }
}
