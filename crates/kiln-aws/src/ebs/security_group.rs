//! `security_group_id(s)`, or a temporary security group letting in the
//! communicator's port from `temporary_security_group_source_cidrs` only,
//! deleted by the cleanup (after the instance is gone: its cleanup runs
//! first).
use super::{Config, State};
use crate::client::Aws;
use crate::ec2::Filter;
use crate::error::AwsError;
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct SecurityGroup<'a> {
    c: &'a Config,
    name: Option<String>,
    create: Create<String, AwsError>,
}

impl<'a> SecurityGroup<'a> {
    pub fn new(c: &'a Config) -> Self {
        SecurityGroup {
            c,
            name: None,
            create: Create::new("security group")
                .labelled(|id: &String| format!("temporary security group {id} (aws)")),
        }
    }
}

#[async_trait]
impl Step<State> for SecurityGroup<'_> {
    fn name(&self) -> &'static str {
        "security group"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if !c.security_group_ids.is_empty() {
            let found = s
                .aws
                .ec2()
                .describe_security_groups(&c.security_group_ids, &[])
                .await
                .map_err(|e| {
                    BuildError::from(e).context("Couldn't find specified security group")
                })?;
            let ids: Vec<String> = found.into_iter().map(|g| g.id).collect();
            ctx.ui
                .message(&format!("Found Security Group(s): {}", ids.join(", ")));
            s.security_group_ids = c.security_group_ids.clone();
            return Ok(());
        }
        let name = format!("packer_{}", uuid::Uuid::new_v4());
        ctx.ui.say(&format!(
            "Creating temporary security group for this instance: {name}"
        ));
        self.name = Some(name.clone());
        let (aws, n, vpc) = (s.aws.clone(), name.clone(), s.vpc_id.clone());
        let id = self
            .create
            .send(
                ctx,
                format!(
                    "temporary security group {name} being created (aws {})",
                    s.aws.region
                ),
                async move {
                    aws.ec2()
                        .create_security_group(
                            &n,
                            "Temporary group for Packer",
                            vpc.as_deref(),
                            &BTreeMap::new(),
                        )
                        .await
                },
            )
            .await
            .map_err(BuildError::from)?;
        s.security_group_ids = vec![id.clone()];
        if c.comm.is_none() {
            // Nothing to let in (Packer opens port 0).
            return Ok(());
        }
        let port = c.comm.port;
        ctx.ui.say(&format!(
            "Authorizing access to port {port} from [{}] in the temporary security groups...",
            c.temporary_sg_cidrs.join(" ")
        ));
        s.aws
            .ec2()
            .authorize_ingress_tcp(&id, port, &c.temporary_sg_cidrs)
            .await
            .map_err(|e| BuildError::from(e).context("Error authorizing temporary security group"))
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        let Some(name) = &self.name else {
            return Ok(());
        };
        self.create.undo(ctx, &Groups { aws: &s.aws, name }).await
    }
}

/// Security groups, found by their (unique) name.
struct Groups<'a> {
    aws: &'a Aws,
    name: &'a str,
}

#[async_trait]
impl Resource for Groups<'_> {
    type Item = String;
    type Error = AwsError;
    fn request_timeout(&self) -> Duration {
        self.aws.transport.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, AwsError> {
        Ok(self
            .aws
            .ec2()
            .describe_security_groups(&[], &[Filter::new("group-name", &[self.name])])
            .await?
            .into_iter()
            .filter(|g| g.name == self.name)
            .map(|g| g.id)
            .collect())
    }
    async fn delete(&self, id: &String) -> Result<(), AwsError> {
        self.aws.ec2().delete_security_group(id).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for the temporary security group {}, which may have been created",
            self.name
        )
    }
    fn delete_failed(&self, id: &String) -> String {
        format!("Error cleaning up security group. Please delete the group manually: security group ID: {id}")
    }
    async fn deleting(&self, ctx: &BuildCtx, _: &String) {
        ctx.ui.say("Deleting temporary security group...");
    }
}
