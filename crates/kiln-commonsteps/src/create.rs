//! A create request that may leak, written once: how a builder makes a
//! cloud resource (a server, a key pair, a floating IP, an image) so that no
//! failure, timeout or Ctrl-C leaves it behind unknown.
//!
//! Every create request goes through the same six moves:
//!
//! 1. **record**: an entry in the build's ledger *before* the request is
//!    sent (if cleanup is abandoned, the entry says what may be left);
//! 2. **send**: the request runs as a task of its own, so that when the
//!    step running it is dropped (a Ctrl-C drops the running step's future)
//!    the request still runs to its answer;
//! 3. **settle**: the step's cleanup awaits that answer;
//! 4. **find**: when the answer leaves the outcome unknown
//!    ([`CloudError::outcome_unknown`]: a server error, no answer), look for
//!    what the request may have made: once after an error answer (the cloud
//!    is done with the request), again and again for as long as a request
//!    may take after no answer at all ([`CloudError::unanswered`]: the cloud
//!    may still be carrying it out, and deleting too early would let it
//!    appear afterwards);
//! 5. **delete** what was made or found, each delete retried while the
//!    error is worth retrying ([`CloudError::is_retryable`]); "not found"
//!    counts as done;
//! 6. **release** the ledger entry.
//!
//! A step holds a [`Create`] and calls [`Create::send`] in its `run`, and
//! [`Create::undo`] in its `cleanup` (or [`Create::keep`] when what it made
//! is handed on, as an artifact). A request that must stop rather than run
//! on when its step is dropped (a long upload), or a thing another request
//! makes (the AMI an import task leaves), is recorded with
//! [`Create::record`] and its answer told with [`Create::answer`]; the
//! cleanup is the same. What is special about a kind of resource
//! (how to look for it, how to delete it, or cancel it when it is a task,
//! what to say) is a [`Resource`];
//! what the routine needs to know of a cloud's error type is a
//! [`CloudError`]. Nothing here depends on a particular cloud.
//!
//! ```text
//! // run: a server, recorded, sent, its id kept for the cleanup
//! let id = self.create.send(ctx, format!("server {name:?} being created"),
//!     async move { cloud.create_server(&opts).await }).await
//!     .map_err(|e| BuildError::from(e).context("Error launching source server"))?;
//! // cleanup: whatever happened above, nothing is left
//! self.create.undo(ctx, &Servers { cloud: &s.cloud, marker }).await?;
//! ```
use kiln_core::context::LedgerId;
use kiln_core::{async_trait, BuildCtx, BuildError};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::{JoinError, JoinHandle};

/// What the create routine needs to know of a cloud's error type: the
/// answers to the questions its cleanup asks. Implemented by the cloud
/// client's own error (kiln-openstack's `OsError`).
///
/// `Into<BuildError>`: a step's error keeps the cloud's error whole
/// ([`BuildError::find`] finds it by type).
pub trait CloudError: std::error::Error + Into<BuildError> + Send + Sync + 'static {
    /// The request may or may not have been carried out (no answer, a
    /// server error): what it makes must be looked for. `false` for a
    /// clear refusal (4xx): nothing was made.
    fn outcome_unknown(&self) -> bool;
    /// No answer at all (a timeout, a reset connection): the cloud may
    /// still be carrying the request out, and what it makes may appear a
    /// little later. Implies [`CloudError::outcome_unknown`].
    fn unanswered(&self) -> bool;
    /// The thing asked about is not there (a delete of it counts as done).
    fn is_not_found(&self) -> bool;
    /// Trying the same request again may succeed (no answer, throttling, a
    /// server error), as opposed to a refusal that will not change.
    fn is_retryable(&self) -> bool;
    /// The error for a request whose task ended without an answer (it
    /// panicked or was aborted): its outcome is unknown, and it must count
    /// as [`CloudError::unanswered`].
    fn task_lost(reason: String) -> Self
    where
        Self: Sized;
}

/// What is special about one kind of resource, for [`Create::undo`]: how
/// to look for what a request without a clear answer made, how to delete
/// one, and what to say. Builders implement it for a small struct that
/// borrows their client and holds what the request was given to be found
/// by (a marker in the metadata, a unique name, a client token, the id of
/// the server an image is made from).
#[async_trait]
pub trait Resource: Send + Sync {
    /// What identifies one made thing to delete it (an id, a name).
    type Item: Send + Sync;
    type Error: CloudError;

