//! The AMI: `force_deregister` of an existing one, CreateImage of the
//! stopped instance, copies to `ami_regions` (and the encrypted copy of
//! `encrypt_boot`), launch permissions, tags. Every AMI made is recorded
//! before its request is sent; a build that fails after it deregisters it
//! and deletes its snapshots, in every region.
use super::{Config, State};
use crate::client::Aws;
use crate::ec2::{CopyImage, Filter, ImageAttribute};
use crate::error::AwsError;
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use std::collections::BTreeMap;
use std::time::Duration;

/// The regions the AMI ends up in: the build's, then `ami_regions`.
fn regions(c: &Config, build: &str) -> Vec<String> {
    let mut v = vec![build.to_string()];
    v.extend(c.ami_regions.iter().filter(|r| *r != build).cloned());
    v
}

pub(super) struct Deregister<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for Deregister<'_> {
    fn name(&self) -> &'static str {
        "deregister AMI"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if !c.force_deregister {
            return Ok(());
        }
        for r in regions(c, &s.aws.region) {
            let aws = s.aws.in_region(&r);
            let ec2 = aws.ec2();
            let found = ec2
                .describe_images(
                    &[],
                    &["self".into()],
                    &[Filter::new("name", &[&c.ami_name])],
                )
                .await
                .map_err(|e| BuildError::from(e).context("Error describing AMI"))?;
            for i in found {
                ec2.deregister_image(&i.id)
                    .await
                    .map_err(|e| BuildError::from(e).context("Error deregistering existing AMI"))?;
                ctx.ui
                    .say(&format!("Deregistered AMI {}, id: {}", c.ami_name, i.id));
                if c.force_delete_snapshot {
                    for snap in i.snapshot_ids() {
                        ec2.delete_snapshot(&snap).await.map_err(|e| {
                            BuildError::from(e).context("Error deleting existing snapshot")
                        })?;
                        ctx.ui.say(&format!("Deleted snapshot: {snap}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A random name for the intermediary image of `encrypt_boot` (Packer's
/// seven letters and digits).
fn intermediary_name() -> String {
    use rand::Rng;
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::thread_rng();
    (0..7).map(|_| A[r.gen_range(0..A.len())] as char).collect()
}

pub(super) struct CreateAmi<'a> {
    c: &'a Config,
    name: String,
    create: Create<String, AwsError>,
}

impl<'a> CreateAmi<'a> {
    pub fn new(c: &'a Config) -> Self {
        CreateAmi {
            c,
            name: String::new(),
            create: Create::new("AMI").labelled(|id: &String| format!("AMI {id} (aws)")),
        }
    }
}

#[async_trait]
impl Step<State> for CreateAmi<'_> {
    fn name(&self) -> &'static str {
        "create AMI"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        self.name = if c.encrypts() {
            intermediary_name()
        } else {
            c.ami_name.clone()
        };
        let instance = s.instance_id();
        ctx.ui.say(&format!(
            "Creating AMI {} from instance {instance}",
            self.name
        ));
        let (aws, name, mappings) = (s.aws.clone(), self.name.clone(), c.ami_mappings.clone());
        let id = self
            .create
            .send(
                ctx,
                format!(
                    "AMI {:?} of instance {instance} being created (aws {})",
                    self.name, s.aws.region
                ),
                async move {
                    aws.ec2()
                        .create_image(&instance, &name, None, &mappings, &[])
                        .await
                },
            )
            .await
            .map_err(|e| BuildError::from(e).context("Error creating AMI"))?;
        ctx.ui.message(&format!("AMI: {id}"));
        s.amis.insert(s.aws.region.clone(), id.clone());
        ctx.ui.say("Waiting for AMI to become ready...");
        let img = s
            .aws
            .wait_image_available(&id, &ctx.cancel)
            .await
            .map_err(|e| BuildError::from(e).context("Error waiting for AMI"))?;
        if let Some(snap) = img.snapshot_ids().first() {
            ctx.set_generated("SnapshotID", snap.clone());
        }
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        if outcome.succeeded() && !self.c.encrypts() {
            // The artifact's now.
            self.create.keep(ctx);
            return Ok(());
        }
        if self.name.is_empty() {
            return Ok(());
        }
        let images = Images {
            aws: &s.aws,
            name: &self.name,
            why: if outcome.succeeded() {
                "Deregistering the unencrypted intermediary AMI and deleting its snapshots..."
            } else {
                "Deregistering the AMI and deleting associated snapshots because of cancellation, or error..."
            },
        };
        self.create.undo(ctx, &images).await
    }
}

pub(super) struct RegionCopy<'a> {
    c: &'a Config,
    /// One create per destination region.
    copies: Vec<(String, Create<String, AwsError>)>,
}

impl<'a> RegionCopy<'a> {
    pub fn new(c: &'a Config) -> Self {
        RegionCopy {
            c,
            copies: Vec::new(),
        }
    }
}

#[async_trait]
impl Step<State> for RegionCopy<'_> {
    fn name(&self) -> &'static str {
        "copy AMI"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let build = s.aws.region.clone();
        let mut dests: Vec<String> = c
            .ami_regions
            .iter()
            .filter(|r| **r != build)
            .cloned()
            .collect();
        if c.encrypts() {
            // The encrypted copy replaces the intermediary in the build's
            // region.
            dests.insert(0, build.clone());
        }
        if dests.is_empty() {
            return Ok(());
        }
        let source = s.amis.get(&build).cloned().unwrap_or_default();
        ctx.ui.say(&format!(
            "Copying/Encrypting AMI ({source}) to other regions..."
        ));
        self.copies = dests
            .iter()
            .map(|r| {
                (
                    r.clone(),
                    Create::new("AMI copy").labelled(|id: &String| format!("AMI {id} (aws)")),
                )
            })
            .collect();
        let futures = self.copies.iter_mut().map(|(region, create)| {
            ctx.ui.message(&format!("Copying to: {region}"));
            let aws = s.aws.in_region(region);
            let req = CopyImage {
                source_image_id: source.clone(),
                source_region: build.clone(),
                name: c.ami_name.clone(),
                description: None,
                encrypted: c.encrypt_boot,
                kms_key_id: c.kms_key_id.clone(),
                client_token: uuid::Uuid::new_v4().to_string(),
            };
            let label = format!(
                "copy of {source} named {:?} being made (aws {region})",
                c.ami_name
            );
            let (region, source) = (region.clone(), source.clone());
            async move {
                let a = aws.clone();
                let id = create
                    .send(ctx, label, async move { a.ec2().copy_image(&req).await })
                    .await
                    .map_err(|e| {
                        BuildError::from(e)
                            .context(format!("Error Copying AMI ({source}) to region ({region})"))
                    })?;
                aws.wait_image_available(&id, &ctx.cancel)
                    .await
                    .map_err(|e| {
                        BuildError::from(e)
                            .context(format!("Error waiting for AMI ({id}) in region ({region})"))
                    })?;
                Ok::<_, BuildError>((region, id))
            }
        });
        let futures: Vec<_> = futures.collect();
        ctx.ui.message("Waiting for all copies to complete...");
        let mut first_err = None;
        for r in futures_util::future::join_all(futures).await {
            match r {
                Ok((region, id)) => {
                    s.amis.insert(region, id);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        let mut first_err = None;
        for (region, create) in self.copies.iter_mut() {
            if outcome.succeeded() {
                create.keep(ctx);
                continue;
            }
            let aws = s.aws.in_region(region);
            let images = Images {
                aws: &aws,
                name: &self.c.ami_name,
                why: "Deregistering the AMI copy and deleting its snapshots because of cancellation, or error...",
            };
            if let Err(e) = create.undo(ctx, &images).await {
                first_err.get_or_insert(e);
            }
            s.amis.remove(region.as_str());
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// This account's AMIs of one name in one region; deleting one
/// deregisters it and deletes its snapshots.
struct Images<'a> {
    aws: &'a Aws,
    name: &'a str,
    why: &'static str,
}

#[async_trait]
impl Resource for Images<'_> {
    type Item = String;
    type Error = AwsError;
    fn request_timeout(&self) -> Duration {
        self.aws.transport.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, AwsError> {
        Ok(self
            .aws
            .ec2()
            .find_own_images_by_name(self.name)
            .await?
            .into_iter()
            .filter(|i| i.name == self.name)
            .map(|i| i.id)
            .collect())
    }
    async fn delete(&self, id: &String) -> Result<(), AwsError> {
        self.aws.ec2().destroy_image(id).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for the AMI {:?} in {}, which may have been created",
            self.name, self.aws.region
        )
    }
    fn delete_failed(&self, id: &String) -> String {
        format!(
            "Error deregistering AMI {id} in {}, please deregister it and delete its snapshots manually",
            self.aws.region
        )
    }
    async fn deleting(&self, ctx: &BuildCtx, _: &String) {
        ctx.ui.say(self.why);
    }
    async fn deleted(&self, ctx: &BuildCtx, id: &String) -> Result<(), BuildError> {
        ctx.ui.say(&format!("Deregistered AMI id: {id}"));
        Ok(())
    }
}

pub(super) struct ModifyAttributes<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for ModifyAttributes<'_> {
    fn name(&self) -> &'static str {
        "AMI attributes"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let mut changes: Vec<(&str, ImageAttribute)> = Vec::new();
        if let Some(d) = &c.ami_description {
            changes.push(("description", ImageAttribute::Description(d.clone())));
        }
        if !c.ami_groups.is_empty() {
            changes.push(("groups", ImageAttribute::AddGroups(c.ami_groups.clone())));
        }
        if !c.ami_users.is_empty() {
            changes.push(("users", ImageAttribute::AddUsers(c.ami_users.clone())));
        }
        if !c.ami_product_codes.is_empty() {
            changes.push((
                "product codes",
                ImageAttribute::AddProductCodes(c.ami_product_codes.clone()),
            ));
        }
        let mut snap_changes: Vec<(&str, &[String], &[String])> = Vec::new();
        if !c.snapshot_groups.is_empty() {
            snap_changes.push(("groups", &[], &c.snapshot_groups));
        }
        if !c.snapshot_users.is_empty() {
            snap_changes.push(("users", &c.snapshot_users, &[]));
        }
        if changes.is_empty() && snap_changes.is_empty() {
            return Ok(());
        }
        for (region, ami) in s.amis.clone() {
            let aws = s.aws.in_region(&region);
            ctx.ui
                .say(&format!("Modifying attributes on AMI ({ami})..."));
            for (name, a) in &changes {
                ctx.ui.message(&format!("Modifying: {name}"));
                aws.ec2()
                    .modify_image_attribute(&ami, a)
                    .await
                    .map_err(|e| BuildError::from(e).context("Error modify AMI attributes"))?;
            }
        }
        for (region, ami) in s.amis.clone() {
            let aws = s.aws.in_region(&region);
            let ec2 = aws.ec2();
            let snaps = ec2
                .image(&ami)
                .await
                .map_err(|e| BuildError::from(e).context("Error describing AMI"))?
                .map(|i| i.snapshot_ids())
                .unwrap_or_default();
            for snap in snaps {
                ctx.ui
                    .say(&format!("Modifying attributes on snapshot ({snap})..."));
                for (name, users, groups) in &snap_changes {
                    ctx.ui.message(&format!("Modifying: {name}"));
                    ec2.add_create_volume_permission(&snap, users, groups)
                        .await
                        .map_err(|e| {
                            BuildError::from(e).context("Error modify snapshot attributes")
                        })?;
                }
            }
        }
        Ok(())
    }
}

pub(super) struct CreateTags<'a> {
    pub c: &'a Config,
}

fn report(ctx: &BuildCtx, tags: &BTreeMap<String, String>) {
    for (k, v) in tags {
        ctx.ui.message(&format!("Adding tag: \"{k}\": \"{v}\""));
    }
}

#[async_trait]
impl Step<State> for CreateTags<'_> {
    fn name(&self) -> &'static str {
        "AMI tags"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if c.tags.is_empty() && c.snapshot_tags.is_empty() {
            return Ok(());
        }
        for (region, ami) in s.amis.clone() {
            let aws = s.aws.in_region(&region);
            let ec2 = aws.ec2();
            ctx.ui.say(&format!("Adding tags to AMI ({ami})..."));
            let img = ec2
                .image(&ami)
                .await
                .map_err(|e| {
                    BuildError::from(e).context(format!("Error retrieving details for AMI ({ami})"))
                })?
                .ok_or_else(|| {
                    BuildError::msg(format!(
                        "Error retrieving details for AMI ({ami}), no images found"
                    ))
                })?;
            let snaps = img.snapshot_ids();
            for snap in &snaps {
                ctx.ui.say(&format!("Tagging snapshot: {snap}"));
            }
            let tag_err =
                |e: AwsError| BuildError::from(e).context("Error adding tags to Resources");
            ctx.ui.say("Creating AMI tags");
            report(ctx, &c.tags);
            let mut resources = vec![ami.clone()];
            resources.extend(snaps.iter().cloned());
            ec2.create_tags(&resources, &c.tags)
                .await
                .map_err(tag_err)?;
            ctx.ui.say("Creating snapshot tags");
            report(ctx, &c.snapshot_tags);
            ec2.create_tags(&snaps, &c.snapshot_tags)
                .await
                .map_err(tag_err)?;
        }
        Ok(())
    }
}
