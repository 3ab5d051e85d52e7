//! The key pair the instance gets: `ssh_keypair_name`, or a temporary one
//! (kiln makes an ed25519 key and imports its public half: the private key
//! never travels), deleted by the cleanup.
use super::{Config, State};
use crate::client::Aws;
use crate::error::AwsError;
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use kiln_ssh::{TempKeyPair, TempKeyType};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct KeyPair<'a> {
    c: &'a Config,
    name: Option<String>,
    create: Create<String, AwsError>,
}

impl<'a> KeyPair<'a> {
    pub fn new(c: &'a Config) -> Self {
        KeyPair {
            c,
            name: None,
            create: Create::new("key pair"),
        }
    }
}

#[async_trait]
impl Step<State> for KeyPair<'_> {
    fn name(&self) -> &'static str {
        "key pair"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let comm = &self.c.comm;
        if let Some(k) = &comm.keypair_name {
            if comm.private_key_file.is_some() {
                ctx.ui.say("Using existing SSH private key");
            } else {
                ctx.ui
                    .say(&format!("Using SSH Agent for existing key pair {k}"));
            }
            s.key_name = Some(k.clone());
            return Ok(());
        }
        if comm.private_key_file.is_some() {
            ctx.ui.say("Using existing SSH private key");
            return Ok(());
        }
        if comm.agent_auth {
            ctx.ui.say("Using SSH Agent with key pair in Source AMI");
            return Ok(());
        }
        if !self.c.wants_temporary_keypair() {
            ctx.ui.say("Not using temporary keypair");
            return Ok(());
        }
        let name = comm
            .temporary_key_pair_name
            .clone()
            .unwrap_or_else(|| format!("packer_{}", uuid::Uuid::new_v4()));
        ctx.ui.say(&format!("Creating temporary keypair: {name}"));
        let key = TempKeyPair::for_config(comm, TempKeyType::Ed25519).map_err(BuildError::msg)?;
        self.name = Some(name.clone());
        let (aws, n, public) = (
            s.aws.clone(),
            name.clone(),
            key.public_authorized.trim().to_string(),
        );
        self.create
            .send(
                ctx,
                format!("temporary key pair {name} (aws {})", s.aws.region),
                async move {
                    aws.ec2()
                        .import_key_pair(&n, &public, &BTreeMap::new())
                        .await
                        .map(|k| k.name)
                },
            )
            .await
            .map_err(|e| BuildError::from(e).context("Error creating temporary keypair"))?;
        s.machine.key = Some(key);
        s.key_name = Some(name);
        Ok(())
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
        self.create.undo(ctx, &KeyPairs { aws: &s.aws, name }).await
    }
}

/// Key pairs, found by their (unique) name.
struct KeyPairs<'a> {
    aws: &'a Aws,
    name: &'a str,
}

#[async_trait]
impl Resource for KeyPairs<'_> {
    type Item = String;
    type Error = AwsError;
    fn request_timeout(&self) -> Duration {
        self.aws.transport.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, AwsError> {
        Ok(self
            .aws
            .ec2()
            .describe_key_pairs(&[self.name.to_string()], &[])
            .await?
            .into_iter()
            .map(|k| k.name)
            .filter(|k| k == self.name)
            .collect())
    }
    async fn delete(&self, name: &String) -> Result<(), AwsError> {
        self.aws.ec2().delete_key_pair(name).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for the temporary keypair {}, which may have been created",
            self.name
        )
    }
    fn delete_failed(&self, name: &String) -> String {
        format!("Error cleaning up keypair. Please delete the key manually: {name}")
    }
    async fn deleting(&self, ctx: &BuildCtx, _: &String) {
        ctx.ui.say("Deleting temporary keypair...");
    }
}
