//! Glob patterns: one implementation for each meaning a pattern has in
//! kiln.
//!
//! - [`star_match`]: `*` matches any run of characters, nothing else is
//!   special. Build names in `-only`/`-except` (Packer 1.6.6 compares JSON
//!   build names exactly; kiln also takes `*`), and fixed file-name
//!   patterns kiln writes itself.
//! - [`go_match`] and [`glob`]: Go's `path/filepath.Match` and `Glob`, for
//!   patterns a template gives where Packer calls `filepath.Glob`
//!   (`artifice`'s `files`, `cd_files`): `*` and `?` never match `/`, `*`
//!   matches leading dots, `[a-z]`/`[^...]` classes, `\` escapes, no `**`.
//!   Matches in each directory come in lexical order; a pattern without
//!   meta characters matches itself if it exists (even a dangling symlink).
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters (`/` included) and every other character itself.
pub fn star_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Every existing path matching `pattern`.
pub fn glob(pattern: &str) -> Result<Vec<PathBuf>, BadPattern> {
    // Validate the whole pattern up front, as Go's Match would on the way.
    go_match(pattern, "")?;
    if !has_meta(pattern) {
        return Ok(if std::fs::symlink_metadata(pattern).is_ok() {
            vec![PathBuf::from(pattern)]
        } else {
            vec![]
        });
    }
    let (dir, file) = match pattern.rfind('/') {
        Some(i) => (&pattern[..=i], &pattern[i + 1..]),
        None => ("", pattern),
    };
    let dir = match dir {
        "" => ".".to_string(),
        "/" => "/".to_string(),
        d => d.trim_end_matches('/').to_string(),
    };
    let dirs = if has_meta(&dir) {
        glob(&dir)?
    } else {
        vec![PathBuf::from(dir)]
    };
    let mut out = Vec::new();
    for d in dirs {
        glob_in(&d, file, &mut out)?;
    }
    Ok(out)
}

fn glob_in(dir: &Path, pattern: &str, out: &mut Vec<PathBuf>) -> Result<(), BadPattern> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for n in names {
        if go_match(pattern, &n)? {
            out.push(if dir == Path::new(".") {
                PathBuf::from(n)
            } else {
                dir.join(n)
            });
        }
    }
    Ok(())
}

/// Go's `filepath.Match` on Unix.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern: Vec<char> = pattern.chars().collect();
    let mut name: Vec<char> = name.chars().collect();
    'outer: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(&pattern);
        if star && chunk.is_empty() {
            return Ok(!name.contains(&'/'));
        }
        let (t, ok) = match_chunk(&chunk, &name)?;
        if ok && (t.is_empty() || !rest.is_empty()) {
            name = t;
            pattern = rest;
            continue;
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != '/' {
                let (t, ok) = match_chunk(&chunk, &name[i + 1..])?;
                if ok {
                    if rest.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    pattern = rest;
                    continue 'outer;
                }
                i += 1;
            }
        }
        // No match: still report a malformed remainder of the pattern.
        check_syntax(&pattern)?;
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn check_syntax(pattern: &[char]) -> Result<(), BadPattern> {
    let mut pattern = pattern.to_vec();
    while !pattern.is_empty() {
        let (_, chunk, rest) = scan_chunk(&pattern);
        let mut c: &[char] = &chunk;
        while !c.is_empty() {
            match c[0] {
                '[' => {
                    c = &c[1..];
                    if c.first() == Some(&'^') {
                        c = &c[1..];
                    }
                    let mut n = 0;
                    loop {
                        if c.first() == Some(&']') && n > 0 {
                            c = &c[1..];
                            break;
                        }
                        let (_, r) = get_esc(c)?;
                        c = r;
                        if c[0] == '-' {
                            let (_, r) = get_esc(&c[1..])?;
                            c = r;
                        }
                        n += 1;
                    }
                }
                '\\' => {
                    if c.len() < 2 {
                        return Err(BadPattern);
                    }
                    c = &c[2..];
                }
                _ => c = &c[1..],
            }
        }
        pattern = rest;
    }
    Ok(())
}

