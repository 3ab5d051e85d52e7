//! The builder's steps, in Packer 1.6.6's order, each with its cleanup.
//! Every resource is recorded in the step and in the build's ledger before
//! it is asked for, and its create request runs to its end even when the
//! step is dropped ([`InFlight`]), so a failure, a timeout or a Ctrl-C at
//! any point cleans it up.
use super::config::{Config, SourceImage};
use super::{Connector, TempKey};
use crate::client::api::{FloatingIp, Server, ServerCreate};
use crate::client::{Cloud, OsError};
use kiln_core::communicator::Communicator;
use kiln_core::context::LedgerId;
use kiln_core::{async_trait, BuildCtx, BuildError, Hook, Outcome, Step};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the steps share.
pub struct State {
    pub cloud: Cloud,
    pub connector: Arc<dyn Connector>,
    pub flavor_id: String,
    pub flavor_disk: Option<u64>,
    pub temp_key: Option<TempKey>,
    /// The Nova key pair the server gets.
    pub key_name: Option<String>,
    pub source_image: String,
    pub networks: Vec<String>,
    pub volume_id: Option<String>,
    pub server: Option<Server>,
    pub floating_ip: Option<FloatingIp>,
    pub host: Option<String>,
    pub comm: Option<Arc<dyn Communicator>>,
    pub image_id: Option<String>,
}

impl State {
    pub fn new(cloud: Cloud, connector: Arc<dyn Connector>) -> Self {
        State {
            cloud,
            connector,
            flavor_id: String::new(),
            flavor_disk: None,
            temp_key: None,
            key_name: None,
            source_image: String::new(),
            networks: Vec::new(),
            volume_id: None,
            server: None,
            floating_ip: None,
            host: None,
            comm: None,
            image_id: None,
        }
    }
}

/// The steps for `config`.
pub fn steps<'a>(config: &'a Config, hook: &'a dyn Hook) -> Vec<Box<dyn Step<State> + 'a>> {
    let mut v: Vec<Box<dyn Step<State> + 'a>> = vec![
        Box::new(LoadFlavor { c: config }),
        Box::new(KeyPair {
            c: config,
            ledger: None,
            name: None,
            create: InFlight::default(),
            unanswered: false,
        }),
        Box::new(SourceImageInfo { c: config }),
        Box::new(DiscoverNetwork { c: config }),
    ];
    if config.use_blockstorage_volume {
        v.push(Box::new(CreateVolume {
            c: config,
            ledger: None,
            create: InFlight::default(),
            unknown: None,
            unanswered: false,
        }));
    }
    v.push(Box::new(RunServer {
        c: config,
        ledger: None,
        create: InFlight::default(),
        unknown: None,
        unanswered: false,
    }));
    v.push(Box::new(AllocateIp {
        c: config,
        ledger: None,
        temporary: false,
        create: InFlight::default(),
        unknown: None,
        unanswered: false,
    }));
    v.push(Box::new(Connect { c: config }));
    v.push(Box::new(Provision { hook }));
    v.push(Box::new(StopServer));
    if config.use_blockstorage_volume {
        v.push(Box::new(DetachVolume));
    }
    v.push(Box::new(CreateImage {
        c: config,
        ledger: None,
        create: InFlight::default(),
        unknown: None,
        unanswered: false,
    }));
    v.push(Box::new(ImageProperties { c: config }));
    v
}

/// The outcome of one look at something we wait for.
pub enum Poll<T> {
    Ready(T),
    Pending,
    Failed(String),
}

/// Poll `probe` until ready, starting at 100 ms and backing off to 2 s, so
/// kiln notices a state change about as soon as the cloud makes it. Up to
/// three errors in a row are tolerated (a flaky API), more end the wait.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, BuildError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, OsError>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut errors = 0;
    loop {
        match probe().await {
            Ok(Poll::Ready(t)) => return Ok(t),
            Ok(Poll::Failed(m)) => return Err(BuildError::msg(format!("{what}: {m}"))),
            Ok(Poll::Pending) => errors = 0,
            Err(OsError::Cancelled) => return Err(BuildError::Cancelled),
            Err(e) => {
                errors += 1;
                if errors > 3 {
                    return Err(BuildError::msg(format!("{what}: {e}")));
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(BuildError::msg(format!(
                "{what}: still not done after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(2));
    }
}

const LONG: Duration = Duration::from_secs(3600);

struct LoadFlavor<'a> {
    c: &'a Config,
}

#[async_trait]
impl Step<State> for LoadFlavor<'_> {
    fn name(&self) -> &'static str {
        "load flavor"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        ctx.ui.say(&format!("Loading flavor: {}", self.c.flavor));
        let f = s
            .cloud
            .find_flavor(&self.c.flavor)
            .await
            .map_err(|e| BuildError::from(e).context("Error loading flavor"))?;
        ctx.ui.message(&format!("Verified flavor. ID: {}", f.id));
        s.flavor_id = f.id;
        Ok(())
    }
}

struct KeyPair<'a> {
    c: &'a Config,
    ledger: Option<LedgerId>,
    name: Option<String>,
    create: InFlight<()>,
    unanswered: bool,
}

#[async_trait]
impl Step<State> for KeyPair<'_> {
    fn name(&self) -> &'static str {
        "key pair"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let comm = &self.c.comm;
        if let Some(k) = &comm.keypair_name {
            if comm.has_private_key_file {
                ctx.ui.say("Using existing SSH private key");
            } else {
                ctx.ui
                    .say(&format!("Using SSH Agent for existing key pair {k}"));
            }
            s.key_name = Some(k.clone());
            return Ok(());
        }
        if !comm.wants_temporary_keypair() {
            ctx.ui.say("Not using temporary keypair");
            return Ok(());
        }
        let name = comm
            .temporary_key_pair_name
            .clone()
            .unwrap_or_else(|| format!("packer_{}", uuid::Uuid::new_v4()));
        ctx.ui
            .say(&format!("Creating temporary keypair: {name} ..."));
        let key = s.connector.generate_key()?;
        // Recorded before the request: a timeout or a Ctrl-C may still
        // leave it created.
        self.name = Some(name.clone());
        self.ledger = Some(
            ctx.ledger
                .track(format!("temporary key pair {name} (openstack)")),
        );
        let (cloud, n, public) = (
            s.cloud.clone(),
            name.clone(),
            key.public_authorized.trim().to_string(),
        );
        let r = self
            .create
            .run(async move { cloud.create_keypair(&n, &public).await })
            .await;
        if let Err(e) = r {
            self.unanswered = e.unanswered();
            if !e.outcome_unknown() {
                // Refused (e.g. 409: a key pair of that name exists, and
                // it is not kiln's to delete): nothing was created.
                self.name = None;
                if let Some(l) = self.ledger.take() {
                    ctx.ledger.release(l);
                }
            }
            return Err(BuildError::from(e).context("Error creating temporary keypair"));
        }
        ctx.ui.say(&format!("Created temporary keypair: {name}"));
        s.temp_key = Some(key);
        s.key_name = Some(name);
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        if let Some(Err(e)) = self.create.settle(ctx, "key pair").await {
            self.unanswered = e.unanswered();
            if !e.outcome_unknown() {
                self.name = None;
                if let Some(l) = self.ledger.take() {
                    ctx.ledger.release(l);
                }
            }
        }
        let Some(name) = self.name.take() else {
            return Ok(());
        };
        if self.unanswered {
            // Nova may still be creating it: deleting it first would let
            // it appear afterwards.
            let _ = find_created(&s.cloud, true, || async {
                Ok(s.cloud
                    .keypair_names()
                    .await?
                    .into_iter()
                    .filter(|k| *k == name)
                    .collect::<Vec<_>>())
            })
            .await;
        }
        ctx.ui
            .say(&format!("Deleting temporary keypair: {name} ..."));
        match retry_cleanup(|| s.cloud.delete_keypair(&name)).await {
            Ok(()) => {
                if let Some(l) = self.ledger.take() {
                    ctx.ledger.release(l);
                }
                Ok(())
            }
            Err(e) => Err(BuildError::msg(format!(
                "Error cleaning up keypair. Please delete the key manually: {name}: {e}"
            ))),
        }
    }
}