    /// How long the cloud may take over one request (the client's request
    /// timeout): after a request got no answer, [`Resource::find`] is
    /// tried for this long.
    fn request_timeout(&self) -> Duration;

    /// What the request may have made: every thing that carries what kiln
    /// gave the request to be found by. Retried as the deletes are.
    async fn find(&self) -> Result<Vec<Self::Item>, Self::Error>;

    /// Delete one thing (or cancel it, when it is a task: what the task
    /// made by then is for [`Resource::deleted`] to record): one request,
    /// retried while the error
    /// [`is_retryable`](CloudError::is_retryable); "not found" counts as
    /// done.
    async fn delete(&self, item: &Self::Item) -> Result<(), Self::Error>;

    /// Context for an error while looking ("Error looking for the server
    /// that may have been created (kiln_marker=...)").
    fn find_failed(&self) -> String;

    /// Context for an error deleting `item` ("Error deleting volume X,
    /// please delete it manually").
    fn delete_failed(&self, item: &Self::Item) -> String;

    /// `Some(warning)` when what this request makes cannot be looked for
    /// (it carries nothing kiln gave it): an unknown outcome is then shown
    /// as the warning instead of looked for. Default: it can be.
    fn cannot_find(&self) -> Option<String> {
        None
    }

    /// Before the first delete request for `item`: say what is deleted,
    /// wait until it can be (a volume still detaching).
    async fn deleting(&self, _ctx: &BuildCtx, _item: &Self::Item) {}

    /// Once `item` is deleted: say so, wait until it is gone (a server
    /// shutting down, before the key pair it uses may go); once a task is
    /// cancelled, record what it made before (another [`Create`]'s
    /// [`Create::record`]). An error keeps `item`'s record.
    async fn deleted(&self, _ctx: &BuildCtx, _item: &Self::Item) -> Result<(), BuildError> {
        Ok(())
    }
}

/// How patient a cleanup is with the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How many times a cleanup's list or delete request is tried.
    pub attempts: u32,
    /// The pause after the first failed try, doubled after each.
    pub delay: Duration,
    /// The pause between two looks for what an unanswered request made,
    /// doubled after each look up to [`Retry::max_look_delay`].
    pub look_delay: Duration,
    pub max_look_delay: Duration,
}

impl Default for Retry {
    /// Five tries, 250 ms apart then doubling (about 4 s in all); looks
    /// 250 ms apart, doubling up to 2 s.
    fn default() -> Self {
        Retry {
            attempts: 5,
            delay: Duration::from_millis(250),
            look_delay: Duration::from_millis(250),
            max_look_delay: Duration::from_secs(2),
        }
    }
}

/// One request's state.
enum State<T, E> {
    /// Sent; no answer yet (the step was dropped while waiting for it).
    Sent(JoinHandle<Result<T, E>>),
    /// Recorded; the caller sends the request and has not told its
    /// answer ([`Create::record`]): as good as no answer.
    Recorded,
    /// Refused: nothing was made (the entry goes).
    Refused,
    /// The answer leaves the outcome unknown.
    Unknown { unanswered: bool },
    /// The request made this.
    Made(T),
}

/// What a made thing's ledger entry says ([`Create::labelled`]).
type Label<T> = Box<dyn Fn(&T) -> String + Send + Sync>;

struct Entry<T, E> {
    ledger: LedgerId,
    state: State<T, E>,
}

/// The create requests of one step, from before they are sent until what
/// they made is deleted or handed on. See the [module](self) for the
/// sequence.
///
/// Normally one request per step; a step that runs again (`-on-error=ask`
/// retry) sends another, and [`Create::undo`] undoes them all, newest
/// first.
pub struct Create<T, E> {
    kind: &'static str,
    label: Option<Label<T>>,
    retry: Retry,
    entries: Vec<Entry<T, E>>,
}

impl<T, E> Create<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: CloudError,
{
    /// A create of a `kind` of thing ("server", "key pair"), named in
    /// messages ("Waiting for the answer to the server create request").
    pub fn new(kind: &'static str) -> Self {
        Create {
            kind,
            label: None,
            retry: Retry::default(),
            entries: Vec::new(),
        }
    }

    /// Once a request made `t`, its ledger entry says `label(t)` ("server
    /// 1a2b (openstack)") instead of what [`Create::send`] was given.
    pub fn labelled(mut self, label: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.label = Some(Box::new(label));
        self
    }

