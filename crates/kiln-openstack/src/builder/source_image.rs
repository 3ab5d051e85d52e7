//! The image the server boots from: an id as given, or the one image a
//! name or a filter finds.
use super::config::SourceImage;
use super::{Config, State};
use kiln_core::{async_trait, BuildCtx, BuildError, Step};

pub(super) struct SourceImageInfo<'a> {
    pub c: &'a Config,
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
