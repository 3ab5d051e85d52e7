//! `kiln cache list` and `kiln cache prune`.
use kiln_cache::{Settings, Store};
use kiln_core::ui::human_bytes;
use kiln_core::Output;
use std::time::{Duration, SystemTime};

fn open(output: &Output) -> Option<(Settings, Store)> {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            output.error(&format!("kiln cache: {e}"));
            return None;
        }
    };
    match Store::open(&settings.dir) {
        Ok(s) => Some((settings, s)),
        Err(e) => {
            output.error(&format!("kiln cache: {e}"));
            None
        }
    }
}

/// `3h`, `2d`, `45m`, `10s`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn list(output: &Output) -> u8 {
    let Some((settings, store)) = open(output) else {
        return 1;
    };
    let now = SystemTime::now();
    let entries = store.list();
    output.machine("", "cache-dir", &[&settings.dir.display().to_string()]);
    if entries.is_empty() {
        output.raw(&format!("The cache ({}) is empty.", settings.dir.display()));
        return 0;
    }
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            let m = &e.meta;
            let stale = if m.age(now) > settings.max_age {
                " (too old to reuse)"
            } else {
                ""
            };
            [
                m.key[..12].to_string(),
                m.template.clone(),
                m.build.clone(),
                m.step.to_string(),
                m.label.clone(),
                human_bytes(m.size()),
                format!("{}{stale}", age(m.age(now))),
            ]
        })
        .collect();
    let head = [
        "KEY",
        "TEMPLATE",
        "BUILD",
        "STEP",
        "PROVISIONER",
        "SIZE",
        "AGE",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    output.raw(&line(&head));
    for (r, e) in rows.iter().zip(&entries) {
        output.raw(&line(&r.each_ref().map(String::as_str)));
        let m = &e.meta;
        output.machine(
            "",
            "cache-entry",
            &[
                &m.key,
                &m.template,
                &m.build,
                &m.step.to_string(),
                &m.label,
                &m.size().to_string(),
                &m.created.to_string(),
            ],
        );
    }
    let total: u64 = entries.iter().map(|e| e.meta.size()).sum();
    output.raw(&format!(
        "{} state{}, {} in {} (limit {}; states older than {} are not reused)",
        entries.len(),
        if entries.len() == 1 { "" } else { "s" },
        human_bytes(total),
        settings.dir.display(),
        human_bytes(settings.max_size),
        age(settings.max_age),
    ));
    0
}

pub fn prune(output: &Output, max_age: Option<&str>, max_size: Option<&str>, all: bool) -> u8 {
    let Some((settings, store)) = open(output) else {
        return 1;
    };
    let max_age = match max_age.map(kiln_cache::parse_age).transpose() {
        Ok(a) => a.unwrap_or(settings.max_age),
        Err(e) => {
            output.error(&format!("kiln cache prune: -max-age: {e}"));
            return 1;
        }
    };
    let max_size = match max_size.map(kiln_cache::parse_size).transpose() {
        Ok(s) => s.unwrap_or(settings.max_size),
        Err(e) => {
            output.error(&format!("kiln cache prune: -max-size: {e}"));
            return 1;
        }
    };
    let (max_age, max_size) = if all {
        (Duration::ZERO, 0)
    } else {
        (max_age, max_size)
    };
    let removed = store.prune(Some(max_age), Some(max_size), SystemTime::now());
    for m in &removed {
        output.machine("", "cache-removed", &[&m.key, &m.size().to_string()]);
    }
    let freed: u64 = removed.iter().map(|m| m.size()).sum();
    let left = store.list();
    let total: u64 = left.iter().map(|e| e.meta.size()).sum();
    output.raw(&format!(
        "Removed {} state{} ({}); {} left ({}).",
        removed.len(),
        if removed.len() == 1 { "" } else { "s" },
        human_bytes(freed),
        left.len(),
        human_bytes(total),
    ));
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        use super::age;
        use std::time::Duration;
        assert_eq!(age(Duration::from_secs(5)), "5s");
        assert_eq!(age(Duration::from_secs(600)), "10m");
        assert_eq!(age(Duration::from_secs(7200)), "2h");
        assert_eq!(age(Duration::from_secs(3 * 86400)), "3d");
    }
}
