//! The provisioning cache's qemu side (issue #15, `docs/cache.md`): the
//! base key (the rendered configuration minus what only names the output,
//! and the source image's digest), the lookup of the longest reusable
//! prefix of provisioning steps, and the saving of the disk after each
//! step: the guest runs `sync`, QEMU switches the disk to a new overlay
//! (QMP `blockdev-snapshot-sync`), the frozen overlay is copied into the
//! store, rebased (`qemu-img rebase -u`) onto the previous state's file.
//! A resumed build boots a new overlay on the last reused state.
//!
//! After the machine has stopped (temporary keys removed, the
//! `shutdown_command` run), the disk is saved once more as the *final*
//! state (`kiln_cache::key::final_key`). A build whose every input is
//! unchanged finds it and starts no machine: the steps that make, boot,
//! connect and stop one are passed over (`finished`), and the output is
//! converted from the final state.
use crate::config::Config;
use crate::driver::Driver;
use crate::steps::State;
use kiln_cache::{Digest, Entry, EntryInfo, Store};
use kiln_core::{async_trait, BuildCtx, BuildError, ProvisionStep, StepDone};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The file of a state in its entry.
pub const DISK: &str = "disk.qcow2";

/// What `kiln build` said about the cache, and the builder's rendered
/// configuration (for the base key). `config: None`: no cache.
#[derive(Debug, Clone, Default)]
pub struct CacheOpts {
    pub config: Option<serde_json::Value>,
    pub max_age: Option<Duration>,
}

/// Why this build cannot use the cache, if it cannot.
pub fn unsupported(c: &Config) -> Option<&'static str> {
    if !c.disk_image {
        Some("it installs from an ISO (only `disk_image: true` builds are cached)")
    } else if c.use_backing_file {
        Some("`use_backing_file` is set")
    } else if !c.disk_additional_size.is_empty() {
        Some("it has `disk_additional_size`")
    } else if c.format != "qcow2" {
        Some("its `format` is not qcow2")
    } else if c.comm.is_none() {
        Some("it has no communicator")
    } else {
        None
    }
}

/// The cache's state during a build.
pub struct CacheRun {
    pub store: Store,
    pub keys: Vec<Digest>,
    /// The skipped steps, in order: the state after each, or `None` where
    /// none was saved; the last one is a state (see `Store::lookup`).
    pub hits: Vec<Option<Entry>>,
    /// The final state (the machine provisioned and stopped) when every
    /// step is reused and it was saved: the build needs no machine.
    pub finished: Option<Entry>,
    pub template: String,
    pub saver: Arc<Saver>,
    /// The machine's memory and devices saved with the state the build
    /// resumes from, when it was (`crate::memory`).
    pub memory: Option<crate::memory::Saved>,
}

impl CacheRun {
    /// The state the build resumes from.
    pub fn resume_from(&self) -> Option<&Entry> {
        self.hits.last().and_then(Option::as_ref)
    }
}

/// What the builder does to the disk between the last provisioner and the
/// stopped machine, for the final state's key. `cleanup` names the
/// version of kiln's own removal of its temporary keys
/// (`StepCleanupTempKeys`): change it when that changes.
fn finish(c: &Config) -> serde_json::Value {
    serde_json::json!({
        "shutdown_command": c.shutdown_command,
        "cleanup": "kiln-temp-keys/1",
    })
}

/// The local files the builder gives the machine, whose content is part
/// of the base key: `cd_files` (a user's own cloud-init seed, say),
/// `floppy_files`, `floppy_dirs`, `http_directory`.
fn builder_files(c: &Config) -> Vec<PathBuf> {
    let mut files = c.cd.files.clone();
    for f in &c.floppy.files {
        // A pattern matching nothing adds nothing; a missing path is
        // refused when the template is read.
        files.extend(kiln_commonsteps::cd::expand(f).unwrap_or_default());
    }
    files.extend(c.floppy.dirs.iter().map(PathBuf::from));
    files.extend(c.http.directory.iter().cloned());
    files
}

/// The cached final state the build converts, if it needs no machine.
pub fn finished_entry(state: &State) -> Option<&Entry> {
    state.cache.as_ref().and_then(|c| c.finished.as_ref())
}

/// Whether the build needs no machine (its final state is cached).
pub fn finished(state: &State) -> bool {
    finished_entry(state).is_some()
}