    /// With another [`Retry`] (tests, a cloud that throttles hard).
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Record the request in the ledger as `label`, send it and wait for
    /// its answer, which is returned. The request runs on when this future
    /// is dropped; [`Create::undo`] then awaits it. It must end on its own
    /// (the client's request timeout): nothing here bounds it.
    ///
    /// A clear refusal ([`CloudError::outcome_unknown`] is `false`)
    /// releases the record at once: nothing was made.
    pub async fn send<F>(
        &mut self,
        ctx: &BuildCtx,
        label: impl Into<String>,
        request: F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.entries.push(Entry {
            ledger: ctx.ledger.track(label),
            state: State::Sent(tokio::spawn(request)),
        });
        let i = self.entries.len() - 1;
        let State::Sent(handle) = &mut self.entries[i].state else {
            unreachable!("just pushed")
        };
        let answer = joined(handle.await);
        self.answered(ctx, i, &answer);
        self.entries.retain(|e| !matches!(e.state, State::Refused));
        answer
    }

    /// Record a request in the ledger as `label`, before the caller sends
    /// it itself (instead of [`Create::send`]): for a request that must
    /// stop, not run on, when its step is dropped (a long upload, which
    /// [`Create::undo`] then removes), or for a thing made by another
    /// request that the caller follows (the AMI an import task makes).
    ///
    /// Until [`Create::answer`] tells its answer, the request counts as
    /// one without an answer ([`CloudError::unanswered`]): [`Create::undo`]
    /// looks for what it may have made, and so does it after an error the
    /// caller cannot tell apart (leave it unanswered).
    pub fn record(&mut self, ctx: &BuildCtx, label: impl Into<String>) {
        self.entries.push(Entry {
            ledger: ctx.ledger.track(label),
            state: State::Recorded,
        });
    }

    /// The answer to the request [`Create::record`]ed last, as
    /// [`Create::send`] takes it: what it made (relabelled as
    /// [`Create::labelled`] says), a refusal (the record goes at once) or
    /// an unknown outcome. Does nothing when no recorded request waits for
    /// its answer.
    pub fn answer(&mut self, ctx: &BuildCtx, answer: &Result<T, E>) {
        let Some(i) = self
            .entries
            .iter()
            .rposition(|e| matches!(e.state, State::Recorded))
        else {
            return;
        };
        self.answered(ctx, i, answer);
        self.entries.retain(|e| !matches!(e.state, State::Refused));
    }

    /// What the newest request made, if it answered so.
    pub fn made(&self) -> Option<&T> {
        self.entries.iter().rev().find_map(|e| match &e.state {
            State::Made(t) => Some(t),
            _ => None,
        })
    }

    /// Is a request waiting for its answer, or did one end with an unknown
    /// outcome?
    pub fn unsettled(&self) -> bool {
        self.entries
            .iter()
            .any(|e| !matches!(e.state, State::Made(_)))
    }

    /// Await the answers of the requests still on their way (their step
    /// was dropped), saying so. [`Create::undo`] does this first.
    pub async fn settle(&mut self, ctx: &BuildCtx) {
        for i in 0..self.entries.len() {
            if let State::Sent(handle) = &mut self.entries[i].state {
                ctx.ui.message(&format!(
                    "Waiting for the answer to the {} create request before cleaning up...",
                    self.kind
                ));
                let answer = joined(handle.await);
                self.answered(ctx, i, &answer);
            }
        }
        self.entries.retain(|e| !matches!(e.state, State::Refused));
    }

    /// Undo every request: settle, look for what an unknown outcome may
    /// have made, delete what was made or found (with retries), release
    /// the records. On an error the records of what is not known to be
    /// gone stay in the ledger (the build then says what may be left).
    pub async fn undo<R>(&mut self, ctx: &BuildCtx, resource: &R) -> Result<(), BuildError>
    where
        R: Resource<Item = T, Error = E>,
    {
        self.settle(ctx).await;
        while let Some(entry) = self.entries.last() {
            let items = match &entry.state {
                State::Made(t) => vec![t.clone()],
                State::Unknown { .. } | State::Recorded => match resource.cannot_find() {
                    Some(warning) => {
                        ctx.ui.error(&warning);
                        Vec::new()
                    }
                    None => self
                        .find(
                            resource,
                            matches!(
                                entry.state,
                                State::Unknown { unanswered: true } | State::Recorded
                            ),
                        )
                        .await
                        .map_err(|e| with_context(e, resource.find_failed()))?,
                },
                State::Sent(_) | State::Refused => unreachable!("settled above"),
            };
            for item in &items {
                resource.deleting(ctx, item).await;
                retrying(self.retry, || async {
                    match resource.delete(item).await {
                        Err(e) if e.is_not_found() => Ok(()),
                        r => r,
                    }
                })
                .await
                .map_err(|e| with_context(e, resource.delete_failed(item)))?;
                resource.deleted(ctx, item).await?;
            }
            if let Some(done) = self.entries.pop() {
                ctx.ledger.release(done.ledger);
            }
        }
        Ok(())
    }

