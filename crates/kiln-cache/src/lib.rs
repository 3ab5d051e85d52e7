//! kiln's provisioning cache (issue #15): the state of a machine after each
//! provisioning step, kept so that the next build of the same template
//! resumes after the longest prefix of steps whose inputs did not change.
//!
//! - [`key`]: what a state's key covers: the builder's configuration
//!   without what only names the output, the source image's content, and
//!   for each provisioning step in order its rendered configuration and the
//!   content of every local file it reads. A `shell` provisioner with
//!   several `scripts` is one step per script.
//! - [`store`]: where states live and how they are published (atomically),
//!   checked (every file's size and SHA-256; a corrupt entry is removed and
//!   reported), listed and pruned (by age, by total size, oldest first).
//! - [`Settings`]: the cache's directory (`KILN_CACHE_DIR`, else
//!   `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`), the maximum age of a
//!   reusable state (24 hours; `KILN_CACHE_MAX_AGE`) and the size limit
//!   (`KILN_CACHE_MAX_SIZE`, 20 GiB), and whether the machine's memory is
//!   saved with each state (`KILN_CACHE_MEMORY`, on).
//!
//! # Status
//!
//! The keys, the store and `kiln cache list`/`prune` are done and tested;
//! the qemu builder saves and resumes states (`kiln_builder_qemu::cache`),
//! tested with real guests in `crates/kiln-cli/tests/cache_qemu.rs` (see
//! `docs/cache.md`).
//!
//! # The state of a machine
//!
//! The state saved after a step is the machine: its disk, as a qcow2
//! overlay on the state before it (the guest runs `sync`, QEMU pauses the
//! machine and switches the disk to a new overlay with QMP
//! `blockdev-snapshot-sync`), and its memory and devices, QEMU's migration
//! stream of the paused machine, in an entry of its own on top of the disk
//! state ([`key::memory_key`]: the state's key and the QEMU version). A
//! resumed build continues that machine (`-incoming`) instead of booting
//! its disk: 2-4 s instead of 35-45 s under TCG, and nothing that lived
//! only in memory is lost. What a provisioner can no longer rely on then:
//! network connections to the outside, and the clock (set again to the
//! host's with `sudo -n date` when the user may, else said).
//!
//! The memory is not used by another QEMU version or another machine
//! shape, nor when it is damaged or `KILN_CACHE_MEMORY=off`; the build
//! then boots the saved disk, which is the disk as a power cut at that
//! instant would leave it, everything written flushed (a journaling file
//! system recovers it), and what lived only in memory since an earlier
//! provisioner is gone: processes or services started by it and not
//! enabled at boot, files in tmpfs or cleaned at boot (`/tmp`, `/run`; no
//! state is saved after a `file` upload into them, see
//! [`StepInput::leaves_volatile_files`]), kernel modules loaded by hand, a
//! kernel upgraded but not rebooted into (a boot runs the new one).
//!
//! What is kiln's own and not the provisioners' is redone on a resume: the
//! builder starts QEMU and connects again, with the build's ports and
//! working directory (and the saved temporary key, for a continued
//! machine).
pub mod key;
pub mod store;

pub use key::{Digest, StepInput};
pub use store::{CacheError, Entry, EntryInfo, Hold, Meta, Store};

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// A state older than this is not reused (provisioners depend on the
/// outside world: `apt-get upgrade` today installs more than last week).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The cache's default size limit, kept by pruning the oldest states.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 30;

/// Where the cache is and how it is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub dir: PathBuf,
    pub max_age: Duration,
    pub max_size: u64,
    /// Save the machine's memory and devices with each state, so that a
    /// resumed build continues the machine instead of booting its disk
    /// (`KILN_CACHE_MEMORY=off` saves disks only).
    pub memory: bool,
}

impl Settings {
    /// From the environment (see the crate's documentation).
    pub fn from_env() -> Result<Settings, String> {
        Settings::from(|k| std::env::var_os(k))
    }

