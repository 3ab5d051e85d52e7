//! A minimal QMP (QEMU Machine Protocol) client: one connection per
//! command (QEMU's QMP socket serves one client at a time), events skipped;
//! and [`watch_events`] for a second QMP socket that only listens to
//! QEMU's events (a guest-initiated reset, i.e. a reboot).
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Run `command` (no arguments) and return its `return` value.
pub async fn execute(socket: &Path, command: &str) -> Result<Value, String> {
    execute_with(socket, command, Value::Null).await
}

/// Run one QMP command with `arguments` (`Null`: none) and return its
/// `return` value.
pub async fn execute_with(socket: &Path, command: &str, arguments: Value) -> Result<Value, String> {
    tokio::time::timeout(
        Duration::from_secs(10),
        execute_inner(socket, command, arguments),
    )
    .await
    .map_err(|_| format!("QMP {command}: no answer in 10 s"))?
}

async fn execute_inner(socket: &Path, command: &str, arguments: Value) -> Result<Value, String> {
    let s = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("QMP socket {}: {e}", socket.display()))?;
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = next_json(&mut lines).await?;
    if greeting.get("QMP").is_none() {
        return Err(format!("not a QMP greeting: {greeting}"));
    }
    for cmd in ["qmp_capabilities", command] {
        let msg = if cmd == command && !arguments.is_null() {
            serde_json::json!({ "execute": cmd, "arguments": arguments })
        } else {
            serde_json::json!({ "execute": cmd })
        };
        w.write_all(format!("{msg}\n").as_bytes())
            .await
            .map_err(|e| format!("QMP write: {e}"))?;
        let v = answer(&mut lines).await?;
        if cmd == command {
            return Ok(v);
        }
    }
    unreachable!("the loop returns on the last command")
}

/// Connect to a QMP socket that serves only events and call `on_event`
/// with each event's name and `data`, until QEMU closes the socket (it
/// exits). Retries the connection for up to `wait` (QEMU creates the
/// socket as it starts).
pub async fn watch_events(
    socket: &Path,
    wait: Duration,
    mut on_event: impl FnMut(&str, &Value) + Send,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + wait;
    let s = loop {
        match UnixStream::connect(socket).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("QMP socket {}: {e}", socket.display()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = next_json(&mut lines).await?;
    if greeting.get("QMP").is_none() {
        return Err(format!("not a QMP greeting: {greeting}"));
    }
    w.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .await
        .map_err(|e| format!("QMP write: {e}"))?;
    answer(&mut lines).await?;
    loop {
        let v = match next_json(&mut lines).await {
            Ok(v) => v,
            // QEMU exited: the watch is over.
            Err(e) if e == "QMP connection closed" => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(name) = v.get("event").and_then(|e| e.as_str()) {
            on_event(name, v.get("data").unwrap_or(&Value::Null));
        }
    }
}

/// Whether a QMP event says the guest reset itself (a reboot from inside
/// the machine, not kiln's or a user's `system_reset`).
pub fn is_guest_reset(name: &str, data: &Value) -> bool {
    name == "RESET" && data.get("guest").and_then(|g| g.as_bool()) == Some(true)
}

async fn next_json<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Result<Value, String> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| format!("QMP read: {e}"))?
            .ok_or("QMP connection closed")?;
        if line.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(&line).map_err(|e| format!("QMP: bad JSON {line:?}: {e}"));
    }
}

/// The next `return` or `error`, skipping asynchronous events.
async fn answer<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Result<Value, String> {
    loop {
        let v = next_json(lines).await?;
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(format!(
                "QMP error: {}",
                e.get("desc").and_then(|d| d.as_str()).unwrap_or("unknown")
            ));
        }
        // An event ({"event": ...}): skip.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP server: greets, answers capabilities, sends an
    /// event, then answers the command.
    async fn serve(listener: UnixListener, reply: &'static str) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        let l = lines.next_line().await.unwrap().unwrap();
        assert!(l.contains("qmp_capabilities"));
        w.write_all(b"{\"return\": {}}\n").await.unwrap();
        let l = lines.next_line().await.unwrap().unwrap();
        assert!(l.contains("\"execute\""));
        w.write_all(b"{\"timestamp\": {}, \"event\": \"POWERDOWN\"}\n")
            .await
            .unwrap();
        w.write_all(reply.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn answers_skip_events() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.sock");
        let l = UnixListener::bind(&p).unwrap();
        let srv = tokio::spawn(serve(
            l,
            "{\"return\": {\"status\": \"internal-error\", \"running\": false}}\n",
        ));
        let v = execute(&p, "query-status").await.unwrap();
        assert_eq!(v["status"], "internal-error");
        srv.await.unwrap();

        let l = UnixListener::bind(d.path().join("e.sock")).unwrap();
        let srv = tokio::spawn(serve(
            l,
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        ));
        let e = execute(&d.path().join("e.sock"), "system_powerdown")
            .await
            .unwrap_err();
        assert_eq!(e, "QMP error: nope");
        srv.await.unwrap();
        assert!(execute(&d.path().join("none.sock"), "x").await.is_err());
    }

    #[tokio::test]
    async fn events_are_reported_until_qemu_closes_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ev.sock");
        let l = UnixListener::bind(&p).unwrap();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let l = lines.next_line().await.unwrap().unwrap();
            assert!(l.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").await.unwrap();
            for e in [
                r#"{"timestamp": {}, "event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#,
                r#"{"timestamp": {}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#,
                r#"{"timestamp": {}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
            ] {
                w.write_all(format!("{e}\n").as_bytes()).await.unwrap();
            }
            // Then QEMU exits.
        });
        let mut seen = vec![];
        watch_events(&p, Duration::from_secs(10), |n, d| {
            seen.push((n.to_string(), is_guest_reset(n, d)))
        })
        .await
        .unwrap();
        srv.await.unwrap();
        assert_eq!(
            seen,
            [
                ("RESET".to_string(), true),
                ("RESET".to_string(), false),
                ("SHUTDOWN".to_string(), false)
            ]
        );
        // No socket at all: an error after the retries, not a hang.
        let none = d.path().join("none.sock");
        assert!(watch_events(&none, Duration::from_millis(200), |_, _| {})
            .await
            .is_err());
    }
}