    /// What the requests made is handed on (it is the build's artifact),
    /// or is over with nothing left to undo (a task that finished, what it
    /// made recorded on its own): release the records without deleting
    /// anything. Returns what the newest request made.
    pub fn keep(&mut self, ctx: &BuildCtx) -> Option<T> {
        let made = self.made().cloned();
        for e in self.entries.drain(..) {
            ctx.ledger.release(e.ledger);
        }
        made
    }

    /// Record entry `i`'s answer.
    fn answered(&mut self, ctx: &BuildCtx, i: usize, answer: &Result<T, E>) {
        let entry = &mut self.entries[i];
        match answer {
            Ok(t) => {
                if let Some(label) = &self.label {
                    ctx.ledger.release(entry.ledger);
                    entry.ledger = ctx.ledger.track(label(t));
                }
                entry.state = State::Made(t.clone());
            }
            Err(e) if e.outcome_unknown() || e.unanswered() => {
                entry.state = State::Unknown {
                    unanswered: e.unanswered(),
                };
            }
            Err(_) => {
                // Refused: nothing was made.
                ctx.ledger.release(entry.ledger);
                entry.state = State::Refused;
            }
        }
    }

    /// Look for what a request with an unknown outcome made: once after an
    /// error answer; after no answer, until something is found or a
    /// request's time is up.
    async fn find<R>(&self, resource: &R, unanswered: bool) -> Result<Vec<T>, E>
    where
        R: Resource<Item = T, Error = E>,
    {
        let patience = if unanswered {
            resource.request_timeout()
        } else {
            Duration::ZERO
        };
        let until = Instant::now() + patience;
        let mut delay = self.retry.look_delay;
        loop {
            let found = retrying(self.retry, || resource.find()).await?;
            let now = Instant::now();
            if !found.is_empty() || now >= until {
                return Ok(found);
            }
            tokio::time::sleep(delay.min(until - now)).await;
            delay = (delay * 2).min(self.retry.max_look_delay);
        }
    }
}

/// The answer of a request's task; a task that ended without one (it
/// panicked, or was aborted) is a request without an answer.
fn joined<T, E: CloudError>(r: Result<Result<T, E>, JoinError>) -> Result<T, E> {
    r.unwrap_or_else(|e| Err(E::task_lost(format!("the request's task ended: {e}"))))
}

/// The cloud's error, kept whole, with what was being done.
fn with_context<E: CloudError>(e: E, context: String) -> BuildError {
    let e: BuildError = e.into();
    e.context(context)
}

