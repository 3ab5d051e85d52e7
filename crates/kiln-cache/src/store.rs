//! The store: one directory per published state, named by its key.
//!
//! ```text
//! ROOT/entries/KEY/meta.json   what the state is, and each file's size and SHA-256
//! ROOT/entries/KEY/...         the state's files (a disk overlay, ...)
//! ROOT/tmp/PID-N/              a state being written; never read
//! ROOT/sources/ID              memo of a source image's content digest
//! ```
//!
//! A state is written under `tmp/`, its files' digests recorded in
//! `meta.json`, everything synced, then the directory is renamed into
//! `entries/`: a process killed while saving leaves only a `tmp/`
//! directory (removed by the next open, once its process is gone), never
//! an entry that looks valid. Reading an entry checks every file's size and
//! digest; an entry that fails is removed (renamed out of `entries/` first)
//! and reported as [`CacheError::Corrupt`]. When two builds publish the
//! same key, the second finds it there and drops its own copy (same key,
//! same inputs). Removing an entry removes the entries saved on top of it
//! (their files may refer to its files, e.g. as a qcow2 backing file).
use crate::key::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The format of `meta.json`.
pub const META_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An entry failed its check and was removed.
    #[error("cache entry {} is corrupt ({why}): removed", &key[..key.len().min(12)])]
    Corrupt { key: String, why: String },
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CacheError {
    let what = what.to_string();
    move |source| CacheError::Io { what, source }
}

/// One file of an entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileMeta {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What an entry is (`meta.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub version: u32,
    pub key: String,
    /// The key of the state this one was saved on top of.
    pub parent: Option<String>,
    /// The template's path, for `kiln cache list`.
    pub template: String,
    pub build: String,
    /// Which provisioning step this is the state after (1-based).
    pub step: usize,
    /// The step, as said to the user (`shell: scripts/update.sh`).
    pub label: String,
    /// When it was saved (Unix seconds).
    pub created: i64,
    pub files: Vec<FileMeta>,
}

impl Meta {
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    pub fn age(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        Duration::from_secs(now.saturating_sub(self.created).max(0) as u64)
    }
    /// `2026-12-04 14:02 UTC`.
    pub fn saved_at(&self) -> String {
        saved_at(self.created)
    }
}

/// A time a state was saved (Unix seconds) as said to the user:
/// `2026-12-04 14:02 UTC`.
pub fn saved_at(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// What the caller says about a state it publishes.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub key: Digest,
    pub parent: Option<Digest>,
    pub template: String,
    pub build: String,
    pub step: usize,
    pub label: String,
}

/// A published, checked entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Entry {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The cache's directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether process `pid` still runs (Linux: `/proc/PID`).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn digest_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

fn sync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

