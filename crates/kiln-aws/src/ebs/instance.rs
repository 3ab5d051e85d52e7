//! The source instance: launched with a client token (so that a launch
//! whose answer never came is found, and sent again makes nothing new),
//! waited for, its address handed to the common connect step, stopped
//! before it is imaged, terminated by the cleanup (which waits until it is
//! gone: the security group and key pair go after it).
use super::{Config, State};
use crate::client::Aws;
use crate::ec2::{Instance, RunInstances, TagSpec};
use crate::error::AwsError;
use kiln_commonsteps::create::{Create, Resource};
use kiln_commonsteps::{Liveness, MachineStopped};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct RunInstance<'a> {
    c: &'a Config,
    token: String,
    create: Create<String, AwsError>,
}

impl<'a> RunInstance<'a> {
    pub fn new(c: &'a Config) -> Self {
        RunInstance {
            c,
            token: String::new(),
            create: Create::new("instance").labelled(|id: &String| format!("instance {id} (aws)")),
        }
    }
}

#[async_trait]
impl Step<State> for RunInstance<'_> {
    fn name(&self) -> &'static str {
        "run source instance"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let user_data = match (&c.user_data, &c.user_data_file) {
            (Some(u), _) => Some(u.clone().into_bytes()),
            (None, Some(f)) => Some(
                tokio::fs::read(f)
                    .await
                    .map_err(|e| BuildError::from(e).context("Problem reading user data file"))?,
            ),
            (None, None) => None,
        };
        // Packer's rule: user data that is base64 already is sent as it is
        // (the request encodes what it is given: decode it first).
        let user_data = user_data.map(|u| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&u)
                .unwrap_or(u)
        });
        ctx.ui.say("Launching a source AWS instance...");
        let image = s
            .source_image
            .clone()
            .ok_or_else(|| BuildError::msg("no source image"))?;
        if image
            .root_device_type
            .as_deref()
            .is_some_and(|t| t != "ebs")
        {
            return Err(BuildError::msg(format!(
                "The provided source AMI has an invalid root device type.\nExpected 'ebs', got '{}'.",
                image.root_device_type.unwrap_or_default()
            )));
        }
        ctx.ui.say("Adding tags to source instance");
        let mut run_tags = c.run_tags.clone();
        run_tags
            .entry("Name".into())
            .or_insert_with(|| "Packer Builder".into());
        for (k, v) in &run_tags {
            ctx.ui.message(&format!("Adding tag: \"{k}\": \"{v}\""));
        }
        for (k, v) in &c.run_volume_tags {
            ctx.ui.message(&format!("Adding tag: \"{k}\": \"{v}\""));
        }
        let mut tag_specs = vec![TagSpec {
            resource_type: "instance".into(),
            tags: run_tags,
        }];
        if !c.run_volume_tags.is_empty() {
            tag_specs.push(TagSpec {
                resource_type: "volume".into(),
                tags: c.run_volume_tags.clone(),
            });
        }
        // Packer sends the network interface form only with a subnet.
        let associate = c
            .associate_public_ip
            .filter(|p| *p && s.subnet_id.is_some());
        self.token = uuid::Uuid::new_v4().to_string();
        let req = RunInstances {
            image_id: image.id.clone(),
            instance_type: c.instance_type.clone(),
            client_token: self.token.clone(),
            key_name: s.key_name.clone(),
            security_group_ids: s.security_group_ids.clone(),
            subnet_id: s.subnet_id.clone(),
            private_ip: None,
            associate_public_ip: associate,
            availability_zone: s.availability_zone.clone(),
            user_data,
            iam_instance_profile: c.iam_instance_profile.clone(),
            block_device_mappings: c.launch_mappings.clone(),
            ebs_optimized: Some(c.ebs_optimized),
            shutdown_behavior: Some(c.shutdown_behavior.clone()),
            tag_specs,
            extra: Vec::new(),
        };
        let aws = s.aws.clone();
        let id = self
            .create
            .send(
                ctx,
                format!(
                    "instance being launched, client token {} (aws {})",
                    self.token, s.aws.region
                ),
                async move { aws.ec2().run_instance(&req).await.map(|i| i.id) },
            )
            .await
            .map_err(|e| BuildError::from(e).context("Error launching source instance"))?;
        ctx.ui.message(&format!("Instance ID: {id}"));
        ctx.set_generated("ID", id.clone());
        ctx.ui
            .say(&format!("Waiting for instance ({id}) to become ready..."));
        let inst = s
            .aws
            .wait_instance(&id, "running", &ctx.cancel)
            .await
            .map_err(|e| {
                BuildError::from(e)
                    .context(format!("Error waiting for instance ({id}) to become ready"))
            })?;
        if let Some(d) = inst.public_dns.as_deref().filter(|d| !d.is_empty()) {
            ctx.ui.message(&format!("Public DNS: {d}"));
        }
        if let Some(ip) = inst.public_ip.as_deref().filter(|d| !d.is_empty()) {
            ctx.ui.message(&format!("Public IP: {ip}"));
        }
        if let Some(ip) = inst.private_ip.as_deref().filter(|d| !d.is_empty()) {
            ctx.ui.message(&format!("Private IP: {ip}"));
        }
        s.instance = Some(inst);
        s.machine.started = Some(Instant::now());
        // While kiln waits for SSH and provisions, an instance that EC2
        // stops or terminates ends the build at once.
        s.machine.liveness = Some(Arc::new(InstanceLiveness {
            aws: s.aws.clone(),
            id,
            every: Duration::from_secs(5),
        }));
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        let instances = Instances {
            aws: &s.aws,
            token: &self.token,
        };
        self.create.undo(ctx, &instances).await?;
        s.machine.liveness = None;
        Ok(())
    }
}