/// Looks the build's states up; says each reused one. `None` when the
/// cache is off or unusable (said once).
pub fn lookup(
    c: &Config,
    opts: &CacheOpts,
    steps: &[ProvisionStep],
    source: &std::path::Path,
    ctx: &BuildCtx,
    d: Arc<dyn Driver>,
) -> Option<CacheRun> {
    let config = opts.config.as_ref()?;
    if steps.is_empty() {
        return None;
    }
    if let Some(why) = unsupported(c) {
        ctx.ui.message(&format!(
            "The provisioning cache is not used for this build: {why}"
        ));
        return None;
    }
    let settings = match kiln_cache::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            ctx.ui
                .error(&format!("The provisioning cache is not used: {e}"));
            return None;
        }
    };
    let max_age = opts.max_age.unwrap_or(settings.max_age);
    let store = match Store::open(&settings.dir) {
        Ok(s) => s,
        Err(e) => {
            ctx.ui
                .error(&format!("The provisioning cache is not used: {e}"));
            return None;
        }
    };
    let digest = match store.source_digest(source) {
        Ok(d) => d,
        Err(e) => {
            ctx.ui
                .error(&format!("The provisioning cache is not used: {e}"));
            return None;
        }
    };
    let mut cfg = config.clone();
    if let serde_json::Value::Object(m) = &mut cfg {
        m.remove("type");
        m.remove("name");
    }
    let base = kiln_cache::key::base_key(
        "qemu",
        &cfg,
        kiln_cache::key::QEMU_OUTPUT_ONLY_KEYS,
        &digest,
        &builder_files(c),
    );
    let inputs: Vec<_> = steps.iter().map(|s| s.input.clone()).collect();
    let keys = kiln_cache::key::chain(&base, &inputs);
    let final_key = kiln_cache::key::final_key(keys.last()?, &finish(c));
    let mut all = keys.clone();
    all.push(final_key);
    let (mut hits, problems) = store.lookup(&all, max_age, SystemTime::now());
    // Hold the states this build boots from, so that a `kiln cache prune`
    // (or another build keeping the cache under its size limit) leaves
    // them; one being removed right now ends the reusable prefix there.
    let mut holds = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        if let Some(e) = h {
            match store.hold(e) {
                Some(hold) => holds.push((i, hold)),
                None => {
                    holds.retain(|(j, _)| *j < i);
                    break;
                }
            }
        }
    }
    let usable = holds.last().map_or(0, |(i, _)| i + 1);
    hits.truncate(usable);
    let mut holds: Vec<kiln_cache::Hold> = holds.into_iter().map(|(_, h)| h).collect();
    for p in problems {
        // Name the step the bad state belongs to.
        let step = match &p {
            kiln_cache::CacheError::Corrupt { key, why } => {
                all.iter().position(|k| k.hex() == *key).map(|i| (i, why))
            }
            _ => None,
        };
        match step {
            Some((i, why)) if i == keys.len() => ctx.ui.error(&format!(
                "The cached state of the stopped machine is damaged ({why}): removed it (entry {}); the machine starts again",
                &final_key.hex()[..12],
            )),
            Some((i, why)) => ctx.ui.error(&format!(
                "The cached state after provisioner {} ({}) is damaged ({why}): removed it (entry {}); provisioner {} runs again",
                i + 1,
                steps[i].label,
                &keys[i].hex()[..12],
                i + 1
            )),
            None => ctx.ui.error(&format!("The provisioning cache: {p}")),
        }
    }
    let finished = if hits.len() > keys.len() {
        hits.pop().flatten()
    } else {
        None
    };
    let last = hits.len();
    for (h, s) in hits.iter().zip(steps) {
        match h {
            Some(h) => ctx.ui.say(&format!(
                "Using the cached state after provisioner {} ({}), saved {}; -no-cache runs it again",
                s.index,
                s.label,
                h.meta.saved_at()
            )),
            None => ctx.ui.say(&format!(
                "Provisioner {} ({}) is in the cached state after provisioner {last}",
                s.index, s.label
            )),
        }
    }
    if let Some(f) = &finished {
        ctx.ui.say(&format!(
            "Nothing changed: the machine as it was after its last provisioner and shutdown is cached (saved {}); converting it without starting a machine; -no-cache builds it again",
            f.meta.saved_at()
        ));
    }
    // The machine's memory with the state the build resumes from: the
    // build continues that machine instead of booting its disk.
    let version = settings
        .memory
        .then(|| crate::memory::qemu_version(&c.qemu_binary))
        .flatten();
    let mut memory = None;
    if let (Some(v), Some(Some(e)), None) = (&version, hits.last(), &finished) {
        let key = kiln_cache::key::memory_key(&state_key(e), v);
        match store.get(&key) {
            Ok(Some(m)) => match (store.hold(&m), crate::memory::read_machine(&m)) {
                (Some(h), Ok(saved)) => {
                    holds.push(h);
                    memory = Some(saved);
                }
                (None, _) => {}
                (Some(_), Err(why)) => {
                    ctx.ui.error(&format!(
                        "The cached memory after provisioner {} is unreadable ({why}): the machine boots from the saved disk",
                        hits.len()
                    ));
                }
            },
            Ok(None) => {}
            Err(e) => ctx.ui.error(&format!(
                "The cached memory after provisioner {} is damaged ({e}); the machine boots from the saved disk",
                hits.len()
            )),
        }
    }
    let template = c.interp.template_dir.display().to_string();
    let saver = Arc::new(Saver {
        d,
        inner: Mutex::new(SaverState {
            prev: hits.last().cloned().flatten(),
            top: None,
            qmp: PathBuf::new(),
            comm: None,
            broken: false,
            signature: None,
            key: None,
            memory: version,
        }),
        store: store.clone(),
        keys: keys.clone(),
        final_key,
        template: template.clone(),
        max_size: settings.max_size,
        holds: Mutex::new(holds),
    });
    Some(CacheRun {
        store,
        keys,
        hits,
        finished,
        template,
        saver,
        memory,
    })
}

