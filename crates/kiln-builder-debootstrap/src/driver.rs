//! The external programs the builder runs, behind one small trait so the
//! steps can be tested without running them.
use async_trait::async_trait;
use kiln_core::local::{group_alive, which, GroupGuard};
use kiln_core::{BuildCtx, BuildError};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// SYSLINUX's MBR boot code (Debian package `syslinux-common`).
pub const MBR_BIN: &str = "/usr/lib/syslinux/mbr/mbr.bin";

#[async_trait]
pub trait Driver: Send + Sync {
    /// The real programs on this host (root and the programs are checked
    /// before a build).
    fn is_host(&self) -> bool {
        false
    }
    /// `mmdebstrap ARGS` with `SOURCE_DATE_EPOCH`, its output shown as it
    /// runs. Returns the process group id as soon as it started (through
    /// `started`) so a cleanup can wait for every process of it.
    async fn mmdebstrap(
        &self,
        ctx: &BuildCtx,
        args: &[String],
        epoch: i64,
        started: &(dyn Fn(i32) + Send + Sync),
    ) -> Result<(), BuildError>;
    /// The `Date:` of `dists/SUITE/InRelease` on the mirror (UNIX time).
    async fn release_date(
        &self,
        ctx: &BuildCtx,
        mirror: &str,
        suite: &str,
    ) -> Result<i64, BuildError>;
    /// `systemctl --root=ROOT enable UNITS`.
    async fn enable_units(
        &self,
        ctx: &BuildCtx,
        root: &Path,
        units: &[&str],
    ) -> Result<(), BuildError>;
    /// `mkfs.ext4 ARGS` with `E2FSPROGS_FAKE_TIME`.
    async fn mkfs(&self, ctx: &BuildCtx, args: &[String], epoch: i64) -> Result<(), BuildError>;
    /// `mount -o loop,offset=OFFSET DISK DIR`.
    async fn mount_loop(
        &self,
        ctx: &BuildCtx,
        disk: &Path,
        offset: u64,
        dir: &Path,
    ) -> Result<(), BuildError>;
    /// `umount DIR` (lazily if busy).
    async fn umount(&self, dir: &Path) -> Result<(), BuildError>;
    /// `extlinux --install DIR`.
    async fn extlinux(&self, ctx: &BuildCtx, dir: &Path) -> Result<(), BuildError>;
    /// The MBR boot code to put in front of the partition table.
    async fn mbr_code(&self) -> Result<Vec<u8>, BuildError>;
    /// `qemu-img ARGS`.
    async fn qemu_img(&self, ctx: &BuildCtx, args: &[String]) -> Result<(), BuildError>;
}

/// The real programs.
#[derive(Debug, Clone, Default)]
pub struct HostDriver;

/// Run a program in its own process group. With `stream`, stdout and
/// stderr lines go to the UI as they come; otherwise they are kept and
/// the last lines of stderr (or stdout) explain a failure.
pub async fn run(
    ctx: &BuildCtx,
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    stream: bool,
    started: Option<&(dyn Fn(i32) + Send + Sync)>,
) -> Result<String, BuildError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| BuildError::msg(format!("running {program}: {e}")))?;
    let pid = child.id().unwrap_or(0) as i32;
    let mut guard = GroupGuard::new(pid, Duration::from_secs(20));
    if let Some(f) = started {
        f(pid);
    }
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (out, err) = if stream {
        let ui = ctx.ui.clone();
        let ui2 = ctx.ui.clone();
        let a = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tail = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                ui.message(&l);
                keep_tail(&mut tail, l);
            }
            tail.join("\n")
        });
        let b = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tail = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                ui2.message(&l);
                keep_tail(&mut tail, l);
            }
            tail.join("\n")
        });
        (a.await.unwrap_or_default(), b.await.unwrap_or_default())
    } else {
        let a = tokio::spawn(async move {
            let mut s = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut s).await;
            s
        });
        let b = tokio::spawn(async move {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s).await;
            s
        });
        (a.await.unwrap_or_default(), b.await.unwrap_or_default())
    };
    let status = child
        .wait()
        .await
        .map_err(|e| BuildError::msg(format!("waiting for {program}: {e}")))?;
    // The leader is gone; children it left behind are still killed.
    if !group_alive(pid) {
        guard.disarm();
    }
    drop(guard);
    if status.success() {
        return Ok(out);
    }
    let why = if err.trim().is_empty() { &out } else { &err };
    let tail: Vec<&str> = why.trim_end().lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(BuildError::msg(format!(
        "{program} failed ({status}){}{}",
        if tail.is_empty() { "" } else { ":\n" },
        tail.join("\n")
    )))
}

