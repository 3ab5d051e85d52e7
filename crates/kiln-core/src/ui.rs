//! Packer-style output: `==> name: message` for steps, `    name: output`
//! for what commands print, one colour per build, `-machine-readable` lines,
//! optional timestamps, and secrets scrubbed on every line by construction:
//! every write goes through one writer, and each message is scrubbed whole
//! before it is split into prefixed lines (human mode) or escaped
//! (`-machine-readable`), so a secret containing a newline or a comma is
//! still found. A multi-line secret is also registered line by line (lines
//! of at least [`MIN_SECRET_LINE`] characters), so one printed a line at a
//! time is hidden too; a secret's trimmed form is registered as well (a
//! password read from a file with its trailing newline).
use crate::communicator::TransferProgress;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, RwLock};

/// What components use to talk to the user. Scoped to one build.
pub trait Ui: Send + Sync {
    /// A step-level message: `==> name: msg`.
    fn say(&self, msg: &str);
    /// Detail or command output: `    name: msg`.
    fn message(&self, msg: &str);
    /// An error: `==> name: msg` in red, on stderr.
    fn error(&self, msg: &str);
    /// A `-machine-readable` record (ignored in human mode).
    fn machine(&self, kind: &str, data: &[&str]);
    /// A progress reporter for a transfer or conversion.
    fn progress(&self, label: &str) -> Box<dyn TransferProgress>;
    /// Register a secret to scrub from all further output (e.g. a password
    /// discovered at run time).
    fn add_secret(&self, secret: &str);
    /// The build's name (the prefix).
    fn name(&self) -> &str;
    /// A UI for a part of the build, prefixed `name (label)` in the same
    /// colour (Packer's post-processor output: `==> f (compress): ...`).
    fn child(&self, label: &str) -> Arc<dyn Ui>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    MachineReadable,
}

/// Settings chosen by the CLI.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub mode: Mode,
    pub color: bool,
    pub timestamp: bool,
}

impl OutputConfig {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        OutputConfig {
            mode: Mode::Human,
            color,
            timestamp: false,
        }
    }
}

const COLORS: &[&str] = &[
    "\x1b[1;32m",
    "\x1b[1;36m",
    "\x1b[1;35m",
    "\x1b[1;33m",
    "\x1b[1;34m",
];
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// The one place output is written. Cheap to clone.
#[derive(Clone)]
pub struct Output {
    inner: Arc<OutputInner>,
}

struct OutputInner {
    config: OutputConfig,
    secrets: RwLock<Vec<String>>,
    /// Held for every write, so lines of parallel builds and progress bars
    /// never interleave.
    lock: Mutex<WriterState>,
    next_color: Mutex<usize>,
    /// When set, everything is also captured here (tests).
    capture: Option<Mutex<Vec<u8>>>,
}

/// What the writer knows of the terminal.
#[derive(Default)]
struct WriterState {
    /// A progress bar is drawn on stderr's last line (no newline yet): it
    /// is cleared before any other line is written, and drawn again by its
    /// next update.
    bar_shown: bool,
}

/// Lines of a multi-line secret shorter than this (trimmed) are not
/// registered on their own: a line such as `}` or `--` would otherwise hide
/// every occurrence of it in the output.
pub const MIN_SECRET_LINE: usize = 4;

/// Replace every occurrence of each secret with `<sensitive>`, longest first
/// so a secret containing another is replaced whole.
pub fn scrub(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<sensitive>");
        }
    }
    out
}

impl Output {
    pub fn new(config: OutputConfig) -> Self {
        Output {
            inner: Arc::new(OutputInner {
                config,
                secrets: RwLock::new(Vec::new()),
                lock: Mutex::new(WriterState::default()),
                next_color: Mutex::new(0),
                capture: None,
            }),
        }
    }

    /// An output that writes nothing to the terminal and keeps every line
    /// (for tests).
    pub fn capturing(config: OutputConfig) -> Self {
        Output {
            inner: Arc::new(OutputInner {
                config,
                secrets: RwLock::new(Vec::new()),
                lock: Mutex::new(WriterState::default()),
                next_color: Mutex::new(0),
                capture: Some(Mutex::new(Vec::new())),
            }),
        }
    }