/// A create request that runs to its end even when the step running it is
/// dropped (a Ctrl-C drops the running step's future): the step's cleanup
/// awaits its answer, so what it created is known instead of leaked. The
/// request itself is bounded by the session's request timeout.
pub struct InFlight<T>(Option<tokio::task::JoinHandle<Result<T, OsError>>>);

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight(None)
    }
}

impl<T: Send + 'static> InFlight<T> {
    /// Send the request and wait for its answer.
    pub async fn run<F>(&mut self, request: F) -> Result<T, OsError>
    where
        F: Future<Output = Result<T, OsError>> + Send + 'static,
    {
        let handle = self.0.insert(tokio::spawn(request));
        let r = handle.await;
        self.0 = None;
        joined(r)
    }

    /// In a cleanup: the answer to a request whose step was dropped before
    /// it came (`None`: no request was left waiting).
    pub async fn settle(&mut self, ctx: &BuildCtx, what: &str) -> Option<Result<T, OsError>> {
        let handle = self.0.take()?;
        ctx.ui.message(&format!(
            "Waiting for the answer to the {what} create request before cleaning up..."
        ));
        Some(joined(handle.await))
    }

    /// Is a request waiting for its answer?
    pub fn pending(&self) -> bool {
        self.0.is_some()
    }
}

fn joined<T>(r: Result<Result<T, OsError>, tokio::task::JoinError>) -> Result<T, OsError> {
    r.unwrap_or_else(|e| {
        // The outcome is unknown: treat it as a request without an answer.
        Err(OsError::Transport {
            method: "request".into(),
            url: String::new(),
            message: format!("the request's task ended: {e}"),
        })
    })
}

/// The metadata key kiln puts on the servers and volumes it creates, with a
/// value unique to the request: a create that got no answer can be found
/// by it (names need not be unique).
pub const MARKER_KEY: &str = "kiln_marker";

/// Look for what a create request without a clear answer made: `find`
/// once after an error answer (the cloud is done with the request); after
/// no answer at all (`unanswered`), again and again for as long as one
/// request may take, since the cloud may still be carrying it out.
async fn find_created<T, F, Fut>(
    cloud: &Cloud,
    unanswered: bool,
    mut find: F,
) -> Result<Vec<T>, OsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<T>, OsError>>,
{
    let until = Instant::now()
        + if unanswered {
            cloud.session.request_timeout
        } else {
            Duration::ZERO
        };
    let mut delay = Duration::from_millis(250);
    loop {
        let found = retry_list(&mut find).await?;
        let now = Instant::now();
        if !found.is_empty() || now >= until {
            return Ok(found);
        }
        tokio::time::sleep(delay.min(until - now)).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Retry a listing made by a cleanup a few times (a cleanup that gives up
/// may leak).
async fn retry_list<T, F, Fut>(mut f: F) -> Result<T, OsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OsError>>,
{
    let mut delay = Duration::from_millis(250);
    for attempt in 1.. {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e) if attempt >= 5 || matches!(e.status(), Some(400..=404)) => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!()
}

/// A cleanup call, tried a few times (a cleanup that gives up leaks), and
/// "not found" counts as done.
async fn retry_cleanup<F, Fut>(mut f: F) -> Result<(), OsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), OsError>>,
{
    let mut delay = Duration::from_millis(250);
    for attempt in 1.. {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if attempt >= 5 || matches!(e.status(), Some(400..=403)) => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!()
}

struct SourceImageInfo<'a> {
    c: &'a Config,
}

#[async_trait]
impl Step<State> for SourceImageInfo<'_> {
    fn name(&self) -> &'static str {
        "source image"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let (query, most_recent, what) = match &self.c.source {
            Some(SourceImage::Id(id)) => {
                s.source_image = id.clone();
                return Ok(());
            }
            Some(SourceImage::Name(n)) => (
                vec![("name".to_string(), n.clone())],
                false,
                format!("name {n:?}"),
            ),
            Some(SourceImage::Filter(f)) => (f.query(), f.most_recent, format!("{f:?}")),
            None => return Err(BuildError::msg("no source image")),
        };
        let mut images = s
            .cloud
            .list_images(&query)
            .await
            .map_err(|e| BuildError::from(e).context("Error querying image"))?;
        if most_recent {
            images.sort_by(|a, b| b.created_at.cmp(&a.created_at));
            images.truncate(1);
        }
        match images.len() {
            0 => Err(BuildError::msg(format!(
                "No image was found matching filters: {what}"
            ))),
            1 => {
                ctx.ui
                    .message(&format!("Found Image ID: {}", images[0].id));
                s.source_image = images[0].id.clone();
                Ok(())
            }
            n => Err(BuildError::msg(format!(
                "Your query returned {n} images, not one: use a more specific filter or set most_recent ({what})"
            ))),
        }
    }
}

