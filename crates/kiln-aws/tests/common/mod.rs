//! The AWS lab (testlab/aws) as tests see it: `KILN_AWS_LAB` names the
//! lab's root, whose `lab.json` says where moto and the fault proxy are.
#![allow(dead_code)]
use kiln_aws::{AccessConfig, Aws, Env};
use serde_json::{json, Value};

pub struct Lab {
    pub root: std::path::PathBuf,
    pub endpoint: String,
    pub proxy: String,
    pub call_log: std::path::PathBuf,
    pub ssh_user: String,
    pub venv: std::path::PathBuf,
    http: kiln_aws::reqwest::Client,
}

impl Lab {
    pub fn get() -> Lab {
        let root = std::env::var("KILN_AWS_LAB").expect(
            "KILN_AWS_LAB is not set: run through testlab/aws/with-lab.sh (scripts/test.sh does)",
        );
        let root = std::path::PathBuf::from(root);
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("lab.json")).unwrap()).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        Lab {
            endpoint: s("endpoint"),
            proxy: s("proxy"),
            call_log: s("call_log").into(),
            ssh_user: s("ssh_user"),
            venv: s("venv").into(),
            root,
            http: kiln_aws::reqwest::Client::new(),
        }
    }

    /// Access keys for the lab in `region`, through the fault proxy.
    pub fn access(&self, region: &str) -> AccessConfig {
        AccessConfig {
            access_key: Some("kiln-lab".into()),
            secret_key: Some("kiln-lab-secret".into()),
            region: Some(region.into()),
            custom_endpoint_ec2: Some(self.proxy.clone()),
            skip_metadata_api_check: true,
            ..Default::default()
        }
    }

    pub async fn aws(&self, region: &str) -> Aws {
        let mut a = Aws::connect_with(&self.access(region), Env::default())
            .await
            .unwrap();
        // Retries stay quick in tests.
        a.transport.retry.base = std::time::Duration::from_millis(10);
        a.transport.retry.throttle_base = std::time::Duration::from_millis(20);
        a
    }

    /// Add fault rules (each scoped to a region by the caller); their ids.
    pub async fn fault(&self, rules: Value) -> Vec<u64> {
        let r: Value = self
            .http
            .post(format!("{}/__faults", self.proxy))
            .body(rules.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    }

    pub async fn remove_faults(&self, ids: &[u64]) {
        for id in ids {
            self.http
                .delete(format!("{}/__faults/{id}", self.proxy))
                .send()
                .await
                .unwrap();
        }
    }

    /// What the proxy saw in `region`: (action, fault mode) in order.
    pub async fn seen(&self, region: &str) -> Vec<(String, Option<String>)> {
        let r: Value = self
            .http
            .get(format!("{}/__faults", self.proxy))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        r["seen"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["region"] == json!(region))
            .map(|s| {
                (
                    s["action"].as_str().unwrap_or("").to_string(),
                    s["fault"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    /// Calls moto logged in `region` (action, params), in order.
    pub fn calls(&self, region: &str) -> Vec<(String, Value)> {
        std::fs::read_to_string(&self.call_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["region"] == json!(region))
            .map(|v| {
                (
                    v["action"].as_str().unwrap_or("").to_string(),
                    v["params"].clone(),
                )
            })
            .collect()
    }
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
