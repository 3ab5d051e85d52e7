//! `kiln cache list` and `kiln cache prune`, on a cache directory filled
//! through kiln-cache's store (as a build saves states).
mod common;
use common::joined as text;
use kiln_cache::{Digest, EntryInfo, Store};
use std::path::Path;
use std::process::Output;

/// `kiln ARGS` (in the cache's parent directory) with `cache` as its
/// cache, and no limits taken from the environment.
fn kiln(cache: &Path, args: &[&str]) -> Output {
    common::kiln(cache.parent().unwrap())
        .args(args)
        .env("KILN_CACHE_DIR", cache)
        .env_remove("KILN_CACHE_MAX_AGE")
        .env_remove("KILN_CACHE_MAX_SIZE")
        .output()
        .unwrap()
}

fn save(s: &Store, k: u8, parent: Option<u8>, step: usize, bytes: usize, age_secs: i64) {
    let p = s.begin().unwrap();
    std::fs::write(p.dir().join("disk.qcow2"), vec![b'x'; bytes]).unwrap();
    let e = p
        .publish(&EntryInfo {
            key: Digest([k; 32]),
            parent: parent.map(|p| Digest([p; 32])),
            template: "/src/seed/local.json".into(),
            build: "qemu".into(),
            step,
            label: format!("shell: scripts/s{step}.sh"),
        })
        .unwrap();
    // Backdate it (meta.json is not part of the checked payload).
    let mut m = e.meta.clone();
    m.created -= age_secs;
    std::fs::write(e.path("meta.json"), serde_json::to_string(&m).unwrap()).unwrap();
}

#[test]
fn list_then_prune_by_age_size_and_all() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let o = kiln(&cache, &["cache", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("is empty"), "{}", text(&o));

    let s = Store::open(&cache).unwrap();
    save(&s, 1, None, 1, 3000, 3 * 86400);
    save(&s, 2, Some(1), 2, 2000, 60);
    save(&s, 3, None, 1, 1000, 7200);
    let o = kiln(&cache, &["cache", "list"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("KEY "), "{out}");
    // Oldest first, with template, build, step, provisioner, size, age.
    assert!(lines[1].starts_with(&"01".repeat(6)), "{out}");
    for w in [
        "/src/seed/local.json",
        "qemu",
        "shell: scripts/s1.sh",
        "3d (too old to reuse)",
    ] {
        assert!(lines[1].contains(w), "{w}: {out}");
    }
    assert!(
        lines[2].starts_with(&"03".repeat(6)) && lines[2].contains(" 2h"),
        "{out}"
    );
    assert!(
        lines[3].starts_with(&"02".repeat(6)) && lines[3].contains(" 1m"),
        "{out}"
    );
    assert!(lines[4].starts_with("3 states, "), "{out}");

    let o = kiln(&cache, &["-machine-readable", "cache", "list"]);
    let out = text(&o);
    assert!(
        out.contains(&format!(
            ",cache-entry,{},/src/seed/local.json,qemu,2,shell: scripts/s2.sh,2000,",
            "02".repeat(32)
        )),
        "{out}"
    );

    // The default age (24 h) removes the 3-day-old state and the one saved
    // on top of it.
    let o = kiln(&cache, &["cache", "prune"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Removed 2 states"), "{}", text(&o));
    assert_eq!(s.list().len(), 1);

    save(&s, 4, None, 1, 500, 10);
    let o = kiln(&cache, &["cache", "prune", "-max-size=600"]);
    assert!(
        text(&o).contains("Removed 1 state (1000 B); 1 left (500 B)"),
        "{}",
        text(&o)
    );
    assert_eq!(s.list()[0].meta.key, "04".repeat(32));

    let o = kiln(&cache, &["cache", "prune", "-max-age", "1h"]);
    assert!(text(&o).contains("Removed 0 states"), "{}", text(&o));
    let o = kiln(&cache, &["cache", "prune", "-all"]);
    assert!(text(&o).contains("Removed 1 state"), "{}", text(&o));
    assert!(s.list().is_empty());

    let o = kiln(&cache, &["cache", "prune", "-max-size=lots"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("-max-size: \"lots\" is not a size"),
        "{}",
        text(&o)
    );
}
