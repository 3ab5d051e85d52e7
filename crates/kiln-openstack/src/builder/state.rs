//! What the builder's steps share.
use crate::client::api::{FloatingIp, Server};
use crate::client::Cloud;
use kiln_commonsteps::{HasMachine, Machine};

/// The builder's state, filled in by the steps in order.
pub struct State {
    pub cloud: Cloud,
    pub flavor_id: String,
    pub flavor_disk: Option<u64>,
    /// The Nova key pair the server gets (temporary or `ssh_keypair_name`).
    pub key_name: Option<String>,
    pub source_image: String,
    pub networks: Vec<String>,
    pub volume_id: Option<String>,
    pub server: Option<Server>,
    pub floating_ip: Option<FloatingIp>,
    pub image_id: Option<String>,
    /// What the common steps use: the address and port to connect to, the
    /// temporary key pair, the connected communicator.
    pub machine: Machine,
}

impl State {
    pub fn new(cloud: Cloud) -> Self {
        State {
            cloud,
            flavor_id: String::new(),
            flavor_disk: None,
            key_name: None,
            source_image: String::new(),
            networks: Vec::new(),
            volume_id: None,
            server: None,
            floating_ip: None,
            image_id: None,
            machine: Machine::default(),
        }
    }

    /// The server's id (empty before it exists).
    pub fn server_id(&self) -> String {
        self.server
            .as_ref()
            .map(|x| x.id.clone())
            .unwrap_or_default()
    }
}

impl HasMachine for State {
    fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }
}