/// `f` tried up to `retry.attempts` times while its error is retryable.
async fn retrying<T, E, F, Fut>(retry: Retry, mut f: F) -> Result<T, E>
where
    E: CloudError,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = retry.delay;
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.is_retryable() && attempt < retry.attempts => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    //! A scripted cloud: create requests that are answered, refused,
    //! answered with a 500 after or without making the thing, or never
    //! answered while the cloud makes the thing later; lists and deletes
    //! that fail as scripted.
    use super::*;
    use kiln_core::ui::{Mode, Output, OutputConfig};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    enum FakeError {
        #[error("no answer")]
        NoAnswer,
        #[error("status {0}")]
        Status(u16),
        #[error("lost: {0}")]
        Lost(String),
    }

    impl From<FakeError> for BuildError {
        fn from(e: FakeError) -> Self {
            BuildError::new(e)
        }
    }

    impl CloudError for FakeError {
        fn outcome_unknown(&self) -> bool {
            matches!(self, FakeError::Status(500..=599) | FakeError::NoAnswer)
        }
        fn unanswered(&self) -> bool {
            matches!(self, FakeError::NoAnswer | FakeError::Lost(_))
        }
        fn is_not_found(&self) -> bool {
            *self == FakeError::Status(404)
        }
        fn is_retryable(&self) -> bool {
            matches!(self, FakeError::Status(500..=599) | FakeError::NoAnswer)
        }
        fn task_lost(reason: String) -> Self {
            FakeError::Lost(reason)
        }
    }

    /// How the scripted cloud handles a create request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Makes the thing, answers with it.
        Made,
        /// Refuses (409): nothing made.
        Refused,
        /// Makes the thing, answers 500.
        MadeThen500,
        /// Makes nothing, answers 500.
        Nothing500,
        /// Answers nothing for `answer_after` (then the client gives up:
        /// no answer); the cloud makes the thing later, when it is listed
        /// for the [`Cloud::made_at_list`]th time (if ever).
        Silent { answer_after: Duration },
        /// Panics (the task ends without an answer), the thing made first.
        Panics,
    }

    #[derive(Default)]
    struct Cloud {
        held: Mutex<Vec<String>>,
        /// A silent request's thing appears at this list call (1: the
        /// first), so "later" does not depend on timing.
        made_at_list: Mutex<Option<(usize, String)>>,
        calls: Mutex<Vec<String>>,
        list_errors: Mutex<VecDeque<FakeError>>,
        delete_errors: Mutex<VecDeque<FakeError>>,
        /// Released by the test: `Held` answers wait for it.
        release: tokio::sync::Notify,
    }

    impl Cloud {
        fn call(&self, c: String) {
            self.calls.lock().unwrap().push(c);
        }
        fn calls(&self, prefix: &str) -> usize {
            let calls = self.calls.lock().unwrap();
            calls.iter().filter(|c| c.starts_with(prefix)).count()
        }
        fn held(&self) -> Vec<String> {
            self.held.lock().unwrap().clone()
        }
        fn make(&self, name: &str) {
            self.held.lock().unwrap().push(name.to_string());
        }
        async fn create(self: Arc<Self>, name: String, how: Answer) -> Result<String, FakeError> {
            self.call(format!("create {name}"));
            match how {
                Answer::Made => {
                    self.make(&name);
                    Ok(name)
                }
                Answer::Refused => Err(FakeError::Status(409)),
                Answer::MadeThen500 => {
                    self.make(&name);
                    Err(FakeError::Status(500))
                }
                Answer::Nothing500 => Err(FakeError::Status(500)),
                Answer::Silent { answer_after } => {
                    tokio::time::sleep(answer_after).await;
                    Err(FakeError::NoAnswer)
                }
                Answer::Panics => {
                    self.make(&name);
                    panic!("injected: the request's task dies")
                }
            }
        }
        /// Makes the thing, then answers once the test says so.
        async fn create_held(self: Arc<Self>, name: String) -> Result<String, FakeError> {
            self.call(format!("create {name}"));
            self.make(&name);
            self.release.notified().await;
            Ok(name)
        }
        /// Answers nothing until the test says so (then the client gives
        /// up: no answer); the thing appears as [`Answer::Silent`]'s does.
        async fn create_unanswered(self: Arc<Self>, name: String) -> Result<String, FakeError> {
            self.call(format!("create {name}"));
            self.release.notified().await;
            Err(FakeError::NoAnswer)
        }
    }

    struct Things {
        cloud: Arc<Cloud>,
        name: String,
        request_timeout: Duration,
        findable: bool,
    }

    #[async_trait]
    impl Resource for Things {
        type Item = String;
        type Error = FakeError;
        fn request_timeout(&self) -> Duration {
            self.request_timeout
        }
        async fn find(&self) -> Result<Vec<String>, FakeError> {
            self.cloud.call("list".into());
            let lists = self.cloud.calls("list");
            let mut later = self.cloud.made_at_list.lock().unwrap();
            if later.as_ref().is_some_and(|(n, _)| *n == lists) {
                let (_, name) = later.take().unwrap();
                self.cloud.make(&name);
            }
            drop(later);
            if let Some(e) = self.cloud.list_errors.lock().unwrap().pop_front() {
                return Err(e);
            }
            Ok(self
                .cloud
                .held()
                .into_iter()
                .filter(|n| *n == self.name)
                .collect())
        }
        async fn delete(&self, item: &String) -> Result<(), FakeError> {
            self.cloud.call(format!("delete {item}"));
            if let Some(e) = self.cloud.delete_errors.lock().unwrap().pop_front() {
                return Err(e);
            }
            let mut held = self.cloud.held.lock().unwrap();
            let before = held.len();
            held.retain(|n| n != item);
            if held.len() == before {
                return Err(FakeError::Status(404));
            }
            Ok(())
        }
        fn find_failed(&self) -> String {
            format!("looking for thing {}", self.name)
        }
        fn delete_failed(&self, item: &String) -> String {
            format!("deleting thing {item}")
        }
        fn cannot_find(&self) -> Option<String> {
            (!self.findable).then(|| format!("thing {} may be left", self.name))
        }
        async fn deleting(&self, ctx: &BuildCtx, item: &String) {
            ctx.ui.say(&format!("Deleting thing {item}"));
        }
    }

    const FAST: Retry = Retry {
        attempts: 5,
        delay: Duration::from_millis(1),
        look_delay: Duration::from_millis(5),
        max_look_delay: Duration::from_millis(20),
    };

    struct Fixture {
        cloud: Arc<Cloud>,
        out: Output,
        ctx: BuildCtx,
        create: Create<String, FakeError>,
    }

    fn fixture() -> Fixture {
        let out = Output::capturing(OutputConfig {
            mode: Mode::Human,
            color: false,
            timestamp: false,
        });
        let ctx = BuildCtx::for_test(out.build_ui("test"), std::env::temp_dir());
        Fixture {
            cloud: Arc::default(),
            out,
            ctx,
            create: Create::new("thing")
                .labelled(|n| format!("thing {n} (made)"))
                .with_retry(FAST),
        }
    }

    impl Fixture {
        fn things(&self, request_timeout: Duration) -> Things {
            Things {
                cloud: self.cloud.clone(),
                name: "t1".into(),
                request_timeout,
                findable: true,
            }
        }
        async fn send(&mut self, how: Answer) -> Result<String, FakeError> {
            let req = self.cloud.clone().create("t1".into(), how);
            self.create
                .send(&self.ctx, "thing t1 being made", req)
                .await
        }
    }

    #[tokio::test]
    async fn an_answered_create_is_recorded_relabelled_deleted_and_released() {
        let mut f = fixture();
        assert_eq!(f.send(Answer::Made).await, Ok("t1".into()));
        assert_eq!(f.ctx.ledger.live(), ["thing t1 (made)"]);
        assert_eq!(f.create.made().map(String::as_str), Some("t1"));
        assert!(!f.create.unsettled());
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(f.cloud.held().is_empty());
        assert_eq!(f.cloud.calls("list"), 0, "its id is known: no search");
        assert!(f.ctx.ledger.live().is_empty());
        assert!(f.out.captured().contains("Deleting thing t1"));
    }

    #[tokio::test]
    async fn a_refused_create_made_nothing_and_is_released_at_once() {
        let mut f = fixture();
        assert_eq!(f.send(Answer::Refused).await, Err(FakeError::Status(409)));
        assert!(f.ctx.ledger.live().is_empty());
        assert_eq!(f.ctx.ledger.released(), ["thing t1 being made"]);
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list"), 0);
        assert_eq!(f.cloud.calls("delete"), 0);
    }

    #[tokio::test]
    async fn an_error_answer_is_looked_for_once() {
        for (how, left) in [(Answer::MadeThen500, 1), (Answer::Nothing500, 0)] {
            let mut f = fixture();
            assert_eq!(f.send(how).await, Err(FakeError::Status(500)));
            assert_eq!(f.cloud.held().len(), left);
            assert_eq!(f.ctx.ledger.live(), ["thing t1 being made"]);
            assert!(f.create.unsettled());
            // A long request timeout: an error answer does not wait for
            // it (the cloud is done with the request): one look.
            f.create
                .undo(&f.ctx, &f.things(Duration::from_secs(3600)))
                .await
                .unwrap();
            assert_eq!(f.cloud.calls("list"), 1);
            assert_eq!(f.cloud.calls("delete"), left);
            assert!(f.cloud.held().is_empty());
            assert!(f.ctx.ledger.live().is_empty());
        }
    }

    #[tokio::test]
    async fn no_answer_is_looked_for_until_what_it_made_appears() {
        let mut f = fixture();
        // The client gives up at once; the cloud makes it later (by the
        // third look).
        *f.cloud.made_at_list.lock().unwrap() = Some((3, "t1".into()));
        let how = Answer::Silent {
            answer_after: Duration::ZERO,
        };
        assert_eq!(f.send(how).await, Err(FakeError::NoAnswer));
        assert!(f.cloud.held().is_empty());
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list"), 3);
        assert_eq!(f.cloud.calls("delete"), 1);
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn no_answer_and_nothing_made_is_looked_for_as_long_as_a_request_may_take() {
        let mut f = fixture();
        let how = Answer::Silent {
            answer_after: Duration::ZERO,
        };
        assert_eq!(f.send(how).await, Err(FakeError::NoAnswer));
        let start = Instant::now();
        f.create
            .undo(&f.ctx, &f.things(Duration::from_millis(300)))
            .await
            .unwrap();
        // Looked for as long as a request may take, not less.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(f.cloud.calls("list") > 2);
        assert_eq!(f.cloud.calls("delete"), 0);
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_step_leaves_its_request_to_the_cleanup() {
        let mut f = fixture();
        let req = f.cloud.clone().create_held("t1".into());
        // The step's future is dropped (Ctrl-C) while the answer is held.
        let send = f.create.send(&f.ctx, "thing t1 being made", req);
        let dropped = tokio::time::timeout(Duration::from_millis(100), send).await;
        assert!(dropped.is_err());
        assert_eq!(f.cloud.held(), ["t1"], "the cloud made it");
        assert_eq!(f.ctx.ledger.live(), ["thing t1 being made"]);
        assert!(f.create.unsettled());
        let answer = answer_when_waited_for(f.cloud.clone(), f.out.clone());
        let things = f.things(Duration::from_secs(60));
        let (r, ()) = tokio::join!(f.create.undo(&f.ctx, &things), answer);
        r.unwrap();
        assert!(f
            .out
            .captured()
            .contains("Waiting for the answer to the thing create request before cleaning up..."));
        assert_eq!(f.cloud.calls("list"), 0, "the answer named it");
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
        assert_eq!(
            f.ctx.ledger.released(),
            ["thing t1 being made", "thing t1 (made)"]
        );
    }

    /// Once the cleanup says it waits for the answer, let it come.
    async fn answer_when_waited_for(cloud: Arc<Cloud>, out: Output) {
        while !out.captured().contains("Waiting for the answer") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cloud.release.notify_one();
    }

    #[tokio::test]
    async fn an_answer_that_never_comes_while_the_step_is_dropped() {
        let mut f = fixture();
        // No answer until the cleanup waits for it (then the client gives
        // up); the cloud makes the thing after the cleanup's first look.
        *f.cloud.made_at_list.lock().unwrap() = Some((2, "t1".into()));
        let req = f.cloud.clone().create_unanswered("t1".into());
        let send = f.create.send(&f.ctx, "thing t1 being made", req);
        assert!(tokio::time::timeout(Duration::from_millis(20), send)
            .await
            .is_err());
        let things = f.things(Duration::from_secs(30));
        let answer = answer_when_waited_for(f.cloud.clone(), f.out.clone());
        let (r, ()) = tokio::join!(f.create.undo(&f.ctx, &things), answer);
        r.unwrap();
        assert_eq!(f.cloud.calls("list"), 2);
        assert_eq!(f.cloud.calls("delete"), 1);
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn a_task_that_dies_counts_as_no_answer() {
        let mut f = fixture();
        let r = f.send(Answer::Panics).await;
        assert!(matches!(r, Err(FakeError::Lost(_))), "{r:?}");
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("delete"), 1);
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn deletes_and_lists_are_retried_and_not_found_is_done() {
        let mut f = fixture();
        f.send(Answer::MadeThen500).await.unwrap_err();
        f.cloud
            .list_errors
            .lock()
            .unwrap()
            .extend([FakeError::NoAnswer, FakeError::Status(503)]);
        f.cloud
            .delete_errors
            .lock()
            .unwrap()
            .extend([FakeError::Status(503), FakeError::NoAnswer]);
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list"), 3);
        assert_eq!(f.cloud.calls("delete"), 3);
        assert!(f.cloud.held().is_empty());

        // Gone already: a 404 on delete counts as done.
        let mut f = fixture();
        f.send(Answer::Made).await.unwrap();
        f.cloud.held.lock().unwrap().clear();
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("delete"), 1);
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn a_failed_delete_keeps_the_record_and_the_typed_error() {
        let mut f = fixture();
        f.send(Answer::Made).await.unwrap();
        // A refusal is not retried; five server errors exhaust the tries.
        for (errors, calls) in [
            (vec![FakeError::Status(403)], 1),
            (vec![FakeError::Status(500); 5], 5),
        ] {
            f.cloud.calls.lock().unwrap().clear();
            *f.cloud.delete_errors.lock().unwrap() = errors.into();
            let e = f
                .create
                .undo(&f.ctx, &f.things(Duration::from_secs(60)))
                .await
                .unwrap_err();
            assert_eq!(f.cloud.calls("delete"), calls);
            assert!(e.find::<FakeError>().is_some(), "{e:?}");
            assert!(
                e.to_string().starts_with("deleting thing t1: status"),
                "{e}"
            );
            assert_eq!(f.ctx.ledger.live(), ["thing t1 (made)"]);
        }
        // A later undo finishes the job.
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn a_failed_search_keeps_the_record() {
        let mut f = fixture();
        f.send(Answer::MadeThen500).await.unwrap_err();
        *f.cloud.list_errors.lock().unwrap() = vec![FakeError::Status(403)].into();
        let e = f
            .create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "looking for thing t1: status 403");
        assert_eq!(f.ctx.ledger.live(), ["thing t1 being made"]);
    }

    #[tokio::test]
    async fn what_cannot_be_looked_for_is_reported() {
        let mut f = fixture();
        f.send(Answer::MadeThen500).await.unwrap_err();
        let mut things = f.things(Duration::from_secs(60));
        things.findable = false;
        f.create.undo(&f.ctx, &things).await.unwrap();
        assert!(f.out.captured().contains("thing t1 may be left"));
        assert_eq!(f.cloud.calls("list"), 0);
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn a_recorded_request_is_answered_as_a_sent_one() {
        // Made: relabelled, deleted by its name without a search.
        let mut f = fixture();
        f.create.record(&f.ctx, "thing t1 being made here");
        assert_eq!(f.ctx.ledger.live(), ["thing t1 being made here"]);
        assert!(f.create.unsettled());
        f.cloud.make("t1");
        f.create.answer(&f.ctx, &Ok("t1".into()));
        assert_eq!(f.ctx.ledger.live(), ["thing t1 (made)"]);
        assert_eq!(f.create.made().map(String::as_str), Some("t1"));
        assert!(!f.create.unsettled());
        // No other request waits for its answer: nothing changes.
        f.create.answer(&f.ctx, &Err(FakeError::Status(409)));
        assert_eq!(f.ctx.ledger.live(), ["thing t1 (made)"]);
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list"), 0);
        assert_eq!(f.cloud.calls("delete"), 1);
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());

        // Refused: the record goes at once, nothing to undo.
        let mut f = fixture();
        f.create.record(&f.ctx, "thing t1 being made here");
        f.create.answer(&f.ctx, &Err(FakeError::Status(409)));
        assert!(f.ctx.ledger.live().is_empty());
        assert!(!f.create.unsettled());
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list") + f.cloud.calls("delete"), 0);

        // An error answer: looked for once.
        let mut f = fixture();
        f.create.record(&f.ctx, "thing t1 being made here");
        f.cloud.make("t1");
        f.create.answer(&f.ctx, &Err(FakeError::Status(500)));
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list"), 1);
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
    }

    #[tokio::test]
    async fn a_recorded_request_never_answered_is_looked_for_as_no_answer() {
        let mut f = fixture();
        // The caller's request was cut off (its step dropped, or an error
        // it cannot tell apart): the thing appears by the second look.
        f.create.record(&f.ctx, "thing t1 being made here");
        *f.cloud.made_at_list.lock().unwrap() = Some((2, "t1".into()));
        f.create.settle(&f.ctx).await;
        assert!(!f.out.captured().contains("Waiting for the answer"));
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(f.cloud.calls("list"), 2);
        assert_eq!(f.cloud.calls("delete"), 1);
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
        assert_eq!(f.ctx.ledger.released(), ["thing t1 being made here"]);
    }

    #[tokio::test]
    async fn keep_hands_over_without_deleting() {
        let mut f = fixture();
        f.send(Answer::Made).await.unwrap();
        assert_eq!(f.create.keep(&f.ctx).as_deref(), Some("t1"));
        assert!(f.ctx.ledger.live().is_empty());
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(f.cloud.held(), ["t1"]);
        assert_eq!(f.cloud.calls("delete"), 0);
    }

    #[tokio::test]
    async fn a_step_run_twice_undoes_both_requests() {
        let mut f = fixture();
        for name in ["t0", "t1"] {
            let req = f.cloud.clone().create(name.into(), Answer::Made);
            f.create.send(&f.ctx, "a thing", req).await.unwrap();
        }
        assert_eq!(f.create.made().map(String::as_str), Some("t1"));
        assert_eq!(f.ctx.ledger.live(), ["thing t0 (made)", "thing t1 (made)"]);
        f.create
            .undo(&f.ctx, &f.things(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(f.cloud.held().is_empty());
        assert!(f.ctx.ledger.live().is_empty());
        let out = f.out.captured();
        let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in {out}"));
        assert!(
            at("Deleting thing t1") < at("Deleting thing t0"),
            "newest first: {out}"
        );
    }
}