struct DiscoverNetwork<'a> {
    c: &'a Config,
}

#[async_trait]
impl Step<State> for DiscoverNetwork<'_> {
    fn name(&self) -> &'static str {
        "discover network"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        s.networks = self.c.networks.clone();
        if !s.networks.is_empty() || !self.c.ports.is_empty() {
            return Ok(());
        }
        if self.c.network_discovery_cidrs.is_empty() {
            return Ok(());
        }
        ctx.ui.say("Discovering provisioning network...");
        let v = s
            .cloud
            .session
            .json(
                crate::client::Service::Network,
                reqwest::Method::GET,
                "/subnets?fields=network_id&fields=cidr",
                None,
            )
            .await?;
        for sub in v
            .get("subnets")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            let cidr = sub.get("cidr").and_then(|c| c.as_str()).unwrap_or("");
            if self
                .c
                .network_discovery_cidrs
                .iter()
                .any(|want| cidr_within(cidr, want))
            {
                let n = sub
                    .get("network_id")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string();
                ctx.ui.message(&format!("Found network ID: {n}"));
                s.networks.push(n);
                return Ok(());
            }
        }
        Err(BuildError::msg(format!(
            "failed to find any network in {:?}",
            self.c.network_discovery_cidrs
        )))
    }
}

/// Is IPv4 subnet `inner` within `outer` (both `a.b.c.d/n`)?
pub fn cidr_within(inner: &str, outer: &str) -> bool {
    fn parse(c: &str) -> Option<(u32, u32)> {
        let (a, n) = c.split_once('/')?;
        let ip: std::net::Ipv4Addr = a.parse().ok()?;
        let n: u32 = n.parse().ok()?;
        (n <= 32).then_some((u32::from(ip), n))
    }
    match (parse(inner), parse(outer)) {
        (Some((i, ni)), Some((o, no))) => {
            let mask = if no == 0 { 0 } else { u32::MAX << (32 - no) };
            ni >= no && (i & mask) == (o & mask)
        }
        _ => inner == outer,
    }
}

struct CreateVolume<'a> {
    c: &'a Config,
    ledger: Option<LedgerId>,
    create: InFlight<String>,
    /// The volume's name and marker while a create may have made it.
    unknown: Option<(String, String)>,
    unanswered: bool,
}

#[async_trait]
impl Step<State> for CreateVolume<'_> {
    fn name(&self) -> &'static str {
        "create volume"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let size = match self.c.volume_size {
            Some(sz) => sz,
            None => {
                let img = s.cloud.get_image(&s.source_image).await?;
                let from_image = img
                    .min_disk
                    .filter(|m| *m > 0)
                    .or_else(|| img.size.map(|b| b.div_ceil(1 << 30)));
                from_image.or(s.flavor_disk).unwrap_or(1).max(1)
            }
        };
        let name = self
            .c
            .volume_name
            .clone()
            .unwrap_or_else(|| format!("packer_{}", uuid::Uuid::new_v4()));
        ctx.ui.say("Creating volume...");
        let az = self
            .c
            .volume_availability_zone
            .clone()
            .or(self.c.availability_zone.clone());
        let marker = uuid::Uuid::new_v4().to_string();
        // Recorded before the request: a timeout or a Ctrl-C may still
        // leave it created; cleanup then finds it by name and marker.
        self.unknown = Some((name.clone(), marker.clone()));
        self.ledger = Some(
            ctx.ledger
                .track(format!("volume {name} being created (openstack)")),
        );
        let (cloud, n, img, vt) = (
            s.cloud.clone(),
            name.clone(),
            s.source_image.clone(),
            self.c.volume_type.clone(),
        );
        let md: std::collections::BTreeMap<String, String> =
            [(MARKER_KEY.to_string(), marker)].into();
        let r = self
            .create
            .run(async move {
                cloud
                    .create_volume(&n, size, &img, vt.as_deref(), az.as_deref(), &md)
                    .await
            })
            .await;
        let id = match r {
            Ok(id) => id,
            Err(e) => {
                self.unanswered = e.unanswered();
                if !e.outcome_unknown() {
                    self.unknown = None;
                    if let Some(l) = self.ledger.take() {
                        ctx.ledger.release(l);
                    }
                }
                return Err(BuildError::from(e).context("Error creating volume"));
            }
        };
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        self.ledger = Some(ctx.ledger.track(format!("volume {id} (openstack)")));
        s.volume_id = Some(id.clone());
        ctx.ui.message(&format!(
            "Waiting for volume {name} (volume id: {id}) to become available..."
        ));
        let cloud = s.cloud.clone();
        wait_for("Error waiting for volume", LONG, || {
            let (cloud, id) = (cloud.clone(), id.clone());
            async move {
                Ok(match cloud.volume_status(&id).await?.as_str() {
                    "available" => Poll::Ready(()),
                    "error" => Poll::Failed("volume is in error".into()),
                    _ => Poll::Pending,
                })
            }
        })
        .await?;
        ctx.ui.message(&format!("Volume ID: {id}"));
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        match self.create.settle(ctx, "volume").await {
            Some(Ok(id)) => {
                self.unknown = None;
                s.volume_id = Some(id);
            }
            Some(Err(e)) if !e.outcome_unknown() => self.unknown = None,
            Some(Err(e)) => self.unanswered = e.unanswered(),
            None => {}
        }
        let mut ids: Vec<String> = s.volume_id.take().into_iter().collect();
        if let Some((name, marker)) = self.unknown.clone() {
            let found = find_created(&s.cloud, self.unanswered, || async {
                Ok(s.cloud
                    .volumes_named(&name)
                    .await?
                    .into_iter()
                    .filter(|(_, md)| md.get(MARKER_KEY) == Some(&marker))
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(|e| {
                BuildError::msg(format!(
                    "Error looking for volume {name}, which may have been created: {e}"
                ))
            })?;
            ids.extend(found.into_iter().map(|(id, _)| id));
        }
        for id in ids {
            ctx.ui.say(&format!("Deleting volume: {id} ..."));
            // Deleting needs it detached: wait until it is not in use.
            let cloud = s.cloud.clone();
            let _ = wait_for("volume", Duration::from_secs(300), || {
                let (cloud, id) = (cloud.clone(), id.clone());
                async move {
                    Ok(match cloud.volume_status(&id).await {
                        Ok(st) if st == "in-use" || st.ends_with("ing") => Poll::Pending,
                        _ => Poll::Ready(()),
                    })
                }
            })
            .await;
            retry_cleanup(|| s.cloud.delete_volume(&id))
                .await
                .map_err(|e| {
                    BuildError::msg(format!(
                        "Error deleting volume {id}, please delete it manually: {e}"
                    ))
                })?;
        }
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        Ok(())
    }
}

struct RunServer<'a> {
    c: &'a Config,
    ledger: Option<LedgerId>,
    create: InFlight<String>,
    /// The marker of a server the create request may have made (no clear
    /// answer yet): cleanup looks for it.
    unknown: Option<String>,
    unanswered: bool,
}

