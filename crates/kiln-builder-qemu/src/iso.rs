//! CD images: `cd_files` and the cloud-init NoCloud seed.
use std::path::{Path, PathBuf};

/// An executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `mkisofs`-style arguments: Joliet and Rock Ridge, volume id `label`.
pub fn mkisofs_args(dir: &Path, label: &str, out: &Path) -> Vec<String> {
    let mut a = vec!["-quiet".to_string(), "-o".into(), out.display().to_string()];
    if !label.is_empty() {
        a.push("-V".into());
        a.push(label.into());
    }
    a.extend(["-J".into(), "-r".into(), dir.display().to_string()]);
    a
}

/// Expand a `cd_files` pattern (`*`, `?`, `[...]` in the last component).
pub fn glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let p = Path::new(pattern);
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let pat = p
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or_else(|| format!("bad pattern {pattern}"))?;
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err("wildcards are supported in the last path component only".into());
    }
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| wildmatch(&pat, &e.file_name().to_string_lossy()))
        .map(|e| {
            if p.parent().is_some_and(|d| d.as_os_str().is_empty()) {
                PathBuf::from(e.file_name())
            } else {
                dir.join(e.file_name())
            }
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Shell-style match of `*`, `?` and `[abc]`/`[a-z]`.
pub fn wildmatch(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else {
                    return n.first() == Some(&'[') && m(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let set = &p[1..end];
                let mut i = 0;
                let mut hit = false;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit && m(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && m(&p[1..], &n[1..]),
        }
    }
    m(&p, &n)
}

/// Copy `cd_files` into `dir` (files by name, directories with their
/// contents, as Packer lays them out on the CD).
pub fn stage_files(files: &[PathBuf], dir: &Path) -> std::io::Result<()> {
    for f in files {
        let name = f.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: no file name", f.display()),
            )
        })?;
        if f.is_dir() {
            copy_dir(f, &dir.join(name))?;
        } else {
            std::fs::copy(f, dir.join(name))?;
        }
    }
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name()))?;
        }
    }
    Ok(())
}

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
    fn wildcards() {
        for (p, n, want) in [
            ("*.iso", "a.iso", true),
            ("*.iso", "a.img", false),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("[ab]*", "b1", true),
            ("[a-c]x", "cx", true),
            ("[a-c]x", "dx", false),
            ("user-data", "user-data", true),
        ] {
            assert_eq!(wildmatch(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn globs_and_staging() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.yml", "b.yml", "c.txt"] {
            std::fs::write(d.path().join(f), f).unwrap();
        }
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/x"), "x").unwrap();
        let g = glob(&format!("{}/*.yml", d.path().display())).unwrap();
        assert_eq!(g, vec![d.path().join("a.yml"), d.path().join("b.yml")]);
        let out = d.path().join("stage");
        std::fs::create_dir(&out).unwrap();
        stage_files(&[d.path().join("c.txt"), d.path().join("sub")], &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("c.txt")).unwrap(), "c.txt");
        assert_eq!(std::fs::read_to_string(out.join("sub/x")).unwrap(), "x");
    }

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
        assert_eq!(
            mkisofs_args(Path::new("/s"), "cidata", Path::new("/o.iso")).join(" "),
            "-quiet -o /o.iso -V cidata -J -r /s"
        );
    }
}
