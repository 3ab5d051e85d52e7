//! The flavor the server is launched with.
use super::{Config, State};
use kiln_core::{async_trait, BuildCtx, BuildError, Step};

pub(super) struct LoadFlavor<'a> {
    pub c: &'a Config,
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
