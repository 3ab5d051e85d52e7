//! Before anything is made: the AMI name is free (Packer's
//! `StepPreValidate`), the source AMI (`source_ami` or
//! `source_ami_filter`), the VPC, subnet and availability zone.
use super::{Config, State};
use crate::ec2::{Filter, Image};
use crate::error::AwsError;
use kiln_core::{async_trait, BuildCtx, BuildError, Step};

fn err(e: AwsError, context: &str) -> BuildError {
    BuildError::from(e).context(context.to_string())
}

pub(super) struct PreValidate<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for PreValidate<'_> {
    fn name(&self) -> &'static str {
        "prevalidate"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let ec2 = s.aws.ec2();
        if !c.skip_region_validation && !c.ami_regions.is_empty() {
            let known: Vec<String> = ec2
                .describe_regions()
                .await
                .map_err(|e| err(e, "error validating regions"))?
                .into_iter()
                .map(|r| r.name)
                .collect();
            for r in &c.ami_regions {
                if !known.contains(r) {
                    return Err(BuildError::msg(format!(
                        "error validating regions: Invalid region: {r}"
                    )));
                }
            }
        }
        if c.force_deregister {
            ctx.ui
                .say("Force Deregister flag found, skipping prevalidating AMI Name");
            return Ok(());
        }
        ctx.ui.say("Prevalidating any provided VPC information");
        if let (Some(vpc), None, true) =
            (&c.vpc_id, &c.subnet_id, c.subnet_filter.filters.is_empty())
        {
            let v = ec2
                .describe_vpcs(std::slice::from_ref(vpc), &[])
                .await
                .map_err(|e| {
                    err(
                        e,
                        &format!("Error retrieving VPC information for vpc_id {vpc}"),
                    )
                })?;
            if !v.first().is_some_and(|v| v.is_default) {
                return Err(BuildError::msg(format!(
                    "Error: subnet_id or subnet_filter must be provided for non-default VPCs ({vpc})"
                )));
            }
        }
        ctx.ui
            .say(&format!("Prevalidating AMI Name: {}", c.ami_name));
        let found = ec2
            .describe_images(&[], &[], &[Filter::new("name", &[&c.ami_name])])
            .await
            .map_err(|e| err(e, "Error querying AMI"))?;
        if let Some(i) = found.first() {
            return Err(BuildError::msg(format!(
                "Error: AMI Name: '{}' is used by an existing AMI: {}",
                i.name, i.id
            )));
        }
        Ok(())
    }
}

/// The most recent of `images` (by creation date, as Packer sorts).
pub fn most_recent(mut images: Vec<Image>) -> Option<Image> {
    images.sort_by(|a, b| a.creation_date.cmp(&b.creation_date));
    images.pop()
}

pub(super) struct SourceAmiInfo<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for SourceAmiInfo<'_> {
    fn name(&self) -> &'static str {
        "source AMI"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let ec2 = s.aws.ec2();
        let (ids, owners, filters) = match &c.source_ami {
            Some(id) => (vec![id.clone()], Vec::new(), Vec::new()),
            None => (
                Vec::new(),
                c.source_ami_filter.owners.clone(),
                c.source_ami_filter.ec2_filters(),
            ),
        };
        let images = ec2
            .describe_images(&ids, &owners, &filters)
            .await
            .map_err(|e| err(e, "Error querying AMI"))?;
        if images.is_empty() {
            return Err(BuildError::msg(format!(
                "No AMI was found matching filters: {}",
                describe_query(&ids, &owners, &filters)
            )));
        }
        if images.len() > 1 && !c.source_ami_filter.most_recent {
            return Err(BuildError::msg("Your query returned more than one result. Please try a more specific search, or set most_recent to true."));
        }
        let image = most_recent(images).expect("not empty");
        ctx.ui.message(&format!("Found Image ID: {}", image.id));
        ctx.set_generated("SourceAMI", image.id.clone());
        ctx.set_generated("SourceAMIName", image.name.clone());
        ctx.set_generated("SourceAMIOwner", image.owner_id.clone().unwrap_or_default());
        s.source_image = Some(image);
        Ok(())
    }
}

fn describe_query(ids: &[String], owners: &[String], filters: &[Filter]) -> String {
    let mut parts = Vec::new();
    if !ids.is_empty() {
        parts.push(format!("ImageIds: {ids:?}"));
    }
    if !owners.is_empty() {
        parts.push(format!("Owners: {owners:?}"));
    }
    for f in filters {
        parts.push(format!("{}={:?}", f.name, f.values));
    }
    parts.join(", ")
}

pub(super) struct NetworkInfo<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for NetworkInfo<'_> {
    fn name(&self) -> &'static str {
        "network"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let ec2 = s.aws.ec2();
        s.vpc_id = c.vpc_id.clone();
        s.subnet_id = c.subnet_id.clone();
        s.availability_zone = c.availability_zone.clone();
        if s.subnet_id.is_none() && !c.subnet_filter.filters.is_empty() {
            let mut f = super::config::filters(&c.subnet_filter.filters);
            if let Some(v) = &s.vpc_id {
                f.push(Filter::new("vpc-id", &[v]));
            }
            if let Some(az) = &s.availability_zone {
                f.push(Filter::new("availability-zone", &[az]));
            }
            let mut subnets = ec2
                .describe_subnets(&[], &f)
                .await
                .map_err(|e| err(e, "Error querying Subnets"))?;
            if subnets.is_empty() {
                return Err(BuildError::msg(format!(
                    "No Subnets was found matching filters: {}",
                    describe_query(&[], &[], &f)
                )));
            }
            if subnets.len() > 1 && !c.subnet_filter.random && !c.subnet_filter.most_free {
                return Err(BuildError::msg(format!("Your filter matched {} Subnets. Please try a more specific search, or set random or most_free to true.", subnets.len())));
            }
            let pick = if c.subnet_filter.most_free {
                subnets.sort_by_key(|s| s.available_ips);
                subnets.pop()
            } else {
                use rand::seq::SliceRandom;
                subnets.choose(&mut rand::thread_rng()).cloned()
            }
            .expect("not empty");
            ctx.ui.message(&format!("Found Subnet ID: {}", pick.id));
            s.subnet_id = Some(pick.id);
        }
        if let Some(sub) = s.subnet_id.clone() {
            if s.vpc_id.is_none() || s.availability_zone.is_none() {
                let found = ec2
                    .describe_subnets(std::slice::from_ref(&sub), &[])
                    .await
                    .map_err(|e| err(e, &format!("Describing the subnet: {sub} returned error")))?;
                let Some(n) = found.into_iter().next() else {
                    return Err(BuildError::msg(format!(
                        "Describing the subnet: {sub} returned no subnet."
                    )));
                };
                s.vpc_id.get_or_insert(n.vpc_id);
                s.availability_zone.get_or_insert(n.availability_zone);
            }
        }
        Ok(())
    }
}