impl RunServer<'_> {
    fn server_stub(&self, s: &State, id: &str) -> Server {
        Server {
            id: id.to_string(),
            status: "BUILD".into(),
            task_state: None,
            fault: None,
            access_ipv4: None,
            name: self.c.instance_name.clone(),
            key_name: s.key_name.clone(),
            metadata: Default::default(),
            addresses: Default::default(),
        }
    }
}

#[async_trait]
impl Step<State> for RunServer<'_> {
    fn name(&self) -> &'static str {
        "run source server"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let user_data = match (&self.c.user_data, &self.c.user_data_file) {
            (Some(u), _) => Some(u.clone().into_bytes()),
            (None, Some(f)) => Some(tokio::fs::read(f).await.map_err(|e| {
                BuildError::msg(format!("Error reading user data file {}: {e}", f.display()))
            })?),
            (None, None) => None,
        };
        let marker = uuid::Uuid::new_v4().to_string();
        let mut metadata = self.c.instance_metadata.clone();
        metadata.insert(MARKER_KEY.to_string(), marker.clone());
        let opts = ServerCreate {
            name: self.c.instance_name.clone(),
            image_ref: Some(s.source_image.clone()),
            flavor_ref: s.flavor_id.clone(),
            networks: s.networks.clone(),
            ports: self.c.ports.clone(),
            security_groups: self.c.security_groups.clone(),
            availability_zone: self.c.availability_zone.clone(),
            user_data,
            config_drive: self.c.config_drive,
            metadata,
            key_name: s.key_name.clone(),
            boot_volume: s.volume_id.clone(),
        };
        ctx.ui.say("Launching server...");
        // Recorded before the request: a timeout or a Ctrl-C may still
        // leave it created; cleanup then finds it by its marker.
        self.unknown = Some(marker.clone());
        self.ledger = Some(ctx.ledger.track(format!(
            "server {:?} being created, metadata {MARKER_KEY}={marker} (openstack)",
            self.c.instance_name
        )));
        let cloud = s.cloud.clone();
        let r = self
            .create
            .run(async move { cloud.create_server(&opts).await })
            .await;
        let id = match r {
            Ok(id) => id,
            Err(e) => {
                if !e.outcome_unknown() {
                    // Refused: nothing was created.
                    self.unknown = None;
                    if let Some(l) = self.ledger.take() {
                        ctx.ledger.release(l);
                    }
                }
                return Err(BuildError::from(e).context("Error launching source server"));
            }
        };
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        self.ledger = Some(ctx.ledger.track(format!("server {id} (openstack)")));
        s.server = Some(self.server_stub(s, &id));
        ctx.ui.message(&format!("Server ID: {id}"));
        ctx.set_generated("ID", id.clone());
        ctx.ui.say("Waiting for server to become ready...");
        let cloud = s.cloud.clone();
        let server = wait_for(
            &format!("Error waiting for server ({id}) to become ready"),
            LONG,
            || {
                let (cloud, id) = (cloud.clone(), id.clone());
                async move {
                    let sv = cloud.get_server(&id).await?;
                    Ok(match sv.status.as_str() {
                        "ACTIVE" => Poll::Ready(sv),
                        "ERROR" => Poll::Failed(format!(
                            "server is in ERROR{}",
                            sv.fault.map(|f| format!(": {f}")).unwrap_or_default()
                        )),
                        _ => Poll::Pending,
                    })
                }
            },
        )
        .await?;
        s.server = Some(server);
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        match self.create.settle(ctx, "server").await {
            Some(Ok(id)) => {
                self.unknown = None;
                s.server = Some(self.server_stub(s, &id));
            }
            Some(Err(e)) if !e.outcome_unknown() => self.unknown = None,
            Some(Err(e)) => self.unanswered = e.unanswered(),
            None => {}
        }
        let mut ids: Vec<String> = s.server.take().map(|x| x.id).into_iter().collect();
        if let Some(marker) = self.unknown.clone() {
            // No answer: look for it by its marker (the name need not be
            // unique, and there may be no temporary key pair).
            let found = find_created(&s.cloud, self.unanswered, || async {
                Ok(s.cloud
                    .list_servers()
                    .await?
                    .into_iter()
                    .filter(|sv| sv.metadata.get(MARKER_KEY) == Some(&marker))
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(|e| {
                BuildError::msg(format!(
                    "Error looking for the server that may have been created ({MARKER_KEY}={marker}): {e}"
                ))
            })?;
            ids.extend(found.into_iter().map(|sv| sv.id));
        }
        let force = self.c.force_delete;
        for id in ids {
            ctx.ui
                .say(&format!("Terminating the source server: {id} ..."));
            retry_cleanup(|| s.cloud.delete_server(&id, force))
                .await
                .map_err(|e| {
                    BuildError::msg(format!(
                        "Error terminating server, may still be around: {e}"
                    ))
                })?;
            wait_gone(&s.cloud, &id).await?;
        }
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        Ok(())
    }
}

async fn wait_gone(cloud: &Cloud, id: &str) -> Result<(), BuildError> {
    let (cloud, id) = (cloud.clone(), id.to_string());
    let since = Instant::now();
    wait_for(
        "Error waiting for the server to terminate",
        Duration::from_secs(600),
        || {
            let (cloud, id) = (cloud.clone(), id.clone());
            async move {
                match cloud.get_server(&id).await {
                    Err(e) if e.is_not_found() => Ok(Poll::Ready(())),
                    Err(e) => Err(e),
                    // DELETED: on its way out; wait (briefly) until it is gone.
                    Ok(sv) if sv.status == "DELETED" || sv.status == "SOFT_DELETED" => {
                        Ok(if since.elapsed() > Duration::from_secs(15) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        })
                    }
                    Ok(sv) if sv.status == "ERROR" && sv.task_state.is_none() => {
                        // A failed delete: ask again.
                        let _ = cloud.delete_server(&id, true).await;
                        Ok(Poll::Pending)
                    }
                    Ok(_) => Ok(Poll::Pending),
                }
            }
        },
    )
    .await
}

