//! Packer-style output: `==> name: message` for steps, `    name: output`
//! for what commands print, one colour per build, `-machine-readable` lines,
//! optional timestamps, and secrets scrubbed on every line by construction
//! (every write goes through [`Output::emit`]).
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
    lock: Mutex<()>,
    next_color: Mutex<usize>,
    /// When set, everything is also captured here (tests).
    capture: Option<Mutex<Vec<u8>>>,
}

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
                lock: Mutex::new(()),
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
                lock: Mutex::new(()),
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

    pub fn add_secret(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mut s = self
            .inner
            .secrets
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|x| x == secret) {
            s.push(secret.to_string());
            s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        let s = self.inner.secrets.read().unwrap_or_else(|e| e.into_inner());
        scrub(text, &s)
    }

    fn write(&self, stream: Stream, text: &str) {
        let text = self.scrub(text);
        let _g = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &self.inner.capture {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(text.as_bytes());
            return;
        }
        // Write errors (closed pipe) must never abort a build mid-cleanup.
        let _ = match stream {
            Stream::Out => std::io::stdout().lock().write_all(text.as_bytes()),
            Stream::Err => std::io::stderr().lock().write_all(text.as_bytes()),
        };
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
        let mut line = format!("{ts},{},{}", machine_escape(target), machine_escape(kind));
        for d in data {
            line.push(',');
            line.push_str(&machine_escape(d));
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
        let mut out = String::new();
        for l in split_lines(msg) {
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
        if self.out.config().mode == Mode::MachineReadable {
            self.out.machine_line(
                &self.name,
                "ui",
                &["message", &format!("    {}: {msg}", self.name)],
            );
            return;
        }
        self.out.line(
            Some(self.color),
            &format!("    {}: ", self.name),
            msg,
            false,
            Stream::Out,
        );
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
/// humans); otherwise a single summary line when done.
struct Progress {
    out: Output,
    name: String,
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
}

impl Progress {
    fn new(out: Output, name: String, label: String) -> Self {
        let tty = out.config().mode == Mode::Human
            && out.inner.capture.is_none()
            && std::io::stderr().is_terminal();
        Progress {
            out,
            name,
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
        let line = self.out.scrub(&line);
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2K{line}{}",
            if final_ { "\n" } else { "" }
        );
    }
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
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty {
            self.draw(&st, true);
        }
    }
}
