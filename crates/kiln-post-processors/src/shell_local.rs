//! `shell-local`: run commands or scripts on this machine after the build
//! (Packer 1.6.6's shell-local post-processor). Its configuration and its
//! runner are the provisioner's too: see [`kiln_shell_local`], which also
//! lists the options. The input artifact is passed on and always kept.
use crate::RUN_UUID_KEY;
use kiln_core::{
    async_trait, Artifact, BuildError, PostProcessCtx, PostProcessed, PostProcessor, PrepareOpts,
};
use kiln_shell_local::Form;
pub use kiln_shell_local::{go_os, go_sprintf, Config, SUPPORTED_OS};
use kiln_template::Decoder;
use std::sync::Arc;

/// Decode and validate a shell-local post-processor's configuration (the
/// caller calls `finish()`).
pub fn decode(d: &mut Decoder<'_>) -> Config {
    Config::decode(d, Form::PostProcessor)
}

pub(crate) fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(ShellLocal { config: decode(d) }))
}

pub struct ShellLocal {
    pub config: Config,
}

#[async_trait]
impl PostProcessor for ShellLocal {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        // Packer's children inherit PACKER_RUN_UUID from Packer.
        let mut env = Vec::new();
        if std::env::var_os(RUN_UUID_KEY).is_none() {
            env.push((RUN_UUID_KEY.to_string(), crate::run_uuid(&ctx.interp)));
        }
        self.config.run(ctx.build, &ctx.interp, &env).await?;
        // Kept whatever the user says, so the chain can go on with it (use
        // artifice to replace an artifact).
        Ok(PostProcessed {
            artifact: Some(input),
            keep: true,
            force_keep: true,
        })
    }
}
