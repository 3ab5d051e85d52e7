//! AMIs as a build artifact: Packer's `region: ami-...` lines.
use crate::client::Aws;
use kiln_core::{async_trait, Artifact};
use std::collections::BTreeMap;

/// AMIs in one or more regions.
pub struct AmiArtifact {
    pub builder_id: String,
    /// region -> AMI id
    pub amis: BTreeMap<String, String>,
    /// To destroy them (any region: [`Aws::in_region`]).
    pub aws: Option<Aws>,
}

#[async_trait]
impl Artifact for AmiArtifact {
    fn builder_id(&self) -> &str {
        &self.builder_id
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    /// `region:ami-1,region2:ami-2`, sorted (Packer's `Id()`).
    fn id(&self) -> String {
        self.amis
            .iter()
            .map(|(r, a)| format!("{r}:{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }
    /// `AMIs were created:` and one `region: ami-...` line each, sorted.
    fn description(&self) -> String {
        let lines: Vec<String> = self.amis.iter().map(|(r, a)| format!("{r}: {a}")).collect();
        format!("AMIs were created:\n{}\n", lines.join("\n"))
    }
    fn state(&self, key: &str) -> Option<String> {
        match key {
            "region" if self.amis.len() == 1 => self.amis.keys().next().cloned(),
            "image_id" | "ami_id" if self.amis.len() == 1 => self.amis.values().next().cloned(),
            _ => None,
        }
    }
    /// Deregister every AMI and delete its snapshots.
    async fn destroy(&self) -> Result<(), String> {
        let Some(aws) = &self.aws else {
            return Err("no AWS connection to destroy the AMIs with".into());
        };
        for (region, ami) in &self.amis {
            let a = aws.in_region(region);
            a.ec2()
                .destroy_image(ami)
                .await
                .map_err(|e| format!("deleting {ami} in {region}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packer_lines() {
        let a = AmiArtifact {
            builder_id: "packer.post-processor.amazon-import".into(),
            amis: [
                ("us-west-2".to_string(), "ami-2".to_string()),
                ("eu-west-1".to_string(), "ami-1".to_string()),
            ]
            .into(),
            aws: None,
        };
        assert_eq!(a.id(), "eu-west-1:ami-1,us-west-2:ami-2");
        assert_eq!(
            a.description(),
            "AMIs were created:\neu-west-1: ami-1\nus-west-2: ami-2\n"
        );
    }
}
