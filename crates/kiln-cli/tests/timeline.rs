//! The build timeline printed at the end of every build (issue #15): each
//! builder step and provisioner with its wall time, in human and
//! machine-readable output.
mod common;
use common::joined as text;
use std::path::Path;
use std::process::Output;

fn kiln(dir: &Path, args: &[&str]) -> Output {
    common::kiln(dir).args(args).output().unwrap()
}

const TEMPLATE: &str = r#"{
  "builders": [{"type": "null", "name": "n", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "inline": ["sleep 1.2"]},
    {"type": "shell-local", "script": "s.sh"},
    {"type": "shell-local", "inline": ["exit {{user `fail`}}"]}
  ],
  "variables": {"fail": "0"}
}"#;

#[test]
fn every_step_and_provisioner_with_its_wall_time() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t.json"), TEMPLATE).unwrap();
    std::fs::write(d.path().join("s.sh"), "#!/bin/sh\ntrue\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.path().join("s.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let o = kiln(d.path(), &["build", "t.json"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let start = out.find("==> n: Timeline").expect(&out);
    let table: Vec<&str> = out[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    n: "))
        .map(|l| &l["    n: ".len()..])
        .collect();
    // The null builder's steps, the provisioners indented inside its
    // provisioning step.
    assert!(
        table.iter().any(|l| l.starts_with("step provision ")),
        "{out}"
    );
    let prov: Vec<&&str> = table
        .iter()
        .filter(|l| l.starts_with("  provisioner "))
        .collect();
    assert_eq!(prov.len(), 3, "{out}");
    assert!(
        prov[0].starts_with("  provisioner shell-local: inline "),
        "{out}"
    );
    assert!(
        prov[1].starts_with("  provisioner shell-local: s.sh "),
        "{out}"
    );
    // The sleeping one took its time (at least 1.2 s: never less).
    let secs = |l: &str| -> f64 {
        let t = l.split_whitespace().last().unwrap();
        t.trim_end_matches('s')
            .parse()
            .unwrap_or_else(|_| panic!("{l}"))
    };
    assert!(secs(prov[0]) >= 1.2, "{out}");
    // It comes before the build's last line.
    assert!(
        start < out.find("Build 'n' finished after").unwrap(),
        "{out}"
    );

    // -machine-readable: one `timeline` record per entry: index, depth,
    // kind, name, seconds, status.
    let o = kiln(
        d.path(),
        &["-machine-readable", "build", "-var", "fail=3", "t.json"],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let recs: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(2) == Some(&"timeline"))
        .collect();
    assert!(recs.len() >= 4, "{out}");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r[1], "n");
        assert_eq!(r[3], i.to_string());
        assert!(r[7].parse::<f64>().is_ok(), "{r:?}");
    }
    let find = |name: &str| {
        recs.iter()
            .find(|r| r[6] == name)
            .unwrap_or_else(|| panic!("{name}: {out}"))
    };
    let p = find("shell-local: inline");
    assert_eq!((p[4], p[5], p[8]), ("1", "provisioner", "ok"));
    let s = find("shell-local: s.sh");
    assert_eq!(s[8], "ok");
    let failed = recs.last().unwrap();
    assert_eq!(failed[8], "failed", "{out}");
    // The builder's step that ran the provisioners failed with them.
    assert_eq!(find("provision")[8], "failed");
}