struct AllocateIp<'a> {
    c: &'a Config,
    ledger: Option<LedgerId>,
    /// The floating IP is kiln's (created for this build): deleted at the
    /// end. A provided or reused one is only given back.
    temporary: bool,
    create: InFlight<FloatingIp>,
    /// The port a floating IP was being created on while the create
    /// request had no clear answer.
    unknown: Option<String>,
    unanswered: bool,
}

#[async_trait]
impl Step<State> for AllocateIp<'_> {
    fn name(&self) -> &'static str {
        "allocate floating IP"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if c.floating_ip.is_none() && !c.reuse_ips && c.floating_ip_network.is_none() {
            ctx.ui.message("Floating IP not required");
            return Ok(());
        }
        let server_id = s.server.as_ref().map(|x| x.id.clone()).unwrap_or_default();
        let fip_net = match &c.instance_floating_ip_net {
            Some(n) => Some(s.cloud.network_id(n).await?),
            None => None,
        };
        let fip = if let Some(want) = &c.floating_ip {
            let f = s.cloud.get_floating_ip(want).await.map_err(|e| {
                BuildError::from(e).context(format!("Error using provided floating IP '{want}'"))
            })?;
            if f.port_id.is_some() {
                return Err(BuildError::msg(format!(
                    "Error using provided floating IP '{want}': it is already associated"
                )));
            }
            ctx.ui
                .message(&format!("Selected floating IP: '{}' ({})", f.id, f.address));
            f
        } else if c.reuse_ips {
            ctx.ui.say("Searching for unassociated floating IP");
            let all = s.cloud.list_floating_ips().await?;
            let f = all
                .into_iter()
                .find(|f| f.port_id.is_none())
                .ok_or_else(|| {
                    BuildError::msg("Error searching for floating IP: no free floating IP found")
                })?;
            ctx.ui
                .message(&format!("Selected floating IP: '{}' ({})", f.id, f.address));
            f
        } else {
            let net_ref = c.floating_ip_network.as_deref().unwrap_or_default();
            let net = s.cloud.network_id(net_ref).await.map_err(|e| {
                BuildError::from(e).context("Error using the provided floating_ip_network")
            })?;
            let port = instance_port(&s.cloud, &server_id, fip_net.as_deref()).await?;
            ctx.ui
                .say(&format!("Creating floating IP using network {net} ..."));
            // Recorded before the request: a timeout or a Ctrl-C may still
            // leave it created; cleanup then finds it by the port.
            self.temporary = true;
            self.unknown = Some(port.clone());
            self.ledger = Some(ctx.ledger.track(format!(
                "floating IP on port {port} being created (openstack)"
            )));
            // Created already bound to the server's port: one call instead
            // of Packer's create + associate.
            let (cloud, n, p) = (s.cloud.clone(), net.clone(), port.clone());
            let r = self
                .create
                .run(async move { cloud.create_floating_ip(&n, Some(&p)).await })
                .await;
            let f = match r {
                Ok(f) => f,
                Err(e) => {
                    self.unanswered = e.unanswered();
                    if !e.outcome_unknown() {
                        self.unknown = None;
                        if let Some(l) = self.ledger.take() {
                            ctx.ledger.release(l);
                        }
                    }
                    return Err(BuildError::from(e).context(format!(
                        "Error creating floating IP from floating network '{net}'"
                    )));
                }
            };
            self.unknown = None;
            if let Some(l) = self.ledger.take() {
                ctx.ledger.release(l);
            }
            self.ledger = Some(
                ctx.ledger
                    .track(format!("floating IP {} {} (openstack)", f.id, f.address)),
            );
            ctx.ui
                .message(&format!("Created floating IP: '{}' ({})", f.id, f.address));
            ctx.ui.say(&format!(
                "Associating floating IP '{}' ({}) with instance port...",
                f.id, f.address
            ));
            ctx.ui.message(&format!(
                "Added floating IP '{}' ({}) to instance!",
                f.id, f.address
            ));
            s.floating_ip = Some(f);
            return Ok(());
        };
        let port = instance_port(&s.cloud, &server_id, fip_net.as_deref()).await?;
        ctx.ui.say(&format!(
            "Associating floating IP '{}' ({}) with instance port...",
            fip.id, fip.address
        ));
        let f = s
            .cloud
            .update_floating_ip_port(&fip.id, Some(&port))
            .await
            .map_err(|e| {
                BuildError::from(e).context(format!(
                    "Error associating floating IP '{}' ({}) with instance port '{port}'",
                    fip.id, fip.address
                ))
            })?;
        ctx.ui.message(&format!(
            "Added floating IP '{}' ({}) to instance!",
            f.id, f.address
        ));
        s.floating_ip = Some(f);
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        if !self.temporary {
            // Not kiln's: the server's deletion gives it back to the
            // project (as Packer, it is not deleted).
            return Ok(());
        }
        match self.create.settle(ctx, "floating IP").await {
            Some(Ok(f)) => {
                self.unknown = None;
                s.floating_ip = Some(f);
            }
            Some(Err(e)) if !e.outcome_unknown() => self.unknown = None,
            Some(Err(e)) => self.unanswered = e.unanswered(),
            None => {}
        }
        let mut gone: Vec<FloatingIp> = s.floating_ip.take().into_iter().collect();
        if let Some(port) = self.unknown.clone() {
            let all = find_created(&s.cloud, self.unanswered, || async {
                Ok(s.cloud
                    .list_floating_ips()
                    .await?
                    .into_iter()
                    .filter(|f| f.port_id.as_deref() == Some(port.as_str()))
                    .collect::<Vec<_>>())
            })
            .await
                .map_err(|e| {
                    BuildError::msg(format!(
                        "Error looking for the floating IP that may have been created on port {port}: {e}"
                    ))
                })?;
            gone.extend(all);
        }
        for f in gone {
            retry_cleanup(|| s.cloud.delete_floating_ip(&f.id))
                .await
                .map_err(|e| {
                    BuildError::msg(format!(
                        "Error deleting temporary floating IP '{}' ({}): {e}",
                        f.id, f.address
                    ))
                })?;
            ctx.ui.say(&format!(
                "Deleted temporary floating IP '{}' ({})",
                f.id, f.address
            ));
        }
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        Ok(())
    }
}

