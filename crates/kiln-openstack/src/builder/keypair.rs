//! The Nova key pair the server gets: `ssh_keypair_name`, or a temporary
//! one made for the build (its private half is the machine's key for the
//! communicator), deleted by the cleanup.
use super::{Config, State};
use crate::client::{Cloud, OsError};
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use kiln_ssh::{TempKeyPair, TempKeyType};
use std::time::Duration;

pub(super) struct KeyPair<'a> {
    c: &'a Config,
    /// The temporary key pair's name, once chosen.
    name: Option<String>,
    create: Create<String, OsError>,
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
        if !self.c.wants_temporary_keypair() {
            ctx.ui.say("Not using temporary keypair");
            return Ok(());
        }
        let name = comm
            .temporary_key_pair_name
            .clone()
            .unwrap_or_else(|| format!("packer_{}", uuid::Uuid::new_v4()));
        ctx.ui
            .say(&format!("Creating temporary keypair: {name} ..."));
        // `temporary_key_pair_type`/`_bits` when the template sets them
        // (Packer's builder lets Nova make an RSA key and ignores them);
        // else ed25519, quick to make and accepted by every current sshd.
        // kiln-ssh says what is wrong in its own words.
        let key = TempKeyPair::for_config(comm, TempKeyType::Ed25519).map_err(BuildError::msg)?;
        self.name = Some(name.clone());
        let (cloud, n, public) = (
            s.cloud.clone(),
            name.clone(),
            key.public_authorized.trim().to_string(),
        );
        // A refusal (409: a key pair of that name exists, and it is not
        // kiln's to delete) made nothing.
        self.create
            .send(
                ctx,
                format!("temporary key pair {name} (openstack)"),
                async move { cloud.create_keypair(&n, &public).await.map(|()| n) },
            )
            .await
            .map_err(|e| BuildError::from(e).context("Error creating temporary keypair"))?;
        ctx.ui.say(&format!("Created temporary keypair: {name}"));
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
        let keypairs = KeyPairs {
            cloud: &s.cloud,
            name,
        };
        self.create.undo(ctx, &keypairs).await
    }
}

/// Key pairs, found by their (unique) name.
struct KeyPairs<'a> {
    cloud: &'a Cloud,
    name: &'a str,
}

#[async_trait]
impl Resource for KeyPairs<'_> {
    type Item = String;
    type Error = OsError;
    fn request_timeout(&self) -> Duration {
        self.cloud.session.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, OsError> {
        let mut names = self.cloud.keypair_names().await?;
        names.retain(|k| k == self.name);
        Ok(names)
    }
    async fn delete(&self, name: &String) -> Result<(), OsError> {
        self.cloud.delete_keypair(name).await
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
    async fn deleting(&self, ctx: &BuildCtx, name: &String) {
        ctx.ui
            .say(&format!("Deleting temporary keypair: {name} ..."));
    }
}