impl Store {
    /// Open (creating) the store at `root`, and remove what processes that
    /// are gone left half-written.
    pub fn open(root: &Path) -> Result<Store, CacheError> {
        for d in ["entries", "tmp", "sources"] {
            std::fs::create_dir_all(root.join(d)).map_err(io(format!(
                "creating the cache directory {}",
                root.display()
            )))?;
        }
        let s = Store {
            root: root.to_path_buf(),
        };
        s.remove_stale_tmp();
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entries(&self) -> PathBuf {
        self.root.join("entries")
    }

    fn tmp_dir(&self, what: &str) -> PathBuf {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        self.root
            .join("tmp")
            .join(format!("{}-{what}{nanos}-{n}", std::process::id()))
    }

    fn remove_stale_tmp(&self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_none_or(|p| !alive(p) || name.contains("-dead")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// A directory to write a new state in; publish it with
    /// [`Pending::publish`] (dropped unpublished, it is removed).
    pub fn begin(&self) -> Result<Pending, CacheError> {
        let dir = self.tmp_dir("new");
        std::fs::create_dir_all(&dir).map_err(io("creating a cache entry"))?;
        Ok(Pending {
            dir,
            store: self.clone(),
            done: false,
        })
    }

    /// The entry of `key`, checked, or `None`. A corrupt entry is removed
    /// and returned as an error.
    pub fn get(&self, key: &Digest) -> Result<Option<Entry>, CacheError> {
        let dir = self.entries().join(key.hex());
        if !dir.exists() {
            return Ok(None);
        }
        match check(&dir, &key.hex()) {
            Ok(meta) => Ok(Some(Entry { dir, meta })),
            Err(why) => {
                self.remove_dir(&dir);
                Err(CacheError::Corrupt {
                    key: key.hex(),
                    why,
                })
            }
        }
    }

    /// The longest prefix of `keys` that a build can skip: element `i` is
    /// the state after step `i + 1`, or `None` for a step after which no
    /// state was saved (a builder may skip one, see
    /// [`crate::StepInput::leaves_volatile_files`]); the last element is
    /// always a state. A state counts only when it is checked, younger than
    /// `max_age` and saved on top of the previous state found (its
    /// `parent`); the first corrupt or stale one ends the prefix. Also a
    /// line for each corrupt entry met.
    pub fn lookup(
        &self,
        keys: &[Digest],
        max_age: Duration,
        now: SystemTime,
    ) -> (Vec<Option<Entry>>, Vec<CacheError>) {
        let mut hits: Vec<Option<Entry>> = Vec::new();
        let mut seen = 0;
        let mut problems = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match self.get(k) {
                Ok(Some(e)) if e.meta.age(now) > max_age => break,
                Ok(Some(e)) => {
                    let parent = hits
                        .iter()
                        .rev()
                        .flatten()
                        .next()
                        .map(|p| p.meta.key.clone());
                    if e.meta.parent != parent {
                        break;
                    }
                    hits.resize_with(i, || None);
                    hits.push(Some(e));
                    seen = i + 1;
                }
                Ok(None) => {}
                Err(e) => {
                    problems.push(e);
                    break;
                }
            }
        }
        hits.truncate(seen);
        (hits, problems)
    }

    /// Every entry (read, not checked: `list` stays fast), oldest first.
    /// Entries whose `meta.json` cannot be read are skipped.
    pub fn list(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = std::fs::read_dir(self.entries())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let meta = read_meta(&e.path()).ok()?;
                Some(Entry {
                    dir: e.path(),
                    meta,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (a.meta.created, a.meta.step, &a.meta.key).cmp(&(
                b.meta.created,
                b.meta.step,
                &b.meta.key,
            ))
        });
        out
    }

    /// Remove entries older than `max_age`, then the oldest until the total
    /// size is at most `max_size`; with each, the entries saved on top of
    /// it. Returns what was removed.
    pub fn prune(
        &self,
        max_age: Option<Duration>,
        max_size: Option<u64>,
        now: SystemTime,
    ) -> Vec<Meta> {
        self.remove_stale_tmp();
        // Entries whose meta.json is unreadable are debris: removed.
        if let Ok(rd) = std::fs::read_dir(self.entries()) {
            for e in rd.flatten() {
                if read_meta(&e.path()).is_err() {
                    self.remove_dir(&e.path());
                }
            }
        }
        let mut entries = self.list();
        let mut removed = Vec::new();
        let mut held: Vec<String> = Vec::new();
        let mut doomed: Vec<String> = entries
            .iter()
            .filter(|e| max_age.is_some_and(|a| e.meta.age(now) > a))
            .map(|e| e.meta.key.clone())
            .collect();
        loop {
            // Close `doomed` over descendants.
            loop {
                let more: Vec<String> = entries
                    .iter()
                    .filter(|e| {
                        !doomed.contains(&e.meta.key)
                            && !held.contains(&e.meta.key)
                            && e.meta.parent.as_ref().is_some_and(|p| doomed.contains(p))
                    })
                    .map(|e| e.meta.key.clone())
                    .collect();
                if more.is_empty() {
                    break;
                }
                doomed.extend(more);
            }
            let (gone, mut kept): (Vec<Entry>, Vec<Entry>) = entries
                .into_iter()
                .partition(|e| doomed.contains(&e.meta.key));
            for e in gone {
                if self.remove_unless_held(&e.dir) {
                    removed.push(e.meta);
                } else {
                    // A running build boots from it: kept.
                    held.push(e.meta.key.clone());
                    kept.push(e);
                }
            }
            kept.sort_by(|a, b| {
                (a.meta.created, a.meta.step, &a.meta.key).cmp(&(
                    b.meta.created,
                    b.meta.step,
                    &b.meta.key,
                ))
            });
            entries = kept;
            doomed.clear();
            let total: u64 = entries.iter().map(|e| e.meta.size()).sum();
            let oldest = entries.iter().find(|e| !held.contains(&e.meta.key));
            match (max_size, oldest) {
                (Some(limit), Some(oldest)) if total > limit => {
                    doomed = vec![oldest.meta.key.clone()];
                }
                _ => break,
            }
        }
        removed
    }

    /// Remove one entry (and what was saved on top of it).
    pub fn remove(&self, key: &str) -> Vec<Meta> {
        let entries = self.list();
        let mut doomed = vec![key.to_string()];
        loop {
            let more: Vec<String> = entries
                .iter()
                .filter(|e| {
                    !doomed.contains(&e.meta.key)
                        && e.meta.parent.as_ref().is_some_and(|p| doomed.contains(p))
                })
                .map(|e| e.meta.key.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        let mut removed = Vec::new();
        for e in entries {
            if doomed.contains(&e.meta.key) {
                self.remove_dir(&e.dir);
                removed.push(e.meta);
            }
        }
        removed
    }

    /// Take a directory out of `entries/` atomically, then delete it.
    /// Hold `entry` for as long as the returned value lives: `prune`
    /// leaves a held entry in place (a running build boots from it, or
    /// saves on top of it). `None` when the entry is being removed or is
    /// gone: treat it as missing.
    pub fn hold(&self, entry: &Entry) -> Option<Hold> {
        let f = std::fs::File::open(entry.dir.join("meta.json")).ok()?;
        f.try_lock_shared().ok()?;
        // Still published (not renamed away between the open and the lock)?
        entry.dir.join("meta.json").exists().then_some(Hold(f))
    }

    /// Remove an entry's directory unless a build holds it (see
    /// [`Store::hold`]); the lock is kept while it is renamed away.
    fn remove_unless_held(&self, dir: &Path) -> bool {
        let Ok(f) = std::fs::File::open(dir.join("meta.json")) else {
            self.remove_dir(dir);
            return true;
        };
        if f.try_lock().is_err() {
            return false;
        }
        self.remove_dir(dir);
        true
    }

    fn remove_dir(&self, dir: &Path) {
        let dead = self.tmp_dir("dead");
        if std::fs::rename(dir, &dead).is_ok() {
            let _ = std::fs::remove_dir_all(&dead);
        }
    }

    /// The content digest of a source image, memoised by its path, inode,
    /// size and modification time (hashing a multi-gigabyte image on every
    /// build would cost seconds).
    pub fn source_digest(&self, path: &Path) -> Result<Digest, CacheError> {
        use std::os::unix::fs::MetadataExt;
        let what = || format!("reading the source image {}", path.display());
        let canon = std::fs::canonicalize(path).map_err(io(what()))?;
        let m = std::fs::metadata(&canon).map_err(io(what()))?;
        let mut h = Sha256::new();
        h.update(canon.as_os_str().as_encoded_bytes());
        h.update(format!(
            "\0{}\0{}\0{}\0{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ));
        let memo = self.root.join("sources").join(hex::encode(h.finalize()));
        if let Some(d) = std::fs::read_to_string(&memo)
            .ok()
            .and_then(|s| Digest::from_hex(s.trim()))
        {
            return Ok(d);
        }
        let d = crate::key::path_digest(&canon).map_err(io(what()))?;
        // Best effort: a memo that cannot be written is recomputed next time.
        let tmp = memo.with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&tmp, d.hex()).is_ok() {
            let _ = std::fs::rename(&tmp, &memo);
        }
        Ok(d)
    }
}

fn read_meta(dir: &Path) -> Result<Meta, String> {
    let text =
        std::fs::read_to_string(dir.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| format!("meta.json: {e}"))?;
    if meta.version != META_VERSION {
        return Err(format!("meta.json version {}", meta.version));
    }
    Ok(meta)
}

/// Check an entry: its meta, then every file's size and digest.
fn check(dir: &Path, key: &str) -> Result<Meta, String> {
    let meta = read_meta(dir)?;
    if meta.key != key {
        return Err(format!("meta.json names key {}", meta.key));
    }
    for f in &meta.files {
        let p = dir.join(&f.name);
        let len = std::fs::metadata(&p)
            .map_err(|e| format!("{}: {e}", f.name))?
            .len();
        if len != f.size {
            return Err(format!("{} is {len} bytes, {} expected", f.name, f.size));
        }
        let (_, sha) = digest_file(&p).map_err(|e| format!("{}: {e}", f.name))?;
        if sha != f.sha256 {
            return Err(format!(
                "{}: content differs from when it was saved",
                f.name
            ));
        }
    }
    Ok(meta)
}

/// A state being written.
pub struct Pending {
    dir: PathBuf,
    store: Store,
    done: bool,
}

impl Pending {
    /// Where to write the state's files (flat: no subdirectories).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record the files' digests, sync, and publish under `info.key`. If
    /// another build published that key meanwhile, its entry is returned
    /// and this copy dropped.
    pub fn publish(self, info: &EntryInfo) -> Result<Entry, CacheError> {
        self.publish_ours(info).map(|(e, _)| e)
    }

    /// [`Pending::publish`], also saying whether the entry is this one
    /// (`false`: another writer published the key first and its entry is
    /// returned). A builder whose state lost that race must not save
    /// states on top of the winner's: its next delta was made over its
    /// own disk, whose bytes differ.
    pub fn publish_ours(mut self, info: &EntryInfo) -> Result<(Entry, bool), CacheError> {
        let mut files = Vec::new();
        let mut rd: Vec<_> = std::fs::read_dir(&self.dir)
            .map_err(io("reading a new cache entry"))?
            .collect::<Result<_, _>>()
            .map_err(io("reading a new cache entry"))?;
        rd.sort_by_key(|e| e.file_name());
        for e in rd {
            let name = e.file_name().to_string_lossy().to_string();
            if name == "meta.json" {
                continue;
            }
            let p = e.path();
            let what = format!("saving {}", p.display());
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io(&what))?;
            let (size, sha256) = digest_file(&p).map_err(io(&what))?;
            files.push(FileMeta { name, size, sha256 });
        }
        let meta = Meta {
            version: META_VERSION,
            key: info.key.hex(),
            parent: info.parent.map(|p| p.hex()),
            template: info.template.clone(),
            build: info.build.clone(),
            step: info.step,
            label: info.label.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64,
            files,
        };
        let text = serde_json::to_string_pretty(&meta).expect("meta serialises");
        let mp = self.dir.join("meta.json");
        let mut f = std::fs::File::create(&mp).map_err(io("writing meta.json"))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io("writing meta.json"))?;
        sync_dir(&self.dir).map_err(io("syncing a new cache entry"))?;
        let target = self.store.entries().join(info.key.hex());
        match std::fs::rename(&self.dir, &target) {
            Ok(()) => {
                self.done = true;
                let _ = sync_dir(&self.store.entries());
                Ok((Entry { dir: target, meta }, true))
            }
            Err(e) if target.exists() => {
                // Published by another build meanwhile: keep theirs.
                let _ = e;
                match self.store.get(&info.key)? {
                    Some(entry) => Ok((entry, false)),
                    None => Err(CacheError::Io {
                        what: "publishing a cache entry".into(),
                        source: std::io::Error::other("the entry vanished"),
                    }),
                }
            }
            Err(e) => Err(CacheError::Io {
                what: format!("publishing the cache entry {}", target.display()),
                source: e,
            }),
        }
    }
}

/// A shared lock on a published entry (see [`Store::hold`]).
#[derive(Debug)]
pub struct Hold(#[allow(dead_code)] std::fs::File);

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Digest {
        Digest([b; 32])
    }

    fn info(k: u8, parent: Option<u8>, step: usize) -> EntryInfo {
        EntryInfo {
            key: key(k),
            parent: parent.map(key),
            template: "/t/local.json".into(),
            build: "qemu".into(),
            step,
            label: format!("shell: s{step}.sh"),
        }
    }

    fn save(s: &Store, k: u8, parent: Option<u8>, step: usize, content: &str) -> Entry {
        let p = s.begin().unwrap();
        std::fs::write(p.dir().join("disk.qcow2"), content).unwrap();
        p.publish(&info(k, parent, step)).unwrap()
    }

    fn set_created(e: &Entry, created: i64) {
        let mut m = e.meta.clone();
        m.created = created;
        std::fs::write(e.path("meta.json"), serde_json::to_string(&m).unwrap()).unwrap();
    }

    #[test]
    fn publish_then_get_and_lookup_the_longest_prefix() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let e1 = save(&s, 1, None, 1, "one");
        save(&s, 2, Some(1), 2, "two");
        assert_eq!(
            std::fs::read_to_string(e1.path("disk.qcow2")).unwrap(),
            "one"
        );
        assert_eq!(e1.meta.files[0].size, 3);
        let got = s.get(&key(2)).unwrap().unwrap();
        assert_eq!(got.meta.parent, Some(key(1).hex()));
        assert_eq!(got.meta.step, 2);
        assert!(s.get(&key(9)).unwrap().is_none());
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let (hits, problems) = s.lookup(&[key(1), key(2), key(3)], day, now);
        assert_eq!(hits.len(), 2);
        assert!(problems.is_empty());
        // A step without a state is skipped over when the next state was
        // saved on top of the last one found...
        let (hits, _) = s.lookup(&[key(1), key(3), key(2)], day, now);
        assert_eq!(hits.len(), 3);
        assert!(hits[1].is_none() && hits[2].is_some());
        // ...but not a state saved on top of another one.
        let (hits, _) = s.lookup(&[key(2), key(1)], day, now);
        assert!(hits.is_empty(), "{hits:?}");
        let (hits, _) = s.lookup(&[key(1), key(9)], day, now);
        assert_eq!(hits.len(), 1, "trailing misses are not hits");
        // Nothing half-written is left in tmp/.
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_stale_state_is_not_reused_nor_anything_after_it() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let e1 = save(&s, 1, None, 1, "one");
        save(&s, 2, Some(1), 2, "two");
        let now = SystemTime::now();
        let old = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 - 2 * 86400;
        set_created(&e1, old);
        // meta.json changed by hand is still a valid entry (only payload
        // files are digested), which is what this test needs.
        let day = Duration::from_secs(86400);
        let (hits, _) = s.lookup(&[key(1), key(2)], day, now);
        assert!(hits.is_empty());
        let (hits, _) = s.lookup(&[key(1), key(2)], 3 * day, now);
        assert_eq!(hits.len(), 2);
    }

    #[test]
    fn a_truncated_or_altered_entry_is_detected_and_dropped() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        save(&s, 1, None, 1, "one");
        let e2 = save(&s, 2, Some(1), 2, "two!");
        // Truncated.
        std::fs::write(e2.path("disk.qcow2"), "tw").unwrap();
        let (hits, problems) = s.lookup(&[key(1), key(2)], Duration::MAX, SystemTime::now());
        assert_eq!(
            hits.len(),
            1,
            "the build continues from the previous good state"
        );
        assert_eq!(problems.len(), 1);
        let msg = problems[0].to_string();
        assert!(
            msg.contains("is 2 bytes, 4 expected") && msg.contains("removed"),
            "{msg}"
        );
        assert!(!e2.dir.exists(), "dropped");
        assert!(s.get(&key(2)).unwrap().is_none());
        // Same size, other content.
        let e2 = save(&s, 2, Some(1), 2, "two!");
        std::fs::write(e2.path("disk.qcow2"), "TWO!").unwrap();
        assert!(matches!(s.get(&key(2)), Err(CacheError::Corrupt { .. })));
        // An unreadable meta.json.
        let e2 = save(&s, 2, Some(1), 2, "two!");
        std::fs::write(e2.path("meta.json"), "{").unwrap();
        assert!(matches!(s.get(&key(2)), Err(CacheError::Corrupt { .. })));
        // A missing file.
        let e2 = save(&s, 2, Some(1), 2, "two!");
        std::fs::remove_file(e2.path("disk.qcow2")).unwrap();
        assert!(matches!(s.get(&key(2)), Err(CacheError::Corrupt { .. })));
    }

    #[test]
    fn an_unpublished_state_leaves_nothing_and_a_dead_writer_is_cleaned() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        {
            let p = s.begin().unwrap();
            std::fs::write(p.dir().join("disk.qcow2"), "x").unwrap();
            // Dropped: as a failed save.
        }
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
        // What a SIGKILLed writer leaves: a tmp dir of a process that is
        // gone (pid 0x7fffffff cannot exist), with a complete-looking meta.
        let dead = t.path().join("tmp/2147483647-new1-0");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("disk.qcow2"), "x").unwrap();
        assert!(s.list().is_empty(), "not an entry");
        assert!(s.get(&key(1)).unwrap().is_none());
        let s = Store::open(t.path()).unwrap();
        assert!(!dead.exists(), "removed on open");
        // One of a live process (ours) stays.
        let live = s.begin().unwrap();
        Store::open(t.path()).unwrap();
        assert!(live.dir().exists());
    }

    #[test]
    fn two_writers_of_one_key_both_get_a_valid_entry() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let a = s.begin().unwrap();
        let b = s.begin().unwrap();
        std::fs::write(a.dir().join("disk.qcow2"), "same").unwrap();
        std::fs::write(b.dir().join("disk.qcow2"), "same").unwrap();
        let (ea, a_ours) = a.publish_ours(&info(1, None, 1)).unwrap();
        let (eb, b_ours) = b.publish_ours(&info(1, None, 1)).unwrap();
        assert_eq!(ea.dir, eb.dir);
        assert!(a_ours && !b_ours, "the second writer is told it lost");
        assert!(s.get(&key(1)).unwrap().is_some());
        assert_eq!(s.list().len(), 1);
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn prune_leaves_what_a_running_build_holds() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let now = SystemTime::now();
        let a1 = save(&s, 1, None, 1, "aaaa");
        let a2 = save(&s, 2, Some(1), 2, "bbbb");
        let b1 = save(&s, 3, None, 1, "cccc");
        let h1 = s.hold(&a1).unwrap();
        let h2 = s.hold(&a2).unwrap();
        // Everything is over the limit: only what is not held goes.
        let gone = s.prune(Some(Duration::ZERO), Some(0), now);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].key, b1.meta.key);
        assert!(a1.dir.exists() && a2.dir.exists());
        // A held child keeps itself; its unheld parent... is held too here.
        drop(h2);
        let gone = s.prune(Some(Duration::ZERO), Some(0), now);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].key, a2.meta.key);
        drop(h1);
        let gone = s.prune(Some(Duration::ZERO), Some(0), now);
        assert_eq!(gone.len(), 1);
        assert!(s.list().is_empty());
        // An entry removed cannot be held.
        assert!(s.hold(&a1).is_none());
    }

    #[test]
    fn prune_by_age_and_size_takes_descendants_along() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let a1 = save(&s, 1, None, 1, "aaaa");
        let a2 = save(&s, 2, Some(1), 2, "bbbb");
        let b1 = save(&s, 3, None, 1, "cccc");
        set_created(&a1, secs - 3 * 3600);
        set_created(&a2, secs - 60);
        set_created(&b1, secs - 3600);
        // Nothing older than a day.
        assert!(s
            .prune(Some(Duration::from_secs(86400)), None, now)
            .is_empty());
        // a1 is older than 2 hours: a2, saved on top of it, goes too.
        let gone = s.prune(Some(Duration::from_secs(7200)), None, now);
        let mut keys: Vec<_> = gone.iter().map(|m| m.step).collect();
        keys.sort();
        assert_eq!(keys, [1, 2]);
        assert_eq!(s.list().len(), 1);
        // By size: oldest first until at most the limit.
        let c1 = save(&s, 4, None, 1, "dddd");
        set_created(&c1, secs - 10);
        assert!(s.prune(None, Some(8), now).is_empty());
        let gone = s.prune(None, Some(4), now);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, key(3).hex(), "the oldest");
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.prune(None, Some(0), now).len(), 1);
        assert!(s.list().is_empty());
    }

    #[test]
    fn the_source_digest_is_of_the_content_and_memoised() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("c")).unwrap();
        let img = t.path().join("base.qcow2");
        std::fs::write(&img, "image").unwrap();
        let d1 = s.source_digest(&img).unwrap();
        assert_eq!(d1, crate::key::file_digest(&img).unwrap());
        assert_eq!(
            std::fs::read_dir(t.path().join("c/sources"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(s.source_digest(&img).unwrap(), d1);
        std::fs::write(&img, "image 2").unwrap();
        assert_ne!(s.source_digest(&img).unwrap(), d1);
    }
}