    /// What a capturing output has captured so far.
    pub fn captured(&self) -> String {
        match &self.inner.capture {
            Some(c) => {
                String::from_utf8_lossy(&c.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
            }
            None => String::new(),
        }
    }

    pub fn config(&self) -> &OutputConfig {
        &self.inner.config
    }

    /// Scrub `secret` from all further output (see the module docs for
    /// multi-line secrets).
    pub fn add_secret(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mut forms = vec![secret.to_string()];
        let trimmed = secret.trim();
        if !trimmed.is_empty() {
            forms.push(trimmed.to_string());
        }
        if secret.contains('\n') {
            for l in secret.split('\n') {
                let l = l.trim();
                if l.chars().count() >= MIN_SECRET_LINE {
                    forms.push(l.to_string());
                }
            }
        }
        let mut s = self
            .inner
            .secrets
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for f in forms {
            if !s.contains(&f) {
                s.push(f);
            }
        }
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }

    pub fn scrub(&self, text: &str) -> String {
        let s = self.inner.secrets.read().unwrap_or_else(|e| e.into_inner());
        scrub(text, &s)
    }

    fn write(&self, stream: Stream, text: &str) {
        let text = self.scrub(text);
        let mut st = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &self.inner.capture {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(text.as_bytes());
            return;
        }
        if st.bar_shown {
            let _ = std::io::stderr().lock().write_all(b"\r\x1b[2K");
            st.bar_shown = false;
        }
        // Write errors (closed pipe) must never abort a build mid-cleanup.
        let _ = match stream {
            Stream::Out => std::io::stdout().lock().write_all(text.as_bytes()),
            Stream::Err => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }

    /// Draw a progress bar line on stderr (a terminal), under the output
    /// lock; `done` ends it with a newline.
    fn draw_bar(&self, line: &str, done: bool) {
        let line = self.scrub(line);
        let mut st = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[2K{line}{}",
            if done { "\n" } else { "" }
        );
        st.bar_shown = !done;
    }

    fn stamp(&self) -> String {
        if self.inner.config.timestamp {
            let now = time::OffsetDateTime::now_utc();
            let f =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
            format!("{}: ", now.format(&f).unwrap_or_default())
        } else {
            String::new()
        }
    }

    fn machine_line(&self, target: &str, kind: &str, data: &[&str]) {
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        // Scrub each field before escaping: a secret with a comma or a
        // newline no longer appears as such once escaped.
        let field = |f: &str| machine_escape(&self.scrub(f));
        let mut line = format!("{ts},{},{}", field(target), field(kind));
        for d in data {
            line.push(',');
            line.push_str(&field(d));
        }
        line.push('\n');
        self.write(Stream::Out, &line);
    }

    /// A line not tied to a build (`==> Builds finished...`).
    pub fn say(&self, msg: &str) {
        if self.inner.config.mode == Mode::MachineReadable {
            self.machine_line("", "ui", &["say", &format!("==> {msg}")]);
            return;
        }
        self.line(None, "==> ", msg, false, Stream::Out);
    }

    /// A plain line as is (summaries, `inspect` output).
    pub fn raw(&self, msg: &str) {
        if self.inner.config.mode == Mode::MachineReadable {
            if !msg.is_empty() {
                self.machine_line("", "ui", &["say", msg]);
            }
        } else {
            self.write(Stream::Out, &format!("{msg}\n"));
        }
    }

    pub fn error(&self, msg: &str) {
        if self.inner.config.mode == Mode::MachineReadable {
            self.machine_line("", "ui", &["error", msg]);
            return;
        }
        let (c, r) = if self.inner.config.color {
            (RED, RESET)
        } else {
            ("", "")
        };
        self.write(Stream::Err, &format!("{}{c}{msg}{r}\n", self.stamp()));
    }

    pub fn machine(&self, target: &str, kind: &str, data: &[&str]) {
        if self.inner.config.mode == Mode::MachineReadable {
            self.machine_line(target, kind, data);
        }
    }

    fn line(&self, color: Option<&str>, prefix: &str, msg: &str, is_err: bool, stream: Stream) {
        let (c, r) = match (self.inner.config.color, is_err, color) {
            (true, true, _) => (RED, RESET),
            (true, false, Some(c)) => (c, RESET),
            _ => ("", ""),
        };
        let stamp = self.stamp();
        // Scrub the whole message before splitting it, so a secret spanning
        // lines is found.
        let msg = self.scrub(msg);
        let mut out = String::new();
        for l in split_lines(&msg) {
            out.push_str(&format!("{stamp}{c}{prefix}{l}{r}\n"));
        }
        self.write(stream, &out);
    }

    /// A [`Ui`] for one build, with the next colour.
    pub fn build_ui(&self, name: &str) -> Arc<dyn Ui> {
        let mut n = self
            .inner
            .next_color
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let color = COLORS[*n % COLORS.len()];
        *n += 1;
        Arc::new(BuildUi {
            out: self.clone(),
            name: name.to_string(),
            color,
        })
    }
}

fn split_lines(msg: &str) -> impl Iterator<Item = &str> {
    let msg = msg.strip_suffix('\n').unwrap_or(msg);
    msg.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Packer's machine-readable escaping: commas become `%!(PACKER_COMMA)`,
/// newlines `\n`, carriage returns `\r`.
pub fn machine_escape(s: &str) -> String {
    s.replace(',', "%!(PACKER_COMMA)")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// `    name: msg` (or its machine-readable record).
fn build_message(out: &Output, name: &str, color: &'static str, msg: &str) {
    if out.config().mode == Mode::MachineReadable {
        out.machine_line(name, "ui", &["message", &format!("    {name}: {msg}")]);
        return;
    }
    out.line(
        Some(color),
        &format!("    {name}: "),
        msg,
        false,
        Stream::Out,
    );
}

struct BuildUi {
    out: Output,
    name: String,
    color: &'static str,
}

impl Ui for BuildUi {
    fn say(&self, msg: &str) {
        if self.out.config().mode == Mode::MachineReadable {
            self.out.machine_line(
                &self.name,
                "ui",
                &["say", &format!("==> {}: {msg}", self.name)],
            );
            return;
        }
        self.out.line(
            Some(self.color),
            &format!("==> {}: ", self.name),
            msg,
            false,
            Stream::Out,
        );
    }
    fn message(&self, msg: &str) {
        build_message(&self.out, &self.name, self.color, msg);
    }
    fn error(&self, msg: &str) {
        if self.out.config().mode == Mode::MachineReadable {
            self.out.machine_line(
                &self.name,
                "ui",
                &["error", &format!("==> {}: {msg}", self.name)],
            );
            return;
        }
        self.out.line(
            None,
            &format!("==> {}: ", self.name),
            msg,
            true,
            Stream::Err,
        );
    }
    fn machine(&self, kind: &str, data: &[&str]) {
        self.out.machine(&self.name, kind, data);
    }
    fn progress(&self, label: &str) -> Box<dyn TransferProgress> {
        Box::new(Progress::new(
            self.out.clone(),
            self.name.clone(),
            self.color,
            label.to_string(),
        ))
    }
    fn add_secret(&self, secret: &str) {
        self.out.add_secret(secret);
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn child(&self, label: &str) -> Arc<dyn Ui> {
        Arc::new(BuildUi {
            out: self.out.clone(),
            name: format!("{} ({label})", self.name),
            color: self.color,
        })
    }
}

/// A progress bar on stderr when it is a terminal (and output is for
/// humans), drawn under the output lock so it never interleaves with other
/// lines; otherwise (a pipe, a file, `-machine-readable`) a single summary
/// line when done: `    name: label: 1.5 MiB in 2.0 s (768.0 KiB/s)`,
/// through the scrubbing writer like every other line.
struct Progress {
    out: Output,
    name: String,
    color: &'static str,
    label: String,
    tty: bool,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    total: Option<u64>,
    done: u64,
    last_draw: Option<std::time::Instant>,
    started: Option<std::time::Instant>,
    finished: bool,
}

impl Progress {
    fn new(out: Output, name: String, color: &'static str, label: String) -> Self {
        let tty = out.config().mode == Mode::Human
            && out.inner.capture.is_none()
            && std::io::stderr().is_terminal();
        Progress {
            out,
            name,
            color,
            label,
            tty,
            state: Mutex::new(ProgressState::default()),
        }
    }
    fn draw(&self, st: &ProgressState, final_: bool) {
        let done = human_bytes(st.done);
        let line = match st.total {
            Some(t) if t > 0 => {
                let pct = (st.done.min(t) as f64 / t as f64 * 100.0) as u64;
                let filled = (pct as usize * 30) / 100;
                format!(
                    "    {}: {} [{}{}] {pct:>3}% {done}/{}",
                    self.name,
                    self.label,
                    "=".repeat(filled),
                    " ".repeat(30 - filled),
                    human_bytes(t)
                )
            }
            _ => format!("    {}: {} {done}", self.name, self.label),
        };
        self.out.draw_bar(&line, final_);
    }
}

/// The summary of a finished transfer: `1.5 MiB in 2.0 s (768.0 KiB/s)`,
/// with `of <total>` when it stopped short of a known total.
pub fn progress_summary(done: u64, total: Option<u64>, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        human_bytes((done as f64 / secs) as u64)
    } else {
        human_bytes(done)
    };
    let of = match total {
        Some(t) if t != done => format!(" of {}", human_bytes(t)),
        _ => String::new(),
    };
    format!("{}{of} in {secs:.1} s ({rate}/s)", human_bytes(done))
}

/// `1.5 MiB` style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl TransferProgress for Progress {
    fn start(&self, total: Option<u64>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.total = total;
        st.started = Some(std::time::Instant::now());
    }
    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.done += bytes;
        if !self.tty {
            return;
        }
        let now = std::time::Instant::now();
        if st
            .last_draw
            .is_none_or(|t| now.duration_since(t).as_millis() >= 100)
        {
            st.last_draw = Some(now);
            self.draw(&st, false);
        }
    }
    fn finish(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.finished {
            return;
        }
        st.finished = true;
        if self.tty {
            self.draw(&st, true);
            return;
        }
        let elapsed = st.started.map(|t| t.elapsed()).unwrap_or_default();
        let summary = progress_summary(st.done, st.total, elapsed);
        drop(st);
        build_message(
            &self.out,
            &self.name,
            self.color,
            &format!("{}: {summary}", self.label),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capturing(mode: Mode) -> Output {
        Output::capturing(OutputConfig {
            mode,
            color: false,
            timestamp: false,
        })
    }

    #[test]
    fn machine_readable_scrubs_before_escaping() {
        let out = capturing(Mode::MachineReadable);
        out.add_secret("s3,cr\net");
        let ui = out.build_ui("b");
        ui.say("the secret is s3,cr\net, really");
        ui.message("x s3,cr\net y");
        ui.error("s3,cr\net");
        out.error("top s3,cr\net");
        ui.machine("artifact", &["0", "id", "s3,cr\net"]);
        let got = out.captured();
        assert!(!got.contains("s3"), "{got}");
        assert!(!got.contains("cr\\net"), "{got}");
        assert_eq!(got.matches("<sensitive>").count(), 5, "{got}");
        assert!(
            got.contains(",b,ui,say,==> b: the secret is <sensitive>%!(PACKER_COMMA) really"),
            "{got}"
        );
        assert!(got.contains(",b,artifact,0,id,<sensitive>\n"), "{got}");
    }

    #[test]
    fn human_mode_scrubs_multi_line_secrets_whole_and_by_line() {
        let key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\nddddEEEEffff\n-----END KEY-----\n";
        let out = capturing(Mode::Human);
        out.add_secret(key);
        let ui = out.build_ui("b");
        ui.say(&format!("key: {key}"));
        ui.message("AAAAbbbbCCCC");
        ui.error("line ddddEEEEffff here");
        out.raw(key);
        let got = out.captured();
        for part in ["AAAA", "dddd", "BEGIN KEY", "END KEY"] {
            assert!(!got.contains(part), "{part} leaked:\n{got}");
        }
        assert!(got.contains("==> b: key: <sensitive>\n"), "{got}");
        assert!(got.contains("    b: <sensitive>\n"), "{got}");
        assert!(got.contains("==> b: line <sensitive> here\n"), "{got}");
    }

    #[test]
    fn short_lines_of_a_secret_are_not_registered_alone() {
        let out = capturing(Mode::Human);
        out.add_secret("{\n\"pw\": \"hunter22\"\n}\n");
        out.raw("{ and } stay");
        out.raw("\"pw\": \"hunter22\"");
        let got = out.captured();
        assert!(got.contains("{ and } stay"), "{got}");
        assert!(!got.contains("hunter22"), "{got}");
    }

    #[test]
    fn trimmed_form_of_a_secret_is_scrubbed() {
        let out = capturing(Mode::Human);
        out.add_secret("pw-from-file\n");
        out.raw("password pw-from-file!");
        assert_eq!(out.captured(), "password <sensitive>!\n");
    }

    #[test]
    fn progress_off_a_terminal_prints_one_summary_line() {
        let out = capturing(Mode::Human);
        out.add_secret("topsecret");
        let ui = out.build_ui("b");
        let p = ui.progress("Uploading topsecret.img");
        p.start(Some(3 * 1024 * 1024));
        for _ in 0..3 {
            p.advance(1024 * 1024);
        }
        assert_eq!(out.captured(), "", "nothing before the end");
        p.finish();
        p.finish();
        let got = out.captured();
        assert_eq!(got.lines().count(), 1, "{got}");
        assert!(
            got.starts_with("    b: Uploading <sensitive>.img: 3.0 MiB in "),
            "{got}"
        );
        assert!(got.trim_end().ends_with("/s)"), "{got}");
        assert!(!got.contains(" of "), "{got}");
    }

    #[test]
    fn progress_summary_machine_readable_and_short() {
        let out = capturing(Mode::MachineReadable);
        let ui = out.build_ui("b");
        let p = ui.progress("Hashing x");
        p.start(Some(2048));
        p.advance(1024);
        p.finish();
        let got = out.captured();
        assert_eq!(got.lines().count(), 1, "{got}");
        assert!(
            got.contains(",b,ui,message,    b: Hashing x: 1.0 KiB of 2.0 KiB in "),
            "{got}"
        );
    }

    #[test]
    fn summary_text() {
        let s = progress_summary(
            3 * 1024 * 1024,
            Some(3 * 1024 * 1024),
            std::time::Duration::from_secs(2),
        );
        assert_eq!(s, "3.0 MiB in 2.0 s (1.5 MiB/s)");
        let s = progress_summary(10, None, std::time::Duration::ZERO);
        assert_eq!(s, "10 B in 0.0 s (10 B/s)");
    }
}