async fn instance_port(
    cloud: &Cloud,
    server_id: &str,
    net: Option<&str>,
) -> Result<String, BuildError> {
    let ports = cloud.server_ports(server_id, net).await.map_err(|e| {
        BuildError::from(e).context(format!(
            "Error getting interfaces of the instance '{server_id}'"
        ))
    })?;
    ports.into_iter().next().ok_or_else(|| {
        BuildError::msg(format!(
            "The instance '{server_id}' has no port to attach a floating IP to"
        ))
    })
}

/// The address to connect to (Packer's CommHost): `ssh_host`; else an
/// address on `ssh_interface`; else the floating IP; else accessIPv4; else
/// any address of the server (of `ssh_ip_version`).
pub fn comm_host(c: &Config, s: &State) -> Option<String> {
    if let Some(h) = &c.comm.host {
        return Some(h.clone());
    }
    let server = s.server.as_ref()?;
    let from_pool = |desired: Option<&str>| -> Option<String> {
        for (pool, addrs) in &server.addresses {
            if desired.is_some_and(|d| d != pool) {
                continue;
            }
            for a in addrs {
                let v = c.ssh_ip_version.as_deref();
                if a.floating
                    || v.is_none()
                    || (v == Some("4") && a.version == 4)
                    || (v == Some("6") && a.version == 6)
                {
                    return Some(if a.version == 6 && !a.floating {
                        format!("[{}]", a.addr)
                    } else {
                        a.addr.clone()
                    });
                }
            }
        }
        None
    };
    if let Some(i) = &c.ssh_interface {
        if let Some(a) = from_pool(Some(i)) {
            return Some(a);
        }
    }
    if let Some(f) = &s.floating_ip {
        return Some(f.address.clone());
    }
    if let Some(a) = &server.access_ipv4 {
        return Some(a.clone());
    }
    from_pool(c.ssh_interface.as_deref())
}

struct Connect<'a> {
    c: &'a Config,
}

#[async_trait]
impl Step<State> for Connect<'_> {
    fn name(&self) -> &'static str {
        "connect"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.c.comm.none {
            return Ok(());
        }
        let mut host = comm_host(self.c, s);
        if host.is_none() {
            // Addresses appear a moment after ACTIVE on some clouds.
            let id = s.server.as_ref().map(|x| x.id.clone()).unwrap_or_default();
            let cloud = s.cloud.clone();
            let sv = wait_for(
                "couldn't determine IP address for server",
                Duration::from_secs(120),
                || {
                    let (cloud, id) = (cloud.clone(), id.clone());
                    async move {
                        let sv = cloud.get_server(&id).await?;
                        Ok(if sv.addresses.values().any(|a| !a.is_empty()) {
                            Poll::Ready(sv)
                        } else {
                            Poll::Pending
                        })
                    }
                },
            )
            .await?;
            s.server = Some(sv);
            host = comm_host(self.c, s);
        }
        let host =
            host.ok_or_else(|| BuildError::msg("couldn't determine IP address for server"))?;
        ctx.ui
            .say(&format!("Using ssh communicator to connect: {host}"));
        ctx.set_generated("Host", host.clone());
        ctx.set_generated("Port", self.c.comm.port.to_string());
        ctx.set_generated("User", self.c.comm.username.clone());
        if let Some(k) = &s.temp_key {
            ctx.set_generated("SSHPublicKey", k.public_authorized.trim().to_string());
            ctx.set_generated("SSHPrivateKey", k.private_openssh.clone());
        }
        s.host = Some(host.clone());
        let comm = s.connector.connect(ctx, &host, s.temp_key.as_ref()).await?;
        s.comm = Some(comm);
        Ok(())
    }
}

struct Provision<'a> {
    hook: &'a dyn Hook,
}

#[async_trait]
impl Step<State> for Provision<'_> {
    fn name(&self) -> &'static str {
        "provision"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        self.hook.provision(ctx, s.comm.clone()).await
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        self.hook.cleanup(ctx, s.comm.clone(), outcome).await
    }
}

struct StopServer;

#[async_trait]
impl Step<State> for StopServer {
    fn name(&self) -> &'static str {
        "stop server"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        // The SSH session is not needed any more.
        s.comm = None;
        let id = s.server.as_ref().map(|x| x.id.clone()).unwrap_or_default();
        ctx.ui.say(&format!("Stopping server: {id} ..."));
        match s.cloud.server_action(&id, json!({"os-stop": null})).await {
            Ok(_) => {}
            // 409: already stopped.
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(BuildError::from(e).context("Error stopping server")),
        }
        ctx.ui
            .message(&format!("Waiting for server to stop: {id} ..."));
        let cloud = s.cloud.clone();
        wait_for(
            &format!("Error waiting for server ({id}) to stop"),
            LONG,
            || {
                let (cloud, id) = (cloud.clone(), id.clone());
                async move {
                    let sv = cloud.get_server(&id).await?;
                    Ok(match sv.status.as_str() {
                        "SHUTOFF" | "STOPPED" => Poll::Ready(()),
                        "ERROR" => Poll::Failed(format!(
                            "server is in ERROR{}",
                            sv.fault.map(|f| format!(": {f}")).unwrap_or_default()
                        )),
                        _ => Poll::Pending,
                    })
                }
            },
        )
        .await
    }
}

