//! Typing through QEMU's QMP socket: `input-send-event` with one key event
//! (a `qcode`, down or up) per command, on one connection held for the
//! whole boot command.
//!
//! A QMP socket serves one client at a time (a second connection waits
//! until the first closes), so the typist should have a `-qmp` monitor of
//! its own (QEMU accepts several), not the one the builder polls for the
//! machine's status.
use crate::keys::Key;
use crate::typist::KeySink;
use async_trait::async_trait;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long one QMP command may take before the typist gives up.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP socket {}: {message}", path.display())]
    Protocol { path: PathBuf, message: String },
    #[error("QMP socket {}: QEMU refused `{command}`: {desc}", path.display())]
    Refused {
        path: PathBuf,
        command: String,
        desc: String,
    },
    #[error("QMP socket {}: no answer to `{command}` in {timeout:?}", path.display())]
    Timeout {
        path: PathBuf,
        command: String,
        timeout: Duration,
    },
}

/// A QMP connection that presses keys ([`KeySink`]).
pub struct QmpKeySink {
    path: PathBuf,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl std::fmt::Debug for QmpKeySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpKeySink")
            .field("path", &self.path)
            .finish()
    }
}

impl QmpKeySink {
    /// Connect to the QMP socket at `path` (retrying for up to `wait`
    /// while QEMU creates it), read the greeting and leave negotiation
    /// mode (`qmp_capabilities`).
    pub async fn connect(path: &Path, wait: Duration) -> Result<QmpKeySink, QmpError> {
        let deadline = tokio::time::Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(QmpError::Io {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (r, w) = stream.into_split();
        let mut sink = QmpKeySink {
            path: path.to_path_buf(),
            lines: BufReader::new(r).lines(),
            writer: w,
        };
        let greeting = tokio::time::timeout(COMMAND_TIMEOUT, sink.next_json()).await;
        let greeting = match greeting {
            Ok(g) => g?,
            Err(_) => return Err(sink.timeout("greeting")),
        };
        if greeting.get("QMP").is_none() {
            return Err(sink.protocol(format!("not a QMP greeting: {greeting}")));
        }
        sink.execute("qmp_capabilities", None).await?;
        Ok(sink)
    }

    /// Run a QMP command and return its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let fut = async {
            self.writer
                .write_all(format!("{msg}\n").as_bytes())
                .await
                .map_err(|e| self.io(e))?;
            loop {
                let v = self.next_json().await?;
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = v.get("error") {
                    return Err(QmpError::Refused {
                        path: self.path.clone(),
                        command: command.to_string(),
                        desc: e
                            .get("desc")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown error")
                            .to_string(),
                    });
                }
                // An asynchronous event: not our answer.
            }
        };
        let r = tokio::time::timeout(COMMAND_TIMEOUT, fut).await;
        match r {
            Ok(r) => r,
            Err(_) => Err(self.timeout(command)),
        }
    }

    /// One key event: `input-send-event` with a `qcode` key, down or up.
    pub async fn send_key(&mut self, key: Key, down: bool) -> Result<(), QmpError> {
        let args = json!({ "events": [ {
            "type": "key",
            "data": { "down": down, "key": { "type": "qcode", "data": key.qcode() } }
        } ] });
        self.execute("input-send-event", Some(args))
            .await
            .map(|_| ())
    }

    async fn next_json(&mut self) -> Result<Value, QmpError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|e| self.io(e))?
                .ok_or_else(|| self.protocol("QEMU closed the connection".into()))?;
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line)
                .map_err(|e| self.protocol(format!("bad JSON {line:?}: {e}")));
        }
    }

    fn io(&self, source: std::io::Error) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            source,
        }
    }
    fn protocol(&self, message: String) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            message,
        }
    }
    fn timeout(&self, command: &str) -> QmpError {
        QmpError::Timeout {
            path: self.path.clone(),
            command: command.to_string(),
            timeout: COMMAND_TIMEOUT,
        }
    }
}

#[async_trait]
impl KeySink for QmpKeySink {
    async fn key(
        &mut self,
        key: Key,
        down: bool,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.send_key(key, down).await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    //! The protocol against a scripted QMP server (QEMU itself types into
    //! a real guest in the qemu builder's tests/boot_command.rs).
    use super::*;
    use tokio::net::UnixListener;

    /// Greets, answers `qmp_capabilities`, then answers each command with
    /// the next reply (an event first, to be skipped); returns the
    /// commands received.
    async fn serve(listener: UnixListener, replies: Vec<&'static str>) -> Vec<Value> {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\n")
            .await
            .unwrap();
        let mut got = vec![];
        let l = lines.next_line().await.unwrap().unwrap();
        assert!(l.contains("qmp_capabilities"));
        w.write_all(b"{\"return\": {}}\n").await.unwrap();
        for reply in replies {
            let Some(l) = lines.next_line().await.unwrap() else {
                break;
            };
            got.push(serde_json::from_str(&l).unwrap());
            w.write_all(
                b"{\"timestamp\": {\"seconds\": 1}, \"event\": \"NIC_RX_FILTER_CHANGED\"}\n",
            )
            .await
            .unwrap();
            w.write_all(reply.as_bytes()).await.unwrap();
        }
        got
    }

    #[tokio::test]
    async fn sends_one_qcode_event_per_command_and_reports_refusals() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys.sock");
        let l = UnixListener::bind(&p).unwrap();
        let srv = tokio::spawn(serve(
            l,
            vec![
                "{\"return\": {}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid parameter 'nokey'\"}}\n",
            ],
        ));
        let mut s = QmpKeySink::connect(&p, Duration::from_secs(5))
            .await
            .unwrap();
        s.send_key(Key("shift"), true).await.unwrap();
        let e = s.send_key(Key("nokey"), false).await.unwrap_err();
        assert!(
            e.to_string()
                .ends_with("QEMU refused `input-send-event`: Invalid parameter 'nokey'"),
            "{e}"
        );
        drop(s);
        let got = srv.await.unwrap();
        assert_eq!(
            got[0],
            json!({"execute": "input-send-event", "arguments": {"events": [
                {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "shift"}}}
            ]}})
        );
        assert_eq!(got[1]["arguments"]["events"][0]["data"]["down"], false);
    }

    #[tokio::test]
    async fn no_socket_is_an_error_after_the_wait_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("none.sock");
        let t = std::time::Instant::now();
        let e = QmpKeySink::connect(&p, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(e.to_string().contains("none.sock"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sock");
        let l = UnixListener::bind(&p).unwrap();
        let srv = tokio::spawn(serve(l, vec![]));
        let mut s = QmpKeySink::connect(&p, Duration::from_secs(5))
            .await
            .unwrap();
        srv.await.unwrap();
        let e = s.send_key(Key("a"), true).await.unwrap_err();
        assert!(
            e.to_string().contains("closed") || matches!(e, QmpError::Io { .. }),
            "{e}"
        );
    }
}