fn keep_tail(tail: &mut Vec<String>, line: String) {
    tail.push(line);
    if tail.len() > 30 {
        tail.remove(0);
    }
}

/// Parse the `Date:` field of a Release/InRelease file (RFC 2822, UTC).
pub fn parse_release_date(release: &str) -> Option<i64> {
    let line = release.lines().find_map(|l| l.strip_prefix("Date:"))?;
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second]"
    );
    let s = line.trim();
    let s = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix(" GMT"))
        .or_else(|| s.strip_suffix(" +0000"))?;
    let dt = time::PrimitiveDateTime::parse(s, &fmt).ok()?;
    Some(dt.assume_utc().unix_timestamp())
}

#[async_trait]
impl Driver for HostDriver {
    fn is_host(&self) -> bool {
        true
    }
    async fn mmdebstrap(
        &self,
        ctx: &BuildCtx,
        args: &[String],
        epoch: i64,
        started: &(dyn Fn(i32) + Send + Sync),
    ) -> Result<(), BuildError> {
        run(
            ctx,
            "mmdebstrap",
            args,
            &[("SOURCE_DATE_EPOCH", epoch.to_string())],
            true,
            Some(started),
        )
        .await
        .map(|_| ())
    }

    async fn release_date(
        &self,
        ctx: &BuildCtx,
        mirror: &str,
        suite: &str,
    ) -> Result<i64, BuildError> {
        let url = format!("{mirror}/dists/{suite}/InRelease");
        let text = if let Some(path) = url.strip_prefix("file:") {
            let path = path.trim_start_matches("//");
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| BuildError::msg(format!("reading {path}: {e}")))?
        } else {
            let dest = ctx.work_dir.join("InRelease");
            run(
                ctx,
                "/usr/lib/apt/apt-helper",
                &[
                    "download-file".into(),
                    url.clone(),
                    dest.display().to_string(),
                ],
                &[],
                false,
                None,
            )
            .await
            .map_err(|e| e.context(format!("downloading {url}")))?;
            let t = tokio::fs::read_to_string(&dest)
                .await
                .map_err(|e| BuildError::msg(format!("reading {}: {e}", dest.display())))?;
            let _ = tokio::fs::remove_file(&dest).await;
            t
        };
        parse_release_date(&text)
            .ok_or_else(|| BuildError::msg(format!("{url} has no readable Date: field")))
    }

    async fn enable_units(
        &self,
        ctx: &BuildCtx,
        root: &Path,
        units: &[&str],
    ) -> Result<(), BuildError> {
        let mut args = vec![format!("--root={}", root.display()), "enable".into()];
        args.extend(units.iter().map(|u| u.to_string()));
        run(ctx, "systemctl", &args, &[], false, None)
            .await
            .map(|_| ())
    }

    async fn mkfs(&self, ctx: &BuildCtx, args: &[String], epoch: i64) -> Result<(), BuildError> {
        run(
            ctx,
            "mkfs.ext4",
            args,
            &[("E2FSPROGS_FAKE_TIME", epoch.to_string())],
            false,
            None,
        )
        .await
        .map(|_| ())
    }

    async fn mount_loop(
        &self,
        ctx: &BuildCtx,
        disk: &Path,
        offset: u64,
        dir: &Path,
    ) -> Result<(), BuildError> {
        run(
            ctx,
            "mount",
            &[
                "-o".into(),
                format!("loop,offset={offset}"),
                disk.display().to_string(),
                dir.display().to_string(),
            ],
            &[],
            false,
            None,
        )
        .await
        .map(|_| ())
    }

    async fn umount(&self, dir: &Path) -> Result<(), BuildError> {
        let st = tokio::process::Command::new("umount")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| BuildError::msg(format!("running umount: {e}")))?;
        if st.status.success() {
            return Ok(());
        }
        let lazy = tokio::process::Command::new("umount")
            .arg("-l")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| BuildError::msg(format!("running umount -l: {e}")))?;
        if lazy.status.success() {
            Ok(())
        } else {
            Err(BuildError::msg(format!(
                "umount {}: {}",
                dir.display(),
                String::from_utf8_lossy(&st.stderr).trim()
            )))
        }
    }

    async fn extlinux(&self, ctx: &BuildCtx, dir: &Path) -> Result<(), BuildError> {
        run(
            ctx,
            "extlinux",
            &["--install".into(), dir.display().to_string()],
            &[],
            false,
            None,
        )
        .await
        .map(|_| ())
    }

    async fn mbr_code(&self) -> Result<Vec<u8>, BuildError> {
        tokio::fs::read(MBR_BIN).await.map_err(|e| {
            BuildError::msg(format!(
                "reading {MBR_BIN}: {e} (install the syslinux-common package)"
            ))
        })
    }

    async fn qemu_img(&self, ctx: &BuildCtx, args: &[String]) -> Result<(), BuildError> {
        run(ctx, "qemu-img", args, &[], false, None)
            .await
            .map(|_| ())
    }
}

