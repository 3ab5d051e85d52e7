//! What every running component gets: the build's output, its cancellation
//! tokens, the error policy, and the ledger of resources it created.
use crate::ui::Ui;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// `-on-error`: what to do when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Run every started step's cleanup (the default).
    #[default]
    Cleanup,
    /// Stop at once and leave everything as it is, for debugging.
    Abort,
    /// Ask on the terminal: clean up, abort, or retry the step.
    Ask,
}

/// The answer to an `-on-error=ask` question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskAnswer {
    Cleanup,
    Abort,
    Retry,
}

/// Asks the user what to do after a failed step (the CLI reads the
/// terminal; tests answer directly).
pub trait Asker: Send + Sync {
    fn ask(&self, build: &str, step: &str, error: &str) -> AskAnswer;
}

/// Resources created so far and not yet cleaned up. If cleanup is
/// abandoned (a second Ctrl-C), what is left here is printed so the user
/// knows what may need deleting by hand.
#[derive(Clone, Default)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
}

#[derive(Default)]
struct LedgerInner {
    next: u64,
    live: BTreeMap<u64, String>,
    released: Vec<String>,
    keep: bool,
}

/// A ledger entry; pass it back to [`Ledger::release`] once the resource is
/// gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerId(u64);

impl Ledger {
    /// Record a resource (e.g. "server 1a2b (openstack)").
    pub fn track(&self, what: impl Into<String>) -> LedgerId {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.next += 1;
        let id = l.next;
        l.live.insert(id, what.into());
        LedgerId(id)
    }
    /// The resource is gone.
    pub fn release(&self, id: LedgerId) {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = l.live.remove(&id.0) {
            l.released.push(w);
        }
    }
    /// Resources still present, oldest first.
    pub fn live(&self) -> Vec<String> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.live.values().cloned().collect()
    }
    /// The build was aborted (`-on-error=abort`, or that answer to
    /// `-on-error=ask`): what is left stays, the build's working directory
    /// included.
    pub fn keep_all(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).keep = true;
    }
    /// Was [`Ledger::keep_all`] called?
    pub fn keeping(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).keep
    }
    /// A point in the ledger's history, for [`Ledger::live_since`].
    pub fn checkpoint(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).next
    }
    /// Resources tracked after `checkpoint` and still present, oldest
    /// first.
    pub fn live_since(&self, checkpoint: u64) -> Vec<String> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.live
            .range(checkpoint + 1..)
            .map(|(_, w)| w.clone())
            .collect()
    }
    /// Resources released so far, in order.
    pub fn released(&self) -> Vec<String> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.released.clone()
    }
}

/// Context of one running build.
#[derive(Clone)]
pub struct BuildCtx {
    pub ui: Arc<dyn Ui>,
    /// Fired by the first Ctrl-C/SIGTERM: stop work, clean up.
    pub cancel: CancellationToken,
    /// Fired by the second Ctrl-C: stop cleaning up too.
    pub abandon: CancellationToken,
    pub on_error: OnError,
    pub asker: Option<Arc<dyn Asker>>,
    pub build_name: String,
    pub build_type: String,
    pub ledger: Ledger,
    /// Values the builder generates for `{{build `Key`}}` and for
    /// provisioners (`Host`, `Port`, `User`, `SSHPublicKey`, `ID`, ...).
    pub generated: Arc<Mutex<BTreeMap<String, String>>>,
    /// Working directory for temporary files of this build.
    pub work_dir: std::path::PathBuf,
    /// Each step's and provisioner's wall time, printed at the end.
    pub timeline: crate::timeline::Timeline,
}

impl BuildCtx {
    /// Record a generated value.
    pub fn set_generated(&self, key: &str, value: impl Into<String>) {
        self.generated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value.into());
    }
    pub fn generated(&self) -> BTreeMap<String, String> {
        self.generated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The context to render a run-time option with (a provisioner's
    /// `execute_command`, a post-processor's `output`): `base`, plus the
    /// builder's generated data as context values (`{{.ID}}`; a value
    /// `base` already has wins), plus `extra` (which override).
    pub fn runtime_interp(
        &self,
        base: &kiln_template::Context,
        extra: &[(&str, &str)],
    ) -> kiln_template::Context {
        let mut c = base.clone();
        for (k, v) in self.generated() {
            c.data.entry(k).or_insert(v);
        }
        for (k, v) in extra {
            c.data.insert((*k).to_string(), (*v).to_string());
        }
        c
    }
    /// Run `fut` unless the build is cancelled first.
    pub async fn cancellable<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, crate::BuildError>>,
    ) -> Result<T, crate::BuildError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(crate::BuildError::Cancelled),
            r = fut => r,
        }
    }
    /// Sleep unless cancelled.
    pub async fn sleep(&self, d: std::time::Duration) -> Result<(), crate::BuildError> {
        self.cancellable(async {
            tokio::time::sleep(d).await;
            Ok(())
        })
        .await
    }

    /// A context for tests and tools: a capturing UI, fresh tokens.
    pub fn for_test(ui: Arc<dyn Ui>, work_dir: std::path::PathBuf) -> Self {
        BuildCtx {
            build_name: ui.name().to_string(),
            build_type: ui.name().to_string(),
            ui,
            cancel: CancellationToken::new(),
            abandon: CancellationToken::new(),
            on_error: OnError::Cleanup,
            asker: None,
            ledger: Ledger::default(),
            generated: Default::default(),
            work_dir,
            timeline: Default::default(),
        }
    }
}
