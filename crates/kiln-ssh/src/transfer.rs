//! Moving files over the connection.
//!
//! Design (for speed, and for Packer's semantics):
//!
//! - **One exec channel per transfer, no per-file round trips.** Packer
//!   speaks the scp protocol, which waits for an acknowledgement after every
//!   file header and every file body: 10,000 small files cost 20,000 round
//!   trips. kiln streams a directory as one tar archive into `tar -x` on the
//!   machine (GNU tar), so the data flows at the speed of the SSH stream.
//!   Single files go through `cat > file`.
//! - **Packer's scp semantics are reproduced, not approximated**: which
//!   directory is created or merged into, which modes result, symlinks
//!   followed the way Packer follows them. As OpenSSH's `scp -t` (what
//!   Packer's uploads run on the machine): a file or directory that is
//!   created gets the source's permission bits (`mode & 0777`: Packer never
//!   sends setuid, setgid or sticky bits) masked by the machine's umask,
//!   set explicitly (so an inherited setgid bit of a new directory is
//!   cleared, as scp's `chmod` clears it); an existing file is written
//!   into: same inode (hard links see the new contents), same owner, group
//!   and mode, and an error if the SSH user may not write it; an existing
//!   directory is left as it is. A small shell script decides on the
//!   machine, in the same exec.
//! - **One round trip to look before writing**: the script first lists
//!   which of the source's paths already exist at the destination (one
//!   `find` over the list kiln sends, not one command per file) and the
//!   umask; kiln then gives each archive entry the mode it must end with,
//!   and `tar --overwrite` writes existing files in place without changing
//!   their mode (GNU tar skips the `chmod` when the mode is already right).
//! - **Big buffers**: the archive is produced by a blocking thread in 1 MiB
//!   chunks handed to the channel without copying (`Bytes`); the SSH window
//!   and packets are as large as the server allows.
//!
//! The remote side needs a POSIX shell, `cat`, and (for directories) GNU
//! tar and GNU find — the same kind of assumption as Packer's need for
//! `scp`.
use crate::client::SshCommunicator;
use bytes::{Bytes, BytesMut};
use kiln_core::communicator::{CommError, FileMeta, TransferProgress};
use kiln_core::ExitStatus;
use russh::ChannelMsg;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CHUNK: usize = 1024 * 1024;