struct DetachVolume;

#[async_trait]
impl Step<State> for DetachVolume {
    fn name(&self) -> &'static str {
        "detach volume"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let (Some(server), Some(vol)) = (s.server.as_ref(), s.volume_id.clone()) else {
            return Ok(());
        };
        ctx.ui
            .say(&format!("Detaching volume {vol} (server {})", server.id));
        match s.cloud.detach_volume(&server.id, &vol).await {
            Ok(()) => {}
            // A boot volume cannot be detached from a stopped server on
            // some clouds; Cinder uploads it attached (force).
            Err(e) if e.status() == Some(400) || e.status() == Some(403) => return Ok(()),
            Err(e) => return Err(BuildError::from(e).context("Error detaching volume")),
        }
        let cloud = s.cloud.clone();
        wait_for("Error waiting for volume to detach", LONG, || {
            let (cloud, vol) = (cloud.clone(), vol.clone());
            async move {
                Ok(match cloud.volume_status(&vol).await?.as_str() {
                    "available" => Poll::Ready(()),
                    "error" => Poll::Failed("volume is in error".into()),
                    _ => Poll::Pending,
                })
            }
        })
        .await
    }
}

struct CreateImage<'a> {
    c: &'a Config,
    ledger: Option<LedgerId>,
    create: InFlight<String>,
    /// createImage got no clear answer: the server the image would be
    /// made from (Nova's snapshots carry its id as `instance_uuid`).
    unknown: Option<String>,
    unanswered: bool,
}

#[async_trait]
impl Step<State> for CreateImage<'_> {
    fn name(&self) -> &'static str {
        "create image"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        ctx.ui.say(&format!("Creating the image: {}", c.image_name));
        let cloud = s.cloud.clone();
        let name = c.image_name.clone();
        let r = if let Some(vol) = s.volume_id.clone() {
            if !c.image_metadata.is_empty() {
                if let Err(e) = s
                    .cloud
                    .set_volume_image_metadata(&vol, &c.image_metadata)
                    .await
                {
                    ctx.ui.error(&format!("Error setting image metadata: {e}"));
                }
            }
            self.ledger = Some(ctx.ledger.track(format!(
                "image {name:?} of volume {vol} being created (openstack)"
            )));
            let fmt = c.image_disk_format.clone();
            let r = self
                .create
                .run(async move { cloud.volume_to_image(&vol, &name, fmt.as_deref()).await })
                .await;
            if let Err(e) = &r {
                if e.outcome_unknown() {
                    // Cinder's images carry nothing kiln can find them by.
                    ctx.ui.error(&format!(
                        "The upload of the volume to Glance got no clear answer: an image named {:?} may have been created; check Glance",
                        c.image_name
                    ));
                }
                if let Some(l) = self.ledger.take() {
                    ctx.ledger.release(l);
                }
            }
            r
        } else {
            let server = s.server.as_ref().map(|x| x.id.clone()).unwrap_or_default();
            // Recorded before the request: a timeout or a Ctrl-C may still
            // leave it created; cleanup then finds it by the server's id.
            self.unknown = Some(server.clone());
            self.ledger = Some(ctx.ledger.track(format!(
                "image {name:?} of server {server} being created (openstack)"
            )));
            let md = c.image_metadata.clone();
            let sv = server.clone();
            let r = self
                .create
                .run(async move { cloud.create_server_image(&sv, &name, &md).await })
                .await;
            if let Err(e) = &r {
                self.unanswered = e.unanswered();
                if !e.outcome_unknown() {
                    self.unknown = None;
                    if let Some(l) = self.ledger.take() {
                        ctx.ledger.release(l);
                    }
                }
            }
            r
        }
        .map_err(|e| BuildError::from(e).context("Error creating image"))?;
        let id = r;
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        self.ledger = Some(
            ctx.ledger
                .track(format!("image {id} (openstack, not finished)")),
        );
        s.image_id = Some(id.clone());
        ctx.ui.message(&format!("Image: {id}"));
        ctx.ui.say(&format!(
            "Waiting for image {} (image id: {id}) to become ready...",
            c.image_name
        ));
        let cloud = s.cloud.clone();
        wait_for("Error waiting for image", LONG, || {
            let (cloud, id) = (cloud.clone(), id.clone());
            async move {
                let img = match cloud.get_image(&id).await {
                    // Glance may not know it for a moment.
                    Err(e) if e.is_not_found() => return Ok(Poll::Pending),
                    r => r?,
                };
                Ok(match img.status.as_str() {
                    "active" => Poll::Ready(()),
                    "killed" | "deleted" | "pending_delete" => {
                        Poll::Failed(format!("image {id} is {}", img.status))
                    }
                    _ => Poll::Pending,
                })
            }
        })
        .await
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        match self.create.settle(ctx, "image").await {
            Some(Ok(id)) => {
                self.unknown = None;
                s.image_id = Some(id);
            }
            Some(Err(e)) if !e.outcome_unknown() => self.unknown = None,
            Some(Err(e)) => self.unanswered = e.unanswered(),
            None => {}
        }
        if outcome.succeeded() {
            // It is the artifact now: the artifact owns it.
            if let Some(l) = self.ledger.take() {
                ctx.ledger.release(l);
            }
            return Ok(());
        }
        let mut ids: Vec<String> = s.image_id.take().into_iter().collect();
        if let Some(server) = self.unknown.clone() {
            // Nova's snapshots carry the server's id.
            let q = [("instance_uuid".to_string(), server.clone())];
            let name = self.c.image_name.clone();
            let found = find_created(&s.cloud, self.unanswered, || async {
                Ok(s.cloud
                    .list_images(&q)
                    .await?
                    .into_iter()
                    .filter(|i| i.name == name)
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(|e| {
                BuildError::msg(format!(
                    "Error looking for the image of server {server} that may have been created: {e}"
                ))
            })?;
            let more: Vec<String> = found
                .into_iter()
                .filter(|i| !ids.contains(&i.id))
                .map(|i| i.id)
                .collect();
            ids.extend(more);
        }
        for id in ids {
            ctx.ui
                .say(&format!("Deleting the unfinished image: {id} ..."));
            retry_cleanup(|| s.cloud.delete_image(&id))
                .await
                .map_err(|e| {
                    BuildError::msg(format!(
                        "Error deleting image {id}, please delete it manually: {e}"
                    ))
                })?;
        }
        self.unknown = None;
        if let Some(l) = self.ledger.take() {
            ctx.ledger.release(l);
        }
        Ok(())
    }
}

/// Packer's four steps after the image is active (tags, visibility,
/// members, min disk), in one PATCH plus the member calls.
struct ImageProperties<'a> {
    c: &'a Config,
}

