//! What the builder's steps share.
use crate::client::Aws;
use crate::ec2::{Image, Instance};
use kiln_commonsteps::{HasMachine, Machine};
use std::collections::BTreeMap;

/// The builder's state, filled in by the steps in order.
pub struct State {
    pub aws: Aws,
    pub source_image: Option<Image>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub availability_zone: Option<String>,
    /// The key pair the instance gets (temporary or `ssh_keypair_name`).
    pub key_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub instance: Option<Instance>,
    /// The AMIs made so far: region -> id (the build region's first).
    pub amis: BTreeMap<String, String>,
    /// What the common steps use.
    pub machine: Machine,
}

impl State {
    pub fn new(aws: Aws) -> Self {
        State {
            aws,
            source_image: None,
            vpc_id: None,
            subnet_id: None,
            availability_zone: None,
            key_name: None,
            security_group_ids: Vec::new(),
            instance: None,
            amis: BTreeMap::new(),
            machine: Machine::default(),
        }
    }

    pub fn instance_id(&self) -> String {
        self.instance
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_default()
    }
}

impl HasMachine for State {
    fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }
}