/// Quote for a POSIX shell: `'...'` with `'` as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a remote command produced when its output is collected rather than
/// streamed.
pub(crate) struct Collected {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Collected {
    fn err_text(&self) -> String {
        let e = String::from_utf8_lossy(&self.stderr).trim().to_string();
        match (&self.status, e.is_empty()) {
            (_, false) => e,
            (ExitStatus::Code(c), true) => format!("exit status {c}"),
            (ExitStatus::Signal(s), true) => format!("killed by signal {s}"),
            (ExitStatus::Disconnected, true) => "the connection was lost".into(),
        }
    }
}

/// Collects a channel's output and exit status until it closes.
async fn collect(
    mut rx: russh::ChannelReadHalf,
    mut stdout_to: Option<tokio::sync::mpsc::Sender<Bytes>>,
) -> Collected {
    let mut c = Collected {
        status: ExitStatus::Disconnected,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let mut got_status = false;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => match &mut stdout_to {
                Some(tx) => {
                    if tx.send(data).await.is_err() {
                        stdout_to = None;
                    }
                }
                None => {
                    if c.stdout.len() < 1 << 20 {
                        c.stdout.extend_from_slice(&data)
                    }
                }
            },
            ChannelMsg::ExtendedData { data, .. } if c.stderr.len() < 1 << 20 => {
                c.stderr.extend_from_slice(&data)
            }
            ChannelMsg::ExitStatus { exit_status } => {
                c.status = ExitStatus::Code(exit_status as i32);
                got_status = true;
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                c.status = ExitStatus::Signal(format!("{signal_name:?}"));
                got_status = true;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if !got_status {
        c.status = ExitStatus::Disconnected;
    }
    c
}

fn disconnected(what: &str, e: impl std::fmt::Display) -> CommError {
    CommError::Disconnected(format!("{what}: {e}"))
}

impl SshCommunicator {
    /// Run `command`, feed it the chunks of `input`, collect its output.
    ///
    /// `stdout_to`: where the command's stdout goes (collected otherwise).
    async fn exec_feeding(
        &self,
        what: &str,
        command: &str,
        mut input: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
        stdout_to: Option<tokio::sync::mpsc::Sender<Bytes>>,
        mut on_sent: impl FnMut(usize),
    ) -> Result<Collected, CommError> {
        let ch = self.open_channel().await?;
        ch.exec(true, command)
            .await
            .map_err(|e| disconnected(what, e))?;
        let (rx, tx) = ch.split();
        let reader = tokio::spawn(collect(rx, stdout_to));
        let mut local_err = None;
        let mut write_failed = false;
        while let Some(chunk) = input.recv().await {
            match chunk {
                Ok(b) => {
                    let n = b.len();
                    if tx.data_bytes(b).await.is_err() {
                        // The remote side is gone (it failed, or the
                        // connection dropped): its output says why.
                        write_failed = true;
                        break;
                    }
                    on_sent(n);
                }
                Err(e) => {
                    local_err = Some(e);
                    break;
                }
            }
        }
        drop(input);
        if let Some(e) = local_err {
            let _ = tx.close().await;
            reader.abort();
            return Err(CommError::Other(format!("{what}: {e}")));
        }
        let _ = tx.eof().await;
        let c = reader
            .await
            .map_err(|e| CommError::Other(format!("{what}: {e}")))?;
        if write_failed && c.status == ExitStatus::Code(0) {
            return Err(CommError::Disconnected(format!(
                "{what}: the connection closed before all data was sent"
            )));
        }
        Ok(c)
    }

    /// Upload one file from a reader.
    pub(crate) async fn upload_file(
        &self,
        dst: &str,
        src: &mut (dyn AsyncRead + Send + Unpin),
        meta: FileMeta,
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        let script = upload_file_script(dst, meta.mode);
        let what = format!("uploading {dst}");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        progress.start(meta.size);
        let feed = async move {
            let mut buf = BytesMut::with_capacity(CHUNK);
            loop {
                if buf.capacity() < CHUNK / 4 {
                    buf.reserve(CHUNK);
                }
                match src.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {
                        if buf.len() >= CHUNK / 2
                            && tx.send(Ok(buf.split().freeze())).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("reading the source: {e}"))).await;
                        return;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(Ok(buf.split().freeze())).await;
            }
        };
        let (c, ()) = tokio::join!(
            self.exec_feeding(&what, &script, rx, None, |n| progress.advance(n as u64)),
            feed
        );
        progress.finish();
        let c = c?;
        check(&what, &c)
    }

    /// Upload a local directory with Packer's semantics (see the module
    /// docs).
    pub(crate) async fn upload_directory(
        &self,
        dst: &str,
        src: &Path,
        exclude: &[String],
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        let what = format!("uploading {} to {dst}", src.display());
        let src_str = src.to_string_lossy().to_string();
        let contents = src_str.ends_with('/');
        let root = src.to_path_buf();
        let exclude = exclude.to_vec();
        let plan = tokio::task::spawn_blocking(move || plan_tree(&root, &exclude))
            .await
            .map_err(|e| CommError::Other(format!("{what}: {e}")))?
            .map_err(|e| CommError::Io {
                context: format!("reading {}", src.display()),
                source: e,
            })?;
        let list = probe_list(&plan.entries);
        let script = upload_dir_script(dst, contents, &plan, &src_str, list.len());
        progress.start(Some(plan.total_bytes));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        // The machine's answer to the probe arrives on the command's stdout.
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let (probe_tx, probe_rx) = tokio::sync::oneshot::channel::<Probe>();
        let answer = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut probe_tx = Some(probe_tx);
            let mut bad = None;
            while let Some(b) = out_rx.recv().await {
                let Some(t) = probe_tx.take() else { continue };
                buf.extend_from_slice(&b);
                match Probe::parse(&buf) {
                    None => probe_tx = Some(t),
                    Some(Ok(p)) => {
                        let _ = t.send(p);
                    }
                    // Dropping the sender stops the upload.
                    Some(Err(e)) => bad = Some(e),
                }
            }
            bad
        });
        let counter = Arc::new(AtomicU64::new(0));
        let counter2 = counter.clone();
        let entries = plan.entries.clone();
        let producer = tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(Bytes::from(list))).is_err() {
                return;
            }
            // No answer: the script stopped (its stderr says why).
            let Ok(probe) = probe_rx.blocking_recv() else {
                return;
            };
            let layout = Layout::new(&entries, &probe);
            // Two archives: the directories (extracted without touching
            // existing ones), then the files.
            let mut dirs_tar = Vec::new();
            if let Err(e) = write_tar(
                &mut dirs_tar,
                entries.iter().zip(&layout.modes).filter(|(e, _)| e.is_dir),
                &AtomicU64::new(0),
            ) {
                let _ = tx.blocking_send(Err(format!("archiving: {e}")));
                return;
            }
            let mut head = format!("{} {}\n", layout.post.len(), dirs_tar.len()).into_bytes();
            head.extend_from_slice(layout.post.as_bytes());
            head.extend_from_slice(&dirs_tar);
            if tx.blocking_send(Ok(Bytes::from(head))).is_err() {
                return;
            }
            let w = ChunkWriter { tx: tx.clone() };
            let w = std::io::BufWriter::with_capacity(CHUNK, w);
            if let Err(e) = write_tar(
                w,
                entries.iter().zip(&layout.modes).filter(|(e, _)| !e.is_dir),
                &counter2,
            ) {
                let _ = tx.blocking_send(Err(e.to_string()));
            }
        });
        let mut reported = 0u64;
        let c = self
            .exec_feeding(&what, &script, rx, Some(out_tx), |_| {
                let now = counter.load(Ordering::Relaxed);
                if now > reported {
                    progress.advance(now - reported);
                    reported = now;
                }
            })
            .await;
        let _ = producer.await;
        let bad = answer.await.ok().flatten();
        let now = counter.load(Ordering::Relaxed);
        if now > reported {
            progress.advance(now - reported);
        }
        progress.finish();
        let c = c?;
        if let Some(e) = bad {
            if c.status == ExitStatus::Code(0) || c.stderr.is_empty() {
                return Err(CommError::Remote(format!("{what}: {e}")));
            }
        }
        check(&what, &c)
    }

    /// Download one remote file into a writer.
    pub(crate) async fn download_file(
        &self,
        src: &str,
        dst: &mut (dyn AsyncWrite + Send + Unpin),
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        let what = format!("downloading {src}");
        let script = format!(
            "f={}; if [ -d \"$f\" ]; then echo \"$f: is a directory\" >&2; exit 1; fi; exec cat -- \"$f\"",
            shell_quote(src)
        );
        let ch = self.open_channel().await?;
        ch.exec(true, script.as_str())
            .await
            .map_err(|e| disconnected(&what, e))?;
        let (rx, _tx) = ch.split();
        let (dtx, mut drx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let reader = tokio::spawn(collect(rx, Some(dtx)));
        progress.start(None);
        let mut werr = None;
        while let Some(b) = drx.recv().await {
            if werr.is_none() {
                if let Err(e) = dst.write_all(&b).await {
                    werr = Some(e);
                }
                progress.advance(b.len() as u64);
            }
        }
        progress.finish();
        let c = reader
            .await
            .map_err(|e| CommError::Other(format!("{what}: {e}")))?;
        check(&what, &c)?;
        if let Some(e) = werr {
            return Err(CommError::Io {
                context: format!("{what}: writing"),
                source: e,
            });
        }
        dst.flush().await.map_err(|e| CommError::Io {
            context: format!("{what}: writing"),
            source: e,
        })?;
        Ok(())
    }

    /// Download remote directories (or globs) into the local directory
    /// `dst`, as Packer's `scp -rf <src>` does: each match arrives under its
    /// own name (`dir/` arrives as `dst/dir`).
    pub(crate) async fn download_directory(
        &self,
        src: &str,
        dst: &Path,
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        let what = format!("downloading {src}");
        // `src` is given to the shell unquoted, as Packer does, so globs
        // expand on the machine.
        let script = format!(
            "set -- {src}; n=$#; for p in \"$@\"; do q=${{p%/}}; [ -n \"$q\" ] || q=/; \
             if [ ! -e \"$q\" ]; then echo \"$p: No such file or directory\" >&2; exit 1; fi; \
             set -- \"$@\" -C \"$(dirname -- \"$q\")\" \"$(basename -- \"$q\")\"; done; \
             shift $n; exec tar -c -h -f - \"$@\""
        );
        let ch = self.open_channel().await?;
        ch.exec(true, script.as_str())
            .await
            .map_err(|e| disconnected(&what, e))?;
        let (rx, _tx) = ch.split();
        let (dtx, mut drx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let reader = tokio::spawn(collect(rx, Some(dtx)));
        // The archive is unpacked by a blocking thread reading from a pipe.
        let (stx, srx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let dst_dir = dst.to_path_buf();
        let unpacker = tokio::task::spawn_blocking(move || {
            unpack_tar(
                ChunkReader {
                    rx: srx,
                    cur: Bytes::new(),
                },
                &dst_dir,
            )
        });
        progress.start(None);
        while let Some(b) = drx.recv().await {
            progress.advance(b.len() as u64);
            if stx.send(b).await.is_err() {
                break;
            }
        }
        drop(stx);
        progress.finish();
        let c = reader
            .await
            .map_err(|e| CommError::Other(format!("{what}: {e}")))?;
        let unpacked = unpacker
            .await
            .map_err(|e| CommError::Other(format!("{what}: {e}")))?;
        check(&what, &c)?;
        unpacked.map_err(|e| CommError::Io {
            context: format!("{what}: writing into {}", dst.display()),
            source: e,
        })
    }
}

fn check(what: &str, c: &Collected) -> Result<(), CommError> {
    match c.status {
        ExitStatus::Code(0) => Ok(()),
        ExitStatus::Disconnected => {
            Err(CommError::Disconnected(format!("{what}: {}", c.err_text())))
        }
        _ => Err(CommError::Remote(format!("{what}: {}", c.err_text()))),
    }
}

/// The remote script that writes stdin to `dst`: like scp's sink, a new
/// file gets `mode & 0777` masked by the umask (Packer sends no special
/// bits), an existing file is written into and keeps its mode, owner and
/// group, and a directory at `dst` is an error.
pub(crate) fn upload_file_script(dst: &str, mode: u32) -> String {
    format!(
        "f={q}; if [ -d \"$f\" ]; then echo \"$f: Is a directory\" >&2; exit 1; fi; \
         if [ -e \"$f\" ]; then exec cat > \"$f\"; fi; \
         m=$(umask); (umask 077; : > \"$f\") || exit 1; cat > \"$f\" || exit 1; \
         exec chmod \"$(printf %05o $((0{mode:o} & ~0$m)))\" \"$f\"",
        q = shell_quote(dst),
        mode = mode & 0o777,
    )
}

/// One entry of the archive to send.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path relative to the source directory, `/`-separated.
    rel: String,
    /// Where to read it (symlinks already resolved for files).
    path: PathBuf,
    is_dir: bool,
    /// Permission bits (`& 0777`).
    mode: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    entries: Arc<Vec<Entry>>,
    total_bytes: u64,
    /// Mode of the source directory itself.
    root_mode: u32,
    /// Top-level entries: (name, is_dir, mode).
    top: Vec<(String, bool, u32)>,
}

/// Walk `root` the way Packer's scp upload does: sorted here (Packer uses
/// directory order), symlinks followed (a link to a directory is a directory
/// with the link's mode, a link to a file is a file with mode 0644), modes
/// as Go's `FileMode.Perm()` (no setuid, setgid or sticky bit).
fn plan_tree(root: &Path, exclude: &[String]) -> std::io::Result<Plan> {
    use std::os::unix::fs::PermissionsExt;
    let root_meta = std::fs::metadata(root)?;
    let mut entries = Vec::new();
    let mut top = Vec::new();
    let mut total = 0u64;
    fn walk(
        dir: &Path,
        prefix: &str,
        exclude: &[String],
        entries: &mut Vec<Entry>,
        top: &mut Vec<(String, bool, u32)>,
        total: &mut u64,
        depth: usize,
    ) -> std::io::Result<()> {
        if depth > 64 {
            return Err(std::io::Error::other(format!(
                "{}: too deep (a symlink loop?)",
                dir.display()
            )));
        }
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let name_s = name.to_string_lossy().to_string();
            let rel = if prefix.is_empty() {
                name_s.clone()
            } else {
                format!("{prefix}/{name_s}")
            };
            if exclude.iter().any(|x| x.trim_end_matches('/') == rel) {
                continue;
            }
            let path = dir.join(&name);
            let lmeta = std::fs::symlink_metadata(&path)?;
            let (is_dir, mode, size, read_path) = if lmeta.file_type().is_symlink() {
                let target = std::fs::canonicalize(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                })?;
                let tmeta = std::fs::metadata(&target)?;
                if tmeta.is_dir() {
                    (true, lmeta.permissions().mode() & 0o777, 0, target)
                } else {
                    (false, 0o644, tmeta.len(), target)
                }
            } else if lmeta.is_dir() {
                (true, lmeta.permissions().mode() & 0o777, 0, path.clone())
            } else if lmeta.is_file() {
                (
                    false,
                    lmeta.permissions().mode() & 0o777,
                    lmeta.len(),
                    path.clone(),
                )
            } else {
                return Err(std::io::Error::other(format!(
                    "{}: not a regular file or directory",
                    path.display()
                )));
            };
            if depth == 0 {
                top.push((name_s.clone(), is_dir, mode));
            }
            entries.push(Entry {
                rel: rel.clone(),
                path: read_path.clone(),
                is_dir,
                mode,
            });
            *total += size;
            if is_dir {
                walk(&read_path, &rel, exclude, entries, top, total, depth + 1)?;
            }
        }
        Ok(())
    }
    walk(root, "", exclude, &mut entries, &mut top, &mut total, 0)?;
    Ok(Plan {
        entries: Arc::new(entries),
        total_bytes: total,
        root_mode: root_meta.permissions().mode() & 0o777,
        top,
    })
}