#[async_trait]
impl Step<State> for ImageProperties<'_> {
    fn name(&self) -> &'static str {
        "image properties"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let id = s.image_id.clone().unwrap_or_default();
        let mut ops = Vec::new();
        if !c.image_tags.is_empty() {
            ctx.ui.say(&format!(
                "Updating image tags to {}",
                c.image_tags.join(", ")
            ));
            ops.push(json!({"op": "replace", "path": "/tags", "value": c.image_tags}));
        }
        if let Some(v) = &c.image_visibility {
            ctx.ui.say(&format!("Updating image visibility to {v}"));
            ops.push(json!({"op": "replace", "path": "/visibility", "value": v}));
        }
        if let Some(m) = c.image_min_disk {
            ctx.ui.say(&format!("Updating image min disk to {m}"));
            ops.push(json!({"op": "replace", "path": "/min_disk", "value": m}));
        }
        if !ops.is_empty() {
            s.cloud
                .patch_image(&id, serde_json::Value::Array(ops))
                .await
                .map_err(|e| BuildError::from(e).context("Error updating image"))?;
        }
        for m in &c.image_members {
            ctx.ui.say(&format!("Adding member '{m}' to image {id}"));
            s.cloud.add_image_member(&id, m).await.map_err(|e| {
                BuildError::from(e).context(format!("Error adding member '{m}' to image"))
            })?;
            if c.image_auto_accept_members {
                ctx.ui
                    .say(&format!("Accepting image {id} for member '{m}'"));
                s.cloud.accept_image_member(&id, m).await.map_err(|e| {
                    BuildError::from(e).context(format!("Error accepting image for member '{m}'"))
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(cidr_within("10.0.0.0/24", "10.0.0.0/16"));
        assert!(cidr_within("10.0.0.0/24", "10.0.0.0/24"));
        assert!(!cidr_within("10.0.0.0/16", "10.0.0.0/24"));
        assert!(!cidr_within("10.1.0.0/24", "10.0.0.0/16"));
        assert!(cidr_within("192.168.1.0/24", "0.0.0.0/0"));
    }

    struct NoConn;
    #[async_trait]
    impl Connector for NoConn {
        fn generate_key(&self) -> Result<TempKey, BuildError> {
            unreachable!()
        }
        async fn connect(
            &self,
            _: &BuildCtx,
            _: &str,
            _: Option<&TempKey>,
        ) -> Result<Arc<dyn Communicator>, BuildError> {
            unreachable!()
        }
    }

    #[test]
    fn comm_host_follows_packer() {
        use crate::client::api::Address;
        let session = crate::client::Session::new(crate::client::AuthOptions {
            auth_url: "http://127.0.0.1:1/v3".into(),
            ..Default::default()
        })
        .unwrap();
        let mut s = State::new(Cloud::new(Arc::new(session)), Arc::new(NoConn));
        let mut c = Config::default();
        let a = |addr: &str, version: u8, floating: bool| Address {
            addr: addr.into(),
            version,
            floating,
        };
        s.server = Some(Server {
            id: "s".into(),
            status: "ACTIVE".into(),
            task_state: None,
            fault: None,
            access_ipv4: None,
            name: "n".into(),
            key_name: None,
            metadata: Default::default(),
            addresses: [
                ("net6".to_string(), vec![a("fd00::5", 6, false)]),
                ("private".to_string(), vec![a("10.0.0.5", 4, false)]),
            ]
            .into(),
        });
        // Any address: the first network's.
        assert_eq!(comm_host(&c, &s).as_deref(), Some("[fd00::5]"));
        c.ssh_ip_version = Some("4".into());
        assert_eq!(comm_host(&c, &s).as_deref(), Some("10.0.0.5"));
        c.ssh_ip_version = None;
        // A floating IP wins over fixed addresses...
        s.floating_ip = Some(FloatingIp {
            id: "f".into(),
            address: "127.0.0.12".into(),
            port_id: None,
            network_id: "n".into(),
        });
        assert_eq!(comm_host(&c, &s).as_deref(), Some("127.0.0.12"));
        // ...but not over ssh_interface...
        c.ssh_interface = Some("private".into());
        assert_eq!(comm_host(&c, &s).as_deref(), Some("10.0.0.5"));
        // ...and ssh_host wins over everything.
        c.comm.host = Some("bastion.example".into());
        assert_eq!(comm_host(&c, &s).as_deref(), Some("bastion.example"));
    }

    #[tokio::test]
    async fn wait_tolerates_three_errors_then_gives_up() {
        let mut n = 0;
        let r: Result<(), _> = wait_for("w", Duration::from_secs(30), || {
            n += 1;
            let k = n;
            async move {
                if k <= 3 {
                    Err(OsError::Protocol("flaky".into()))
                } else {
                    Ok(Poll::Ready(()))
                }
            }
        })
        .await;
        assert!(r.is_ok());
        let r: Result<(), _> = wait_for("w", Duration::from_secs(30), || async {
            Err::<Poll<()>, _>(OsError::Protocol("down".into()))
        })
        .await;
        assert_eq!(r.unwrap_err().to_string(), "w: down");
    }
}
