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
//!   directory is created or merged into, which modes result (the source's
//!   mode masked by the remote umask for what is created; existing files and
//!   directories keep theirs), symlinks followed the way Packer follows them.
//!   A small shell script decides on the machine, in the same exec, so no
//!   extra round trip is spent probing the destination.
//! - **Big buffers**: the archive is produced by a blocking thread in 1 MiB
//!   chunks handed to the channel without copying (`Bytes`); the SSH window
//!   and packets are as large as the server allows.
//!
//! The remote side needs a POSIX shell, `cat`, and (for directories) GNU
//! tar — the same assumption as Packer's need for `scp`.
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
    async fn exec_feeding(
        &self,
        what: &str,
        command: &str,
        mut input: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
        mut on_sent: impl FnMut(usize),
    ) -> Result<Collected, CommError> {
        let ch = self.open_channel().await?;
        ch.exec(true, command)
            .await
            .map_err(|e| disconnected(what, e))?;
        let (rx, tx) = ch.split();
        let reader = tokio::spawn(collect(rx, None));
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
            self.exec_feeding(&what, &script, rx, |n| progress.advance(n as u64)),
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
        // Two archives in one stream: the directories first (extracted
        // without touching existing ones), then the files.
        let mut dirs_tar = Vec::new();
        write_tar(&mut dirs_tar, &plan.entries, &AtomicU64::new(0), true).map_err(|e| {
            CommError::Io {
                context: format!("{what}: archiving"),
                source: e,
            }
        })?;
        let script = upload_dir_script(dst, contents, &plan, &src_str, dirs_tar.len());
        progress.start(Some(plan.total_bytes));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        let counter = Arc::new(AtomicU64::new(0));
        let counter2 = counter.clone();
        let entries = plan.entries.clone();
        let producer = tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(Bytes::from(dirs_tar))).is_err() {
                return;
            }
            let w = ChunkWriter { tx: tx.clone() };
            let w = std::io::BufWriter::with_capacity(CHUNK, w);
            if let Err(e) = write_tar(w, &entries, &counter2, false) {
                let _ = tx.blocking_send(Err(e.to_string()));
            }
        });
        let mut reported = 0u64;
        let c = self
            .exec_feeding(&what, &script, rx, |_| {
                let now = counter.load(Ordering::Relaxed);
                if now > reported {
                    progress.advance(now - reported);
                    reported = now;
                }
            })
            .await;
        let _ = producer.await;
        let now = counter.load(Ordering::Relaxed);
        if now > reported {
            progress.advance(now - reported);
        }
        progress.finish();
        let c = c?;
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
/// file gets `mode` masked by the umask, an existing file keeps its mode,
/// and a directory at `dst` is an error.
pub(crate) fn upload_file_script(dst: &str, mode: u32) -> String {
    format!(
        "f={q}; if [ -d \"$f\" ]; then echo \"$f: Is a directory\" >&2; exit 1; fi; \
         if [ -e \"$f\" ]; then exec cat > \"$f\"; fi; \
         m=$(umask); (umask 077; : > \"$f\") || exit 1; cat > \"$f\" || exit 1; \
         exec chmod \"$(printf %o $((0{mode:o} & ~0$m)))\" \"$f\"",
        q = shell_quote(dst),
        mode = mode & 0o7777,
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
/// with the link's mode, a link to a file is a file with mode 0644).
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
                    (true, lmeta.permissions().mode() & 0o7777, 0, target)
                } else {
                    (false, 0o644, tmeta.len(), target)
                }
            } else if lmeta.is_dir() {
                (true, lmeta.permissions().mode() & 0o7777, 0, path.clone())
            } else if lmeta.is_file() {
                (
                    false,
                    lmeta.permissions().mode() & 0o7777,
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
        root_mode: root_meta.permissions().mode() & 0o7777,
        top,
    })
}