/// The probe's list (stdin's first section): `.` (the directory the archives
/// go into), then every entry as `./<path>`, each ended by a NUL.
fn probe_list(entries: &[Entry]) -> Vec<u8> {
    let mut l = b".\0".to_vec();
    for e in entries {
        l.extend_from_slice(b"./");
        l.extend_from_slice(e.rel.as_bytes());
        l.push(0);
    }
    l
}

/// What the machine said before the archives were made: its umask, how the
/// script lays the upload out, and what already exists.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    umask: u32,
    /// `x` (into a directory), `xs` (top-level directories merged into a
    /// new destination, one path component stripped), `one` (one file),
    /// `none` (nothing to upload).
    variant: String,
    /// Mode of the directory the archives go into.
    root_mode: Option<u32>,
    /// Paths (relative, as in the plan) that exist there, with their mode
    /// and `find -L`'s type letter.
    existing: std::collections::HashMap<String, (u32, u8)>,
}

impl Probe {
    /// Parse the answer: `kiln-probe <umask> <variant>`, then
    /// `<mode> <type> <path>` records, then `kiln-end`, each ended by a NUL.
    /// Anything printed before (a noisy shell profile) is skipped. `None`
    /// until the answer is complete.
    pub(crate) fn parse(buf: &[u8]) -> Option<Result<Probe, String>> {
        let start = find(buf, b"kiln-probe ")?;
        let body = &buf[start..];
        let end = find(body, b"\0kiln-end\0")?;
        let mut recs = body[..end].split(|b| *b == 0);
        let head = String::from_utf8_lossy(recs.next().unwrap_or_default()).into_owned();
        let mut words = head.split(' ').skip(1);
        let umask = words.next().and_then(|u| u32::from_str_radix(u, 8).ok());
        let variant = words.next().unwrap_or_default().to_string();
        let Some(umask) = umask else {
            return Some(Err(format!(
                "the machine's answer to kiln's probe is malformed: {head:?}"
            )));
        };
        let mut p = Probe {
            umask: umask & 0o777,
            variant,
            ..Default::default()
        };
        for r in recs {
            let mut it = r.splitn(3, |b| *b == b' ');
            let (Some(m), Some(t), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Some(mode) = std::str::from_utf8(m)
                .ok()
                .and_then(|m| u32::from_str_radix(m, 8).ok())
            else {
                continue;
            };
            let t = t.first().copied().unwrap_or(b'?');
            let path = String::from_utf8_lossy(path);
            if path == "." {
                p.root_mode = Some(mode);
            } else if let Some(rel) = path.strip_prefix("./") {
                p.existing.insert(rel.to_string(), (mode, t));
            }
        }
        Some(Ok(p))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The mode each archive entry gets, and the `chmod`s to run once the files
/// are in (a shell snippet run in the extraction directory).
#[derive(Debug)]
pub(crate) struct Layout {
    /// Per entry of the plan, the mode its archive header carries: for a
    /// file, the mode it must end with (tar runs with umask 0 and writes an
    /// existing file in place, leaving a mode that is already right alone);
    /// for a directory, its final mode made owner-writable.
    modes: Vec<u32>,
    post: String,
}

impl Layout {
    pub(crate) fn new(entries: &[Entry], p: &Probe) -> Layout {
        use std::collections::{BTreeMap, HashMap};
        let strip = p.variant == "xs";
        let um = p.umask;
        // Target path -> final mode (for a later entry at the same path).
        let mut done: HashMap<String, u32> = HashMap::new();
        // Directory -> does it carry a setgid bit while the files go in
        // (existing, or created under one: the kernel passes it on).
        let mut sgid: HashMap<String, bool> = HashMap::new();
        let root_sgid = p.root_mode.is_some_and(|m| m & 0o2000 != 0);
        let mut modes = Vec::with_capacity(entries.len());
        let mut groups: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut restricted: Vec<(String, u32)> = Vec::new();
        for e in entries {
            let want = e.mode & 0o777 & !um;
            let target = if strip {
                match e.rel.split_once('/') {
                    Some((_, r)) => r.to_string(),
                    // The top-level directories themselves: stripped away.
                    None => {
                        modes.push(want | 0o700);
                        continue;
                    }
                }
            } else {
                e.rel.clone()
            };
            if e.is_dir {
                modes.push(want | 0o700);
                if done.contains_key(&target) {
                    continue;
                }
                match p.existing.get(&target) {
                    Some((m, b'd')) => {
                        sgid.insert(target.clone(), m & 0o2000 != 0);
                        done.insert(target, *m);
                    }
                    // Something else is there: tar reports it.
                    Some(_) => {}
                    None => {
                        let parent = target.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        let inherit = if parent.is_empty() {
                            root_sgid
                        } else {
                            sgid.get(parent).copied().unwrap_or(false)
                        };
                        sgid.insert(target.clone(), inherit);
                        if want & 0o700 != 0o700 {
                            restricted.push((target.clone(), want));
                        } else if inherit {
                            groups.entry(want).or_default().push(target.clone());
                        }
                        done.insert(target, want);
                    }
                }
            } else {
                let m = match done.get(&target) {
                    // A file at a path an earlier entry wrote: written into.
                    Some(m) => *m,
                    None => match p.existing.get(&target) {
                        Some((m, t)) if *t != b'd' => *m,
                        _ => want,
                    },
                };
                done.insert(target, m);
                modes.push(m);
            }
        }
        // Directories that keep owner rwx first (any order), then the
        // others one by one, deepest first, so none is closed before what
        // is under it is done.
        let mut post = String::new();
        for (m, paths) in groups {
            let mut line = String::new();
            for path in paths {
                if line.is_empty() {
                    line = format!("chmod -- {m:05o}");
                }
                line.push(' ');
                line.push_str(&shell_quote(&format!("./{path}")));
                if line.len() > 64 * 1024 {
                    post.push_str(&line);
                    post.push_str(" || exit 1\n");
                    line.clear();
                }
            }
            if !line.is_empty() {
                post.push_str(&line);
                post.push_str(" || exit 1\n");
            }
        }
        for (path, m) in restricted.iter().rev() {
            post.push_str(&format!(
                "chmod -- {m:05o} {} || exit 1\n",
                shell_quote(&format!("./{path}"))
            ));
        }
        Layout { modes, post }
    }
}

/// The remote script for a directory upload. It reproduces `scp -r -t
/// <dst>` fed by Packer's scp source.
///
/// stdin: the probe's list (`list_len` bytes); then, once the script has
/// answered on stdout (see [`Probe`]), a line `<post> <dirs>` with two
/// lengths, the `chmod` snippet (`post` bytes), the archive of the
/// directories (`dirs` bytes; extracted with `--skip-old-files`, so existing
/// directories keep their mode and owner, as with scp), and the archive of
/// the files (to the end; `--overwrite` writes existing files in place).
fn upload_dir_script(dst: &str, contents: bool, plan: &Plan, src: &str, list_len: usize) -> String {
    let t = shell_quote(dst);
    let mut s = String::new();
    s.push_str(&format!("T={t}; "));
    s.push_str(
        "if ! tar --version 2>/dev/null | grep -q 'GNU tar'; then \
         echo 'kiln uploads directories with GNU tar, which this machine lacks (tar --version does not say GNU tar)' >&2; exit 97; fi; \
         um=$(umask); msk() { printf %05o $((0$1 & ~0$um)); }; \
         fail() { echo \"$1\" >&2; exit 1; }; ",
    );
    // probe DIR VARIANT: which listed paths exist in DIR.
    s.push_str(&format!(
        "probe() {{ printf 'kiln-probe %s %s\\0' \"$um\" \"$2\"; \
         head -c {list_len} | {{ if [ -n \"$1\" ] && cd -- \"$1\" 2>/dev/null; then \
         xargs -0 -r sh -c 'exec find -L \"$@\" -maxdepth 0 ! -type l -printf \"%m %y %p\\0\"' sh 2>/dev/null; fi; \
         cat >/dev/null; }}; printf 'kiln-end\\0'; }}; "
    ));
    // x DIR [--strip-components=1]: both archives into DIR, then the chmods.
    s.push_str(
        "x() { d=$1; shift; read -r pl dl || fail 'kiln: the upload stream ended early'; \
         post=$(head -c \"$pl\"); \
         head -c \"$dl\" | (umask 0; tar -x -f - -C \"$d\" -m --no-same-owner --no-same-permissions --skip-old-files \"$@\") && \
         (umask 0; tar -x -h -f - -C \"$d\" -m --no-same-owner --no-same-permissions --overwrite \"$@\") || return 1; \
         [ -z \"$post\" ] || (cd -- \"$d\" && eval \"$post\"); }; ",
    );
    if !contents {
        // A `D` record named after the source directory.
        let base = Path::new(src.trim_end_matches('/'))
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            "if [ -d \"$T\" ]; then D=\"${{T%/}}/\"{b}; else D=\"$T\"; fi; \
             if [ -e \"$D\" ]; then [ -d \"$D\" ] || fail \"$D: Not a directory\"; probe \"$D\" x; x \"$D\"; exit $?; fi; \
             mkdir -- \"$D\" || exit 1; probe \"$D\" x; x \"$D\" || exit 1; exec chmod \"$(msk {m:o})\" \"$D\"",
            b = shell_quote(&base),
            m = plan.root_mode,
        ));
        return s;
    }
    // The source's entries, one record each, into <dst>.
    s.push_str("if [ -d \"$T\" ]; then probe \"$T\" x; x \"$T\"; exit $?; fi; ");
    let files: Vec<_> = plan.top.iter().filter(|e| !e.1).collect();
    let dirs: Vec<_> = plan.top.iter().filter(|e| e.1).collect();
    if plan.top.is_empty() {
        s.push_str("probe '' none; exec cat >/dev/null");
    } else if files.is_empty() {
        // Every top-level directory merges into <dst> (created by the first).
        s.push_str(&format!(
            "[ -e \"$T\" ] && fail \"$T: Not a directory\"; \
             mkdir -- \"$T\" || exit 1; probe \"$T\" xs; x \"$T\" --strip-components=1 || exit 1; \
             exec chmod \"$(msk {m:o})\" \"$T\"",
            m = dirs[0].2
        ));
    } else if dirs.is_empty() && files.len() == 1 {
        // The one file becomes <dst>.
        s.push_str(&format!(
            "case \"$T\" in */) fail \"$T: Is a directory\";; esac; \
             tmp=$(mktemp -d -- \"$T.kiln-XXXXXX\") || exit 1; probe \"$tmp\" one; \
             if x \"$tmp\"; then if [ -e \"$T\" ]; then cat -- \"$tmp\"/{n} > \"$T\"; else mv -- \"$tmp\"/{n} \"$T\"; fi; r=$?; else r=1; fi; \
             rm -rf -- \"$tmp\"; exit $r",
            n = shell_quote(&files[0].0)
        ));
    } else {
        let msg = format!(
            "{dst} must be an existing directory on the machine: Packer 1.6.6 would write each top-level file of {src} onto {dst} itself{} (create {dst} first, e.g. `mkdir -p {dst}` in a shell provisioner, or remove the trailing `/` from the source to upload the directory itself)",
            if dirs.is_empty() {
                ""
            } else {
                " and then fail on its subdirectories"
            }
        );
        s.push_str(&format!("fail {}", shell_quote(&msg)));
    }
    s
}

/// Hands 1 MiB buffers (from a `BufWriter`) to the async side.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, String>>,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tar archive of `items` (entry, mode of its header).
fn write_tar<'a>(
    w: impl Write,
    items: impl Iterator<Item = (&'a Entry, &'a u32)>,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    for (e, mode) in items {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if e.is_dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("{}/", e.rel), std::io::empty())?;
        } else {
            let f = std::fs::File::open(&e.path).map_err(|err| {
                std::io::Error::new(err.kind(), format!("{}: {err}", e.path.display()))
            })?;
            // Use the size now (the file may have changed since the walk).
            let size = f.metadata()?.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            let r = CountingReader {
                inner: std::io::Read::take(f, size),
                counter,
            };
            b.append_data(&mut h, &e.rel, r)?;
        }
    }
    let mut w = b.into_inner()?;
    w.flush()
}

