//! Packer 1.6.6's `shell-local` provisioner: run commands or scripts on the
//! machine running kiln. Its configuration and its runner are the
//! post-processor's too: see [`kiln_shell_local`].
use kiln_core::{async_trait, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner};
use kiln_shell_local::Form;
pub use kiln_shell_local::{go_os as goos, Config as ShellLocalConfig};
use kiln_template::Decoder;
use std::sync::Arc;

pub struct ShellLocal {
    pub config: ShellLocalConfig,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    let config = ShellLocalConfig::decode(d, Form::Provisioner);
    Some(Box::new(ShellLocal { config }))
}

#[async_trait]
impl Provisioner for ShellLocal {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        _comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        // Packer's children inherit PACKER_RUN_UUID from Packer.
        let mut env = Vec::new();
        if std::env::var_os("PACKER_RUN_UUID").is_none() {
            env.push(("PACKER_RUN_UUID".to_string(), kiln_core::build::run_uuid()));
        }
        self.config.run(pctx.build, &pctx.interp, &env).await
    }
}