    /// From `env`, for tests.
    pub fn from(env: impl Fn(&str) -> Option<OsString>) -> Result<Settings, String> {
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        let dir = if let Some(d) = set("KILN_CACHE_DIR") {
            PathBuf::from(d)
        } else if let Some(x) = set("XDG_CACHE_HOME").filter(|x| PathBuf::from(x).is_absolute()) {
            PathBuf::from(x).join("kiln")
        } else if let Some(h) = set("HOME") {
            PathBuf::from(h).join(".cache").join("kiln")
        } else {
            return Err("no cache directory: set KILN_CACHE_DIR (or HOME)".into());
        };
        let max_age = match set("KILN_CACHE_MAX_AGE") {
            Some(v) => {
                parse_age(&v.to_string_lossy()).map_err(|e| format!("KILN_CACHE_MAX_AGE: {e}"))?
            }
            None => DEFAULT_MAX_AGE,
        };
        let max_size = match set("KILN_CACHE_MAX_SIZE") {
            Some(v) => {
                parse_size(&v.to_string_lossy()).map_err(|e| format!("KILN_CACHE_MAX_SIZE: {e}"))?
            }
            None => DEFAULT_MAX_SIZE,
        };
        let memory = match set("KILN_CACHE_MEMORY") {
            None => true,
            Some(v) => match v.to_string_lossy().to_ascii_lowercase().as_str() {
                "1" | "on" | "true" | "yes" => true,
                "0" | "off" | "false" | "no" => false,
                other => {
                    return Err(format!(
                    "KILN_CACHE_MEMORY: {other:?} is neither on nor off (1/0, true/false, yes/no)"
                ))
                }
            },
        };
        Ok(Settings {
            dir,
            max_age,
            max_size,
            memory,
        })
    }
}

/// A maximum age as a Go duration (`24h`, `1h30m`, `90m`, `45s`; `0s`:
/// never reuse).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 24h, 90m, 1h30m, 0s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.trim();
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let v: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += v * scale;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// A size: bytes, or with a suffix `K`, `M`, `G`, `T` (powers of 1024,
/// an optional `B` or `iB` after it).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 20G, 500M, 1048576)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_directory_by_precedence() {
        let s = Settings::from(env(&[("HOME", "/h")])).unwrap();
        assert_eq!(s.dir, PathBuf::from("/h/.cache/kiln"));
        assert_eq!(s.max_age, DEFAULT_MAX_AGE);
        assert_eq!(s.max_size, DEFAULT_MAX_SIZE);
        let s = Settings::from(env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])).unwrap();
        assert_eq!(s.dir, PathBuf::from("/x/kiln"));
        // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        let s = Settings::from(env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "x")])).unwrap();
        assert_eq!(s.dir, PathBuf::from("/h/.cache/kiln"));
        let s = Settings::from(env(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("KILN_CACHE_DIR", "/k"),
        ]))
        .unwrap();
        assert_eq!(s.dir, PathBuf::from("/k"));
        assert!(Settings::from(env(&[])).is_err());
    }

    #[test]
    fn age_and_size_from_the_environment() {
        let s = Settings::from(env(&[
            ("HOME", "/h"),
            ("KILN_CACHE_MAX_AGE", "90m"),
            ("KILN_CACHE_MAX_SIZE", "5G"),
        ]))
        .unwrap();
        assert_eq!(s.max_age, Duration::from_secs(5400));
        assert_eq!(s.max_size, 5 << 30);
        let e =
            Settings::from(env(&[("HOME", "/h"), ("KILN_CACHE_MAX_AGE", "1 day")])).unwrap_err();
        assert!(e.starts_with("KILN_CACHE_MAX_AGE: "), "{e}");
        assert!(parse_age("-1h").is_err());
        assert!(parse_age("1d").is_err());
        assert_eq!(parse_age("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_age("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("2kB").unwrap(), 2048);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_memory_is_saved_unless_turned_off() {
        assert!(Settings::from(env(&[("HOME", "/h")])).unwrap().memory);
        for (v, on) in [
            ("off", false),
            ("0", false),
            ("False", false),
            ("on", true),
            ("1", true),
        ] {
            let s = Settings::from(env(&[("HOME", "/h"), ("KILN_CACHE_MEMORY", v)])).unwrap();
            assert_eq!(s.memory, on, "{v}");
        }
        let e = Settings::from(env(&[("HOME", "/h"), ("KILN_CACHE_MEMORY", "maybe")])).unwrap_err();
        assert!(e.starts_with("KILN_CACHE_MEMORY: \"maybe\""), "{e}");
    }
}