/// The remote script for a directory upload (stdin: the tar archive of the
/// source directory's contents). It reproduces `scp -r -t <dst>` fed by
/// Packer's scp source.
///
/// stdin carries two archives: `dirs_len` bytes of directories (extracted
/// with `--skip-old-files`, so existing directories keep their mode and
/// owner, as with scp), then the files. Directories without owner `rwx` are
/// created writable and get their mode once the files are in.
fn upload_dir_script(dst: &str, contents: bool, plan: &Plan, src: &str, dirs_len: usize) -> String {
    let t = shell_quote(dst);
    let mut s = String::new();
    s.push_str(&format!("T={t}; "));
    s.push_str(
        "if ! tar --version 2>/dev/null | grep -q 'GNU tar'; then \
         echo 'kiln uploads directories with GNU tar, which this machine lacks (tar --version does not say GNU tar)' >&2; exit 97; fi; \
         um=$(umask); msk() { printf %o $((0$1 & ~0$um)); }; \
         fail() { echo \"$1\" >&2; exit 1; }; ",
    );
    // x DIR [--strip-components=1]: both archives into DIR.
    let xdef = |name: &str, strip: bool| {
        let mut fixes = String::new();
        for e in plan
            .entries
            .iter()
            .filter(|e| e.is_dir && e.mode & 0o700 != 0o700)
        {
            let rel = if strip {
                match e.rel.split_once('/') {
                    Some((_, r)) => r.to_string(),
                    None => continue,
                }
            } else {
                e.rel.clone()
            };
            fixes.push_str(&format!(
                "chmod \"$(msk {:o})\" \"$d\"/{} || return 1; ",
                e.mode,
                shell_quote(&rel)
            ));
        }
        format!(
            "{name}() {{ d=$1; shift; head -c {dirs_len} | tar -x -f - -C \"$d\" -m --no-same-owner --no-same-permissions --skip-old-files \"$@\" && \
             tar -x -f - -C \"$d\" -m --no-same-owner --no-same-permissions \"$@\" || return 1; {fixes}}}; "
        )
    };
    if !contents {
        s.push_str(&xdef("x", false));
        // A `D` record named after the source directory.
        let base = Path::new(src.trim_end_matches('/'))
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            "if [ -d \"$T\" ]; then D=\"${{T%/}}/\"{b}; else D=\"$T\"; fi; \
             if [ -e \"$D\" ]; then [ -d \"$D\" ] || fail \"$D: Not a directory\"; x \"$D\"; exit $?; fi; \
             mkdir -- \"$D\" || exit 1; x \"$D\" || exit 1; exec chmod \"$(msk {m:o})\" \"$D\"",
            b = shell_quote(&base),
            m = plan.root_mode,
        ));
        return s;
    }
    // The source's entries, one record each, into <dst>.
    s.push_str(&xdef("x", false));
    if !plan.top.is_empty() && plan.top.iter().all(|e| e.1) {
        s.push_str(&xdef("xs", true));
    }
    s.push_str("if [ -d \"$T\" ]; then x \"$T\"; exit $?; fi; ");
    let files: Vec<_> = plan.top.iter().filter(|e| !e.1).collect();
    let dirs: Vec<_> = plan.top.iter().filter(|e| e.1).collect();
    if plan.top.is_empty() {
        s.push_str("exec cat >/dev/null");
    } else if files.is_empty() {
        // Every top-level directory merges into <dst> (created by the first).
        s.push_str(&format!(
            "[ -e \"$T\" ] && fail \"$T: Not a directory\"; \
             mkdir -- \"$T\" || exit 1; xs \"$T\" --strip-components=1 || exit 1; \
             exec chmod \"$(msk {m:o})\" \"$T\"",
            m = dirs[0].2
        ));
    } else if dirs.is_empty() && files.len() == 1 {
        // The one file becomes <dst>.
        s.push_str(&format!(
            "case \"$T\" in */) fail \"$T: Is a directory\";; esac; \
             tmp=$(mktemp -d -- \"$T.kiln-XXXXXX\") || exit 1; \
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

/// The archive of the directories (`dirs`, made writable for their owner)
/// or of the files.
fn write_tar(
    w: impl Write,
    entries: &[Entry],
    counter: &AtomicU64,
    dirs: bool,
) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    for e in entries.iter().filter(|e| e.is_dir == dirs) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(if dirs { e.mode | 0o700 } else { e.mode });
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
/// files and directories get the archive's mode masked by the local umask,
/// existing files are truncated and keep their mode.
fn unpack_tar(r: impl std::io::Read, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut a = tar::Archive::new(r);
    std::fs::create_dir_all(dst)?;
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
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
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