/// An entry's key, as a digest.
fn state_key(e: &Entry) -> Digest {
    Digest::from_hex(&e.meta.key).unwrap_or(Digest([0; 32]))
}

pub struct SaverState {
    /// The last state saved or reused.
    pub prev: Option<Entry>,
    /// The disk file QEMU writes now.
    pub top: Option<PathBuf>,
    pub qmp: PathBuf,
    pub comm: Option<Arc<dyn kiln_core::Communicator>>,
    /// A save failed: the states after it would have no parent.
    pub broken: bool,
    /// The shape of QEMU's command line (`crate::memory::signature`).
    pub signature: Option<String>,
    /// The build's temporary key, saved with the memory.
    pub key: Option<kiln_ssh::TempKeyPair>,
    /// The QEMU version, while the machine's memory is saved with each
    /// state (`None`: disks only).
    pub memory: Option<String>,
}

/// Saves the disk after each provisioning step.
pub struct Saver {
    d: Arc<dyn Driver>,
    pub inner: Mutex<SaverState>,
    store: Store,
    keys: Vec<Digest>,
    /// The key of the stopped machine's state.
    final_key: Digest,
    template: String,
    /// The cache's size limit, kept after each save.
    max_size: u64,
    /// The states this build boots from or saved: kept by any prune.
    holds: Mutex<Vec<kiln_cache::Hold>>,
}