struct CountingReader<'a, R> {
    inner: R,
    counter: &'a AtomicU64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads the chunks the async side receives.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Unpack a tar stream under `dst` as Packer's scp download does: new
/// files and directories get the archive's permission bits (no setuid,
/// setgid or sticky bit: Go's `FileMode` drops them) masked by the local
/// umask, existing files are truncated and keep their mode, existing
/// directories are left alone. A missing `dst` is created with the mode of
/// the first directory that arrives (Packer's `MkdirAll(dst/name, mode)`).
fn unpack_tar(r: impl std::io::Read, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut a = tar::Archive::new(r);
    let mut dst_ready = dst.is_dir();
    for e in a.entries()? {
        let mut e = e?;
        let rel = e.path()?.into_owned();
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(std::io::Error::other(format!(
                "refusing unsafe path in the archive: {}",
                rel.display()
            )));
        }
        let out = dst.join(&rel);
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        if !dst_ready {
            let m = match e.header().entry_type() {
                tar::EntryType::Directory => mode,
                _ => 0o777,
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(m)
                .create(dst)?;
            dst_ready = true;
        }
        match e.header().entry_type() {
            tar::EntryType::Directory if !out.is_dir() => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(&out)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = out.parent() {
                    std::fs::create_dir_all(p)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .open(&out)?;
                std::io::copy(&mut e, &mut f)?;
            }
            tar::EntryType::Symlink => {
                // scp follows links on the machine: tar does not. Keep the
                // link (the closest faithful result).
                if let Some(target) = e.link_name()? {
                    let _ = std::fs::remove_file(&out);
                    std::os::unix::fs::symlink(target, &out)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
