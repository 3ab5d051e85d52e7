//! The build timeline: each step, provisioner and post-processor of a build
//! with its wall time and how it ended (or that its state came from the
//! provisioning cache), printed as a short table at the end of every build
//! and as `timeline` records with `-machine-readable`.
//!
//! The step runner ([`crate::run_steps`]) records every builder's steps,
//! the provision hook records provisioners, the post-processor chains
//! record post-processors: no builder has anything to do. A provisioner
//! runs inside its builder's provisioning step, so it is shown indented
//! under it (its time is part of that step's).
use crate::ui::Ui;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a timeline entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Step,
    Provisioner,
    PostProcessor,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Provisioner => "provisioner",
            Kind::PostProcessor => "post-processor",
        }
    }
}

/// How an entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still running (a build that was abandoned).
    Running,
    Ok,
    Failed,
    Cancelled,
    /// Not run: its state was taken from the provisioning cache.
    Cached,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Cached => "cached",
        }
    }
    /// From a result, as the step runner sees it.
    pub fn of<T>(r: &Result<T, crate::BuildError>) -> Status {
        match r {
            Ok(_) => Status::Ok,
            Err(e) if e.is_cancelled() => Status::Cancelled,
            Err(_) => Status::Failed,
        }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub name: String,
    /// Nesting: a provisioner inside the builder's provisioning step is 1.
    pub depth: usize,
    pub duration: Duration,
    pub status: Status,
}

#[derive(Default)]
struct Inner {
    entries: Vec<(Entry, Option<Instant>)>,
    depth: usize,
}

/// A build's timeline (shared by the clones of its [`crate::BuildCtx`]).
#[derive(Clone, Default)]
pub struct Timeline {
    inner: Arc<Mutex<Inner>>,
}

/// An entry being timed; [`Span::finish`] ends it (dropped unfinished, it
/// ends as cancelled).
pub struct Span {
    tl: Timeline,
    idx: usize,
    done: bool,
}

impl Span {
    pub fn finish(mut self, status: Status) {
        self.end(status);
    }
    fn end(&mut self, status: Status) {
        if self.done {
            return;
        }
        self.done = true;
        let mut l = self.tl.lock();
        if let Some((e, started)) = l.entries.get_mut(self.idx) {
            if let Some(s) = started.take() {
                e.duration = s.elapsed();
            }
            e.status = status;
        }
        l.depth = l.depth.saturating_sub(1);
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.end(Status::Cancelled);
    }
}

impl Timeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start timing an entry; entries started before it finishes are
    /// nested under it.
    pub fn start(&self, kind: Kind, name: impl Into<String>) -> Span {
        let mut l = self.lock();
        let depth = l.depth;
        l.depth += 1;
        l.entries.push((
            Entry {
                kind,
                name: name.into(),
                depth,
                duration: Duration::ZERO,
                status: Status::Running,
            },
            Some(Instant::now()),
        ));
        Span {
            tl: self.clone(),
            idx: l.entries.len() - 1,
            done: false,
        }
    }

    /// Record an entry that was not timed here (a provisioner whose state
    /// came from the cache: `duration` is what restoring it took, if
    /// anything).
    pub fn record(&self, kind: Kind, name: impl Into<String>, duration: Duration, status: Status) {
        let mut l = self.lock();
        let depth = l.depth;
        l.entries.push((
            Entry {
                kind,
                name: name.into(),
                depth,
                duration,
                status,
            },
            None,
        ));
    }

    /// The entries so far, in the order they started (an unfinished one
    /// with its time so far).
    pub fn entries(&self) -> Vec<Entry> {
        self.lock()
            .entries
            .iter()
            .map(|(e, started)| {
                let mut e = e.clone();
                if let Some(s) = started {
                    e.duration = s.elapsed();
                }
                e
            })
            .collect()
    }

    /// The table's lines.
    pub fn lines(&self) -> Vec<String> {
        let entries = self.entries();
        let label = |e: &Entry| {
            format!(
                "{}{} {}",
                "  ".repeat(e.depth),
                e.kind.as_str(),
                shorten(&e.name, MAX_NAME)
            )
        };
        let width = entries
            .iter()
            .map(|e| label(e).chars().count())
            .max()
            .unwrap_or(0);
        entries
            .iter()
            .map(|e| {
                let l = label(e);
                let pad = width - l.chars().count();
                let note = match e.status {
                    Status::Ok => String::new(),
                    Status::Cached if e.duration.is_zero() => "  (from the cache)".into(),
                    Status::Cached => "  (from the cache: restoring)".into(),
                    s => format!("  ({})", s.as_str()),
                };
                format!("{l}{}  {:>8}{note}", " ".repeat(pad), seconds(e.duration))
            })
            .collect()
    }

    /// Print the table (a say line, then one message per entry) and, with
    /// `-machine-readable`, one `timeline` record per entry: index, depth,
    /// kind, name, seconds, status.
    pub fn report(&self, ui: &dyn Ui) {
        let entries = self.entries();
        if entries.is_empty() {
            return;
        }
        ui.say("Timeline (wall time of each step; provisioners inside their step):");
        for l in self.lines() {
            ui.message(&l);
        }
        for (i, e) in entries.iter().enumerate() {
            ui.machine(
                "timeline",
                &[
                    &i.to_string(),
                    &e.depth.to_string(),
                    e.kind.as_str(),
                    &e.name,
                    &format!("{:.3}", e.duration.as_secs_f64()),
                    e.status.as_str(),
                ],
            );
        }
    }
}

