//! Type a boot command into a running QEMU through one of its QMP sockets
//! (a tool for trying boot commands by hand):
//!
//! ```sh
//! qemu-system-x86_64 ... -qmp unix:/tmp/keys.sock,server=on,wait=off
//! cargo run -p kiln-bootcommand --example type -- /tmp/keys.sock '<esc><wait>auto<enter>'
//! ```
//!
//! `{{ .HTTPIP }}` is 10.0.2.2, `{{ .HTTPPort }}` comes from `HTTP_PORT`
//! (default 0), `{{ .Name }}` from `NAME` (default `packer-qemu`); the pause
//! after each key event is `boot_key_interval`'s rule (`KEY_INTERVAL`, then
//! `PACKER_KEY_INTERVAL`, then 100 ms).
use kiln_bootcommand::template::{BootCommand, Values};
use kiln_bootcommand::typist::{key_interval, KEY_INTERVAL_ENV};
use kiln_bootcommand::{QmpKeySink, Typist};
use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, command] = args.as_slice() else {
        eprintln!("usage: type QMP_SOCKET BOOT_COMMAND");
        std::process::exit(2);
    };
    let bc = BootCommand::new(vec![command.clone()]);
    let problems = bc.check();
    if !problems.is_empty() {
        for p in problems {
            eprintln!("column {}: {}", p.col, p.error);
        }
        std::process::exit(1);
    }
    let values = Values {
        http_ip: "10.0.2.2".into(),
        http_port: std::env::var("HTTP_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        name: std::env::var("NAME").unwrap_or_else(|_| "packer-qemu".into()),
    };
    let steps = bc
        .render(&kiln_template::Context::default(), &values)
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let interval = key_interval(
        std::env::var("KEY_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis),
        std::env::var(KEY_INTERVAL_ENV).ok().as_deref(),
    );
    let mut sink = QmpKeySink::connect(socket.as_ref(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let cancel = tokio_util::sync::CancellationToken::new();
    if let Err(e) = (Typist {
        key_interval: interval,
    })
    .type_steps(&steps, &mut sink, &cancel)
    .await
    {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