impl Saver {
    fn lock(&self) -> std::sync::MutexGuard<'_, SaverState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn save(&self, ctx: &BuildCtx, step: &ProvisionStep) -> Result<(), SaveError> {
        let (top, qmp, comm, prev) = {
            let s = self.lock();
            (s.top.clone(), s.qmp.clone(), s.comm.clone(), s.prev.clone())
        };
        let top = top.ok_or("no disk")?;
        let comm = comm.ok_or("no communicator")?;
        let out = kiln_ssh::CollectOutput::default();
        match comm.start("sync", &out).await {
            Ok(kiln_core::ExitStatus::Code(0)) => {}
            r => return Err(format!("`sync` in the guest: {r:?}").into()),
        }
        let blocks = crate::qmp::execute(&qmp, "query-block").await?;
        let device = blocks
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| {
                b.pointer("/inserted/file").and_then(|f| f.as_str())
                    == Some(top.to_string_lossy().as_ref())
            })
            .and_then(|b| b.get("device").and_then(|d| d.as_str()))
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("QEMU has no drive on {}", top.display()))?
            .to_string();
        let next = ctx.work_dir.join(format!("state-{}.qcow2", step.index));
        let snapshot = || {
            crate::qmp::execute_with(
                &qmp,
                "blockdev-snapshot-sync",
                serde_json::json!({
                    "device": device,
                    "snapshot-file": next.display().to_string(),
                    "format": "qcow2",
                }),
            )
        };
        // With the memory: the machine stopped, the disk frozen and the
        // memory written at one instant, then the machine continued.
        let (version, signature, key) = {
            let s = self.lock();
            (s.memory.clone(), s.signature.clone(), s.key.clone())
        };
        let mut memory = match (version, signature) {
            (Some(v), Some(sig)) => match self.store.begin() {
                Ok(p) => Some((p, v, sig)),
                Err(e) => {
                    self.no_memory(ctx, step, &e.to_string());
                    None
                }
            },
            _ => None,
        };
        let saved_memory = if let Some((pending, _, _)) = &memory {
            crate::qmp::execute(&qmp, "stop").await?;
            let r = match snapshot().await {
                Ok(_) => {
                    Ok(crate::memory::save(&qmp, &pending.dir().join(crate::memory::MEMORY)).await)
                }
                Err(e) => Err(e),
            };
            // Whatever happened, the machine runs again (a paused machine
            // would hang the next provisioner).
            crate::qmp::execute(&qmp, "cont").await.map_err(|e| {
                SaveError::Paused(format!(
                    "the machine was paused to save it and did not continue: {e}"
                ))
            })?;
            // The machine's clock stood still while it was paused: set it
            // to the host's again, quietly (a resumed build says so).
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let quiet = kiln_ssh::CollectOutput::default();
            let _ = comm.start(&crate::memory::clock_command(now), &quiet).await;
            r?
        } else {
            snapshot().await?;
            Err("off".to_string())
        };
        self.lock().top = Some(next);
        let key_k = self.keys[step.index - 1];
        let published = self
            .store_layer(ctx, &top, prev, key_k, step.index, &step.label)
            .await?;
        match (published, saved_memory) {
            (Some(disk), Ok(())) => {
                let (pending, v, sig) = memory.take().expect("a memory save was pending");
                let r = crate::memory::write_machine(pending.dir(), &sig, key.as_ref()).and_then(
                    |()| {
                        pending
                            .publish(&EntryInfo {
                                key: kiln_cache::key::memory_key(&key_k, &v),
                                parent: Some(state_key(&disk)),
                                template: self.template.clone(),
                                build: ctx.build_name.clone(),
                                step: step.index,
                                label: format!("{} (memory)", step.label),
                            })
                            .map_err(|e| e.to_string())
                    },
                );
                match r {
                    Ok(e) => {
                        if let Some(h) = self.store.hold(&e) {
                            self.holds.lock().unwrap_or_else(|p| p.into_inner()).push(h);
                        }
                    }
                    Err(e) => self.no_memory(ctx, step, &e),
                }
            }
            (Some(_), Err(e)) if memory.is_some() => self.no_memory(ctx, step, &e),
            _ => {}
        }
        Ok(())
    }

    /// Stops saving the machine's memory for the rest of the build (the
    /// disks are still saved), saying why once.
    fn no_memory(&self, ctx: &BuildCtx, step: &ProvisionStep, why: &str) {
        self.lock().memory = None;
        ctx.ui.error(&format!(
            "Could not save the machine's memory after provisioner {} ({}) in the provisioning cache: {why}; its disk is saved, and later states are disks only",
            step.index, step.label
        ));
    }

    /// Saves the disk once the machine has stopped: the layer QEMU wrote
    /// since the last state, as the final state. Nothing when a save
    /// failed or another build won a race (the layer would sit on a state
    /// whose bytes are not this disk's).
    pub async fn save_final(&self, ctx: &BuildCtx) {
        let (top, prev, broken) = {
            let s = self.lock();
            (s.top.clone(), s.prev.clone(), s.broken)
        };
        let Some(top) = top.filter(|_| !broken) else {
            return;
        };
        let step = self.keys.len() + 1;
        if let Err(e) = self
            .store_layer(ctx, &top, prev, self.final_key, step, "stopped machine")
            .await
        {
            ctx.ui.error(&format!(
                "Could not save the stopped machine in the provisioning cache: {e}; the next build starts the machine again"
            ));
        }
    }

    /// Copies the frozen disk layer `top` into a new entry for `key`,
    /// rebased onto `prev`'s file, publishes it, holds it and keeps the
    /// cache under its size limit.
    async fn store_layer(
        &self,
        ctx: &BuildCtx,
        top: &std::path::Path,
        prev: Option<Entry>,
        key: Digest,
        index: usize,
        label: &str,
    ) -> Result<Option<Entry>, String> {
        let pending = self.store.begin().map_err(|e| e.to_string())?;
        let dst = pending.dir().join(DISK);
        let (s, t) = (top.to_path_buf(), dst.clone());
        tokio::task::spawn_blocking(move || std::fs::copy(&s, &t))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("copying {}: {e}", top.display()))?;
        if let Some(p) = &prev {
            self.d
                .qemu_img(
                    ctx,
                    &[
                        "rebase".into(),
                        "-u".into(),
                        "-b".into(),
                        p.path(DISK).display().to_string(),
                        "-F".into(),
                        "qcow2".into(),
                        dst.display().to_string(),
                    ],
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        let (e, ours) = pending
            .publish_ours(&EntryInfo {
                key,
                parent: prev.as_ref().and_then(|p| Digest::from_hex(&p.meta.key)),
                template: self.template.clone(),
                build: ctx.build_name.clone(),
                step: index,
                label: label.to_string(),
            })
            .map_err(|e| e.to_string())?;
        if !ours {
            // Another build of the same inputs published this state first:
            // this build's later deltas were made over its own disk, not
            // over that one, so they cannot be saved on top of it.
            ctx.ui.say(&format!(
                "Another build saved the same state (step {index}: {label}) first; this build saves no further states"
            ));
            self.lock().broken = true;
            return Ok(None);
        }
        if let Some(h) = self.store.hold(&e) {
            self.holds.lock().unwrap_or_else(|p| p.into_inner()).push(h);
        }
        self.lock().prev = Some(e.clone());
        // Keep the cache under its size limit, oldest states first (never
        // one a running build holds).
        let gone = self
            .store
            .prune(None, Some(self.max_size), SystemTime::now());
        if !gone.is_empty() {
            let bytes: u64 = gone.iter().map(|m| m.size()).sum();
            ctx.ui.say(&format!(
                "The provisioning cache is over its size limit ({}): removed {} older state(s), {}",
                kiln_core::ui::human_bytes(self.max_size),
                gone.len(),
                kiln_core::ui::human_bytes(bytes)
            ));
        }
        Ok(Some(e))
    }
}