/// `0.4s`, `12.3s`, `3m05.2s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0}m{:04.1}s", s - m * 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_status_and_the_table() {
        let t = Timeline::default();
        let a = t.start(Kind::Step, "create disk");
        a.finish(Status::Ok);
        let p = t.start(Kind::Step, "provision");
        let x = t.start(Kind::Provisioner, "shell: a.sh");
        x.finish(Status::Ok);
        t.record(
            Kind::Provisioner,
            "shell: b.sh",
            Duration::ZERO,
            Status::Cached,
        );
        let y = t.start(Kind::Provisioner, "shell: c.sh");
        drop(y);
        p.finish(Status::Failed);
        t.record(
            Kind::PostProcessor,
            "manifest",
            Duration::from_secs(125),
            Status::Ok,
        );
        let e = t.entries();
        assert_eq!(
            e.iter().map(|e| (e.depth, e.status)).collect::<Vec<_>>(),
            [
                (0, Status::Ok),
                (0, Status::Failed),
                (1, Status::Ok),
                (1, Status::Cached),
                (1, Status::Cancelled),
                (0, Status::Ok)
            ]
        );
        let lines = t.lines();
        assert!(lines[0].starts_with("step create disk "), "{lines:?}");
        assert!(lines[1].ends_with("(failed)"), "{lines:?}");
        assert!(
            lines[2].starts_with("  provisioner shell: a.sh"),
            "{lines:?}"
        );
        assert!(lines[3].ends_with("0.0s  (from the cache)"), "{lines:?}");
        assert!(lines[5].ends_with("2m05.0s"), "{lines:?}");
        // Columns line up: the lines without a note are as long.
        assert_eq!(lines[0].len(), lines[2].len(), "{lines:?}");
        assert_eq!(lines[0].len(), lines[5].len(), "{lines:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(seconds(Duration::from_millis(400)), "0.4s");
        assert_eq!(seconds(Duration::from_secs(59)), "59.0s");
        assert_eq!(seconds(Duration::from_secs(185)), "3m05.0s");
    }
}

/// The longest name the table shows (a `shell` provisioner with many
/// `scripts` names them all); `-machine-readable` records keep it whole.
const MAX_NAME: usize = 60;

/// `name` cut in its middle to at most `max` characters, with `...` where
/// it was cut, so both the first and the last script stay visible.
fn shorten(name: &str, max: usize) -> String {
    let n = name.chars().count();
    if n <= max {
        return name.to_string();
    }
    let keep = max - 3;
    let head: String = name.chars().take(keep - keep / 2).collect();
    let tail: String = name.chars().skip(n - keep / 2).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod shorten_tests {
    use super::shorten;

    #[test]
    fn long_names_are_cut_in_the_middle() {
        assert_eq!(shorten("shell: a.sh", 60), "shell: a.sh");
        let long = "shell: scripts/update.sh, scripts/sudoers.sh, scripts/compiler_tools.sh, scripts/minimize.sh";
        let s = shorten(long, 60);
        assert_eq!(s.chars().count(), 60);
        assert!(s.starts_with("shell: scripts/update.sh"), "{s}");
        assert!(s.ends_with("scripts/minimize.sh"), "{s}");
        assert!(s.contains("..."), "{s}");
    }
}