/// Programs the host driver needs, with the Debian package of each.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("extlinux", "extlinux"),
    ("qemu-img", "qemu-utils"),
    ("systemctl", "systemd"),
    ("mount", "mount"),
];

/// The programs of [`PROGRAMS`] missing from `PATH`, as "program (package)".
pub fn missing_programs() -> Vec<String> {
    let mut missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(p, _)| which(p).is_none())
        .map(|(p, pkg)| format!("{p} (package {pkg})"))
        .collect();
    if !Path::new(MBR_BIN).is_file() {
        missing.push(format!("{MBR_BIN} (package syslinux-common)"));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates() {
        let r = "Origin: Debian\nLabel: Debian\nSuite: oldstable\nCodename: bookworm\n\
                 Changelogs: https://x\nDate: Sat, 10 May 2025 09:57:24 UTC\nAcquire-By-Hash: yes\n";
        assert_eq!(parse_release_date(r), Some(1746871044));
        assert_eq!(
            parse_release_date("Date: Mon, 5 Jan 2026 08:01:02 UTC\n"),
            Some(1767600062)
        );
        assert_eq!(parse_release_date("Suite: x\n"), None);
        assert_eq!(parse_release_date("Date: yesterday\n"), None);
    }

    #[tokio::test]
    async fn run_reports_the_tail_of_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let out = kiln_core::Output::capturing(kiln_core::ui::OutputConfig {
            mode: kiln_core::ui::Mode::Human,
            color: false,
            timestamp: false,
        });
        let ctx = BuildCtx::for_test(out.build_ui("t"), dir.path().to_path_buf());
        let ok = run(
            &ctx,
            "sh",
            &["-c".into(), "echo hi".into()],
            &[],
            false,
            None,
        )
        .await
        .unwrap();
        assert_eq!(ok, "hi\n");
        let err = run(
            &ctx,
            "sh",
            &["-c".into(), "echo out; echo boom >&2; exit 3".into()],
            &[],
            false,
            None,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sh failed") && err.contains("boom") && err.contains('3'),
            "{err}"
        );
    }

    #[tokio::test]
    async fn dropping_a_run_kills_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let out = kiln_core::Output::capturing(kiln_core::ui::OutputConfig {
            mode: kiln_core::ui::Mode::Human,
            color: false,
            timestamp: false,
        });
        let ctx = BuildCtx::for_test(out.build_ui("t"), dir.path().to_path_buf());
        let pg = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
        let pg2 = pg.clone();
        let started = move |p: i32| pg2.store(p, std::sync::atomic::Ordering::SeqCst);
        // A child that ignores nothing and a grandchild in the same group.
        let args = ["-c".to_string(), "sleep 300 & sleep 300".to_string()];
        let fut = run(&ctx, "sh", &args, &[], false, Some(&started));
        let r = tokio::time::timeout(Duration::from_millis(500), fut).await;
        assert!(r.is_err(), "still running when dropped");
        let pgid = pg.load(std::sync::atomic::Ordering::SeqCst);
        assert!(pgid > 0);
        assert!(
            kiln_core::local::wait_group_gone(pgid, Duration::from_secs(10)).await,
            "group killed"
        );
    }
}
