//! File-system chores on the root directory: removing it safely (never
//! through a mount left inside it), clamping timestamps, removing files by
//! simple patterns.
use std::io;
use std::path::{Path, PathBuf};

/// Mount points at or under `dir` listed in a `/proc/self/mountinfo` text,
/// deepest first (the order to unmount them).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_octal(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount everything mounted at or under `dir` (lazily), then check that
/// nothing is left. Never deletes anything.
pub fn unmount_all_under(dir: &Path) -> Result<(), String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for attempt in 0..3 {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let left = mounts_under(&info, &dir);
        if left.is_empty() {
            return Ok(());
        }
        if attempt == 2 {
            return Err(format!(
                "still mounted: {}",
                left.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for m in left {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    Ok(())
}

/// Remove a directory tree that may have had file systems mounted inside
/// (a chroot): unmount them first, and refuse to delete if any remain.
pub fn remove_tree(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_all_under(dir).map_err(|e| format!("not removing {}: {e}", dir.display()))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

/// Set the modification and access times of every file under `root` newer
/// than `epoch` to `epoch` (links themselves, not their targets), so files
/// made while installing do not carry the build's time. Returns how many
/// were changed.
pub fn clamp_mtimes(root: &Path, epoch: i64) -> io::Result<u64> {
    let t = filetime::FileTime::from_unix_time(epoch, 0);
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let md = e.path().symlink_metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            }
            let m = filetime::FileTime::from_last_modification_time(&md);
            if m.unix_seconds() > epoch {
                filetime::set_symlink_file_times(e.path(), t, t)?;
                n += 1;
            }
        }
    }
    // Directories last touched by the walk's own changes: the root too.
    let md = root.symlink_metadata()?;
    if filetime::FileTime::from_last_modification_time(&md).unix_seconds() > epoch {
        filetime::set_symlink_file_times(root, t, t)?;
        n += 1;
    }
    Ok(n)
}

/// Remove files under `root` matching `pattern` (relative; `*` only in the
/// last component). Returns the removed paths.
pub fn remove_matching(root: &Path, pattern: &str) -> io::Result<Vec<PathBuf>> {
    let (dir, file) = match pattern.rsplit_once('/') {
        Some((d, f)) => (root.join(d), f),
        None => (root.to_path_buf(), pattern),
    };
    let mut removed = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        if kiln_core::glob::star_match(file, &e.file_name().to_string_lossy()) {
            std::fs::remove_file(e.path())?;
            removed.push(e.path());
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_chroot_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
30 22 0:5 / /tmp/k/root/dev rw - devtmpfs udev rw
31 30 0:6 / /tmp/k/root/dev/pts rw - devpts devpts rw
32 22 0:7 / /tmp/k/root/proc rw - proc proc rw
33 22 0:8 / /tmp/k/root2 rw - tmpfs t rw
34 22 0:9 / /tmp/k/root/with\\040space rw - tmpfs t rw
";
        let m = mounts_under(info, Path::new("/tmp/k/root"));
        assert_eq!(
            m,
            vec![
                PathBuf::from("/tmp/k/root/dev/pts"),
                PathBuf::from("/tmp/k/root/dev"),
                PathBuf::from("/tmp/k/root/proc"),
                PathBuf::from("/tmp/k/root/with space"),
            ]
        );
        assert!(mounts_under(info, Path::new("/elsewhere")).is_empty());
    }

    #[test]
    fn remove_and_clamp() {
        let d = tempfile::tempdir().unwrap();
        let ssh = d.path().join("etc/ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        for f in ["ssh_host_rsa_key", "ssh_host_rsa_key.pub", "sshd_config"] {
            std::fs::write(ssh.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink("sshd_config", ssh.join("link")).unwrap();
        let r = remove_matching(d.path(), "etc/ssh/ssh_host_*").unwrap();
        assert_eq!(r.len(), 2);
        assert!(ssh.join("sshd_config").exists());
        assert!(remove_matching(d.path(), "nope/x*").unwrap().is_empty());

        let n = clamp_mtimes(d.path(), 1_000_000).unwrap();
        assert!(n >= 4, "{n}");
        for p in [ssh.join("sshd_config"), ssh.join("link"), ssh.clone()] {
            let md = p.symlink_metadata().unwrap();
            assert_eq!(
                filetime::FileTime::from_last_modification_time(&md).unix_seconds(),
                1_000_000,
                "{}",
                p.display()
            );
        }
        // Older files are left alone.
        assert_eq!(clamp_mtimes(d.path(), 2_000_000).unwrap(), 0);
    }

    #[test]
    fn remove_tree_of_plain_dirs() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("root");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "x").unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        remove_tree(&t).unwrap();
    }
}