/// Why a state was not saved.
enum SaveError {
    /// The state is not saved; the build goes on.
    Failed(String),
    /// The machine cannot go on: the build fails.
    Paused(String),
}

impl From<String> for SaveError {
    fn from(s: String) -> Self {
        SaveError::Failed(s)
    }
}

impl From<&str> for SaveError {
    fn from(s: &str) -> Self {
        SaveError::Failed(s.to_string())
    }
}

#[async_trait]
impl StepDone for Saver {
    async fn done(&self, ctx: &BuildCtx, step: &ProvisionStep) -> Result<(), BuildError> {
        if self.lock().broken || step.index > self.keys.len() {
            return Ok(());
        }
        if step.input.leaves_volatile_files() {
            ctx.ui.say(&format!(
                "No cached state after provisioner {} ({}): it uploads into a directory the next boot empties; a resumed build runs it again",
                step.index, step.label
            ));
            return Ok(());
        }
        let r = match self.save(ctx, step).await {
            Err(SaveError::Paused(e)) => kiln_core::bail!("Provisioning cache: {e}"),
            Err(SaveError::Failed(e)) => Err(e),
            Ok(()) => Ok(()),
        };
        if let Err(e) = r {
            self.lock().broken = true;
            ctx.ui.error(&format!(
                "Could not save the state after provisioner {} ({}) in the provisioning cache: {e}; the next build runs it again",
                step.index, step.label
            ));
        }
        Ok(())
    }
}

/// Keep the state's fields in sync with the machine (called before
/// provisioning).
pub fn attach(run: &CacheRun, state: &State) {
    let mut s = run.saver.lock();
    s.top = state.disks.first().cloned();
    s.qmp = state.qmp_socket.clone();
    s.comm = state.machine.comm.clone();
    s.signature = state.machine_signature.clone();
    s.key = state.machine.key.clone();
}