/// Tells the common steps when the instance can no longer run: EC2 says it
/// is terminated or shutting down (a stop may be a provisioner's own).
pub struct InstanceLiveness {
    pub aws: Aws,
    pub id: String,
    pub every: Duration,
}

#[async_trait]
impl Liveness for InstanceLiveness {
    async fn stopped(&self, what: &str) -> MachineStopped {
        loop {
            tokio::time::sleep(self.every).await;
            let why = match self.aws.ec2().instance(&self.id).await {
                Ok(Some(i)) if matches!(i.state.as_str(), "terminated" | "shutting-down") => {
                    format!(
                        "instance is {}{}",
                        i.state,
                        i.state_reason.map(|r| format!(": {r}")).unwrap_or_default()
                    )
                }
                _ => continue,
            };
            return MachineStopped {
                report: format!("instance {} stopped while {what}: {why}", self.id),
            };
        }
    }
}

/// Instances, found by the launch's client token; terminated and waited
/// for until terminated.
struct Instances<'a> {
    aws: &'a Aws,
    token: &'a str,
}

#[async_trait]
impl Resource for Instances<'_> {
    type Item = String;
    type Error = AwsError;
    fn request_timeout(&self) -> Duration {
        self.aws.transport.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, AwsError> {
        Ok(self
            .aws
            .ec2()
            .find_instances_by_client_token(self.token)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect())
    }
    async fn delete(&self, id: &String) -> Result<(), AwsError> {
        self.aws
            .ec2()
            .terminate_instances(std::slice::from_ref(id))
            .await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for the instance that may have been launched (client token {})",
            self.token
        )
    }
    fn delete_failed(&self, _: &String) -> String {
        "Error terminating instance, may still be around".into()
    }
    async fn deleting(&self, ctx: &BuildCtx, _: &String) {
        ctx.ui.say("Terminating the source AWS instance...");
    }
    async fn deleted(&self, _: &BuildCtx, id: &String) -> Result<(), BuildError> {
        // Not cancellable: the build is already being cleaned up.
        let never = tokio_util::sync::CancellationToken::new();
        self.aws
            .wait_instance(id, "terminated", &never)
            .await
            .map(|_| ())
            .map_err(|e| {
                BuildError::from(e).context("Error terminating instance, may still be around")
            })
    }
}

/// Packer's `SSHHost`: `ssh_host`, else the address `ssh_interface` names,
/// else (in a VPC) the public IP or the private one, else the public DNS
/// name.
pub fn ssh_host(c: &Config, i: &Instance) -> Option<String> {
    if let Some(h) = &c.comm.host {
        return Some(h.clone());
    }
    let some = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    match c.ssh_interface.as_deref() {
        Some("public_ip") => some(&i.public_ip),
        Some("private_ip") => some(&i.private_ip),
        Some("public_dns") => some(&i.public_dns),
        Some("private_dns") => some(&i.private_dns),
        _ if i.vpc_id.as_deref().is_some_and(|v| !v.is_empty()) => {
            some(&i.public_ip).or_else(|| some(&i.private_ip))
        }
        _ => some(&i.public_dns),
    }
}

/// The instance's address for the common connect step (described again a
/// few times while EC2 has none yet).
pub(super) struct CommHost<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for CommHost<'_> {
    fn name(&self) -> &'static str {
        "instance address"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.c.comm.is_none() {
            return Ok(());
        }
        for attempt in 0..3 {
            if let Some(h) = s.instance.as_ref().and_then(|i| ssh_host(self.c, i)) {
                s.machine.host = Some(h);
                s.machine.port = Some(self.c.comm.port);
                return Ok(());
            }
            if attempt > 0 {
                ctx.sleep(Duration::from_secs(2)).await?;
            }
            let id = s.instance_id();
            match s.aws.ec2().instance(&id).await {
                Ok(Some(i)) => s.instance = Some(i),
                Ok(None) => return Err(BuildError::msg(format!("instance not found: {id}"))),
                Err(e) => return Err(e.into()),
            }
        }
        Err(BuildError::msg("couldn't determine address for instance"))
    }
}

pub(super) struct StopInstance<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for StopInstance<'_> {
    fn name(&self) -> &'static str {
        "stop instance"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        s.machine.comm = None;
        // A provisioner may stop the instance: the build goes on.
        s.machine.liveness = None;
        let id = s.instance_id();
        if !self.c.disable_stop_instance {
            ctx.ui.say("Stopping the source instance...");
            ctx.ui.message("Stopping instance");
            s.aws
                .ec2()
                .stop_instances(std::slice::from_ref(&id), false)
                .await
                .map_err(|e| BuildError::from(e).context("Error stopping instance"))?;
        } else {
            ctx.ui
                .say("Automatic instance stop disabled. Please stop instance manually.");
        }
        ctx.ui.say("Waiting for the instance to stop...");
        s.aws
            .wait_instance(&id, "stopped", &ctx.cancel)
            .await
            .map_err(|e| BuildError::from(e).context("Error waiting for instance to stop"))?;
        if let Some(on) = self.c.ena_support {
            if on {
                ctx.ui.say("Enabling Enhanced Networking (ENA)...");
            } else {
                ctx.ui.say("Disabling Enhanced Networking (ENA)...");
            }
            s.aws.ec2().set_ena_support(&id, on).await.map_err(|e| {
                BuildError::from(e).context("Error enabling Enhanced Networking (ENA) on instance")
            })?;
        }
        Ok(())
    }
}