fn scan_chunk(pattern: &[char]) -> (bool, Vec<char>, Vec<char>) {
    let mut p = pattern;
    let mut star = false;
    while p.first() == Some(&'*') {
        p = &p[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 < p.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, p[..i].to_vec(), p[i..].to_vec())
}

/// Match `chunk` (no `*`) at the start of `s`: the rest of `s` and whether
/// it matched.
fn match_chunk(chunk: &[char], s: &[char]) -> Result<(Vec<char>, bool), BadPattern> {
    let mut chunk = chunk;
    let mut s = s;
    while !chunk.is_empty() {
        if s.is_empty() {
            return Ok((vec![], false));
        }
        match chunk[0] {
            '[' => {
                let r = s[0];
                s = &s[1..];
                chunk = &chunk[1..];
                if chunk.is_empty() {
                    return Err(BadPattern);
                }
                let negated = chunk[0] == '^';
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == '-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    return Ok((vec![], false));
                }
            }
            '?' => {
                if s[0] == '/' {
                    return Ok((vec![], false));
                }
                s = &s[1..];
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == '\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(BadPattern)?
                } else {
                    c
                };
                if c != s[0] {
                    return Ok((vec![], false));
                }
                s = &s[1..];
                chunk = &chunk[1..];
            }
        }
    }
    Ok((s.to_vec(), true))
}

/// One possibly escaped character of a class; it must be followed by more
/// of the pattern.
fn get_esc(chunk: &[char]) -> Result<(char, &[char]), BadPattern> {
    let mut c = chunk;
    if c.is_empty() || c[0] == '-' || c[0] == ']' {
        return Err(BadPattern);
    }
    if c[0] == '\\' {
        c = &c[1..];
        if c.is_empty() {
            return Err(BadPattern);
        }
    }
    let r = c[0];
    c = &c[1..];
    if c.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, c))
}

#[cfg(test)]
mod tests {
    use super::{glob, go_match, star_match};

    #[test]
    fn star_matches_any_run_and_nothing_else_is_special() {
        for (p, n, want) in [
            ("*", "x", true),
            ("*", "", true),
            ("qemu-*", "qemu-a", true),
            ("qemu-*", "null", false),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a*b*c", "axxbyyc", true),
            ("ssh_host_*", "ssh_host_", true),
            ("ssh_host_*", "sshd_config", false),
            ("*.pub", "a.pub.bak", false),
            ("exact", "exactly", false),
            ("a?c", "abc", false),
            ("a?c", "a?c", true),
            ("[ab]", "a", false),
            ("x*", "x/y", true),
            ("é*", "été", true),
            ("t*", "été", false),
            ("*té", "été", true),
        ] {
            assert_eq!(star_match(p, n), want, "{p:?} {n:?}");
        }
    }

    #[test]
    fn glob_lists_matches_in_lexical_order_and_literal_paths_as_they_are() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b.img", "a.img", ".h.img", "c.txt", "sub/d.img"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let base = d.path().display().to_string();
        let names = |pat: &str| -> Vec<String> {
            glob(&format!("{base}/{pat}"))
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("*.img"), [".h.img", "a.img", "b.img"]);
        assert_eq!(names("*/*.img"), ["sub/d.img"]);
        assert_eq!(names("c.txt"), ["c.txt"]);
        assert!(names("missing").is_empty());
        assert!(glob(&format!("{base}/[")).is_err());
    }

    #[test]
    fn matches_like_go() {
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("*.img", ".hidden.img", Ok(true)),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("*x", "xxx", Ok(true)),
            ("a?", "a/", Ok(false)),
        ];
        for (p, n, want) in cases {
            let got = go_match(p, n).map_err(|_| ());
            assert_eq!(&got, want, "Match({p:?}, {n:?})");
        }
    }
}
