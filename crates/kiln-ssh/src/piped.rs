//! A remote command with its standard streams piped byte for byte
//! ([`kiln_core::Communicator::exec_piped`]): what an SSH proxy in front of
//! the communicator (the `ansible` provisioner's) passes its clients'
//! sessions through.
use crate::client::SshCommunicator;
use bytes::BytesMut;
use kiln_core::communicator::CommError;
use kiln_core::ExitStatus;
use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

impl SshCommunicator {
    /// Run `command`; send `stdin` until it ends (then EOF), write stdout
    /// and stderr as they arrive; return how the command ended.
    pub(crate) async fn run_piped(
        &self,
        command: &str,
        stdin: &mut (dyn AsyncRead + Send + Unpin),
        stdout: &mut (dyn AsyncWrite + Send + Unpin),
        stderr: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<ExitStatus, CommError> {
        let ch = self.open_channel().await?;
        ch.exec(true, command)
            .await
            .map_err(|e| CommError::Disconnected(format!("starting the command: {e}")))?;
        let (mut rx, tx) = ch.split();
        let feed = async {
            let mut buf = BytesMut::with_capacity(32 * 1024);
            loop {
                buf.clear();
                match stdin.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.data_bytes(buf.split().freeze()).await.is_err() {
                            // The command is gone: its output and status
                            // say why.
                            return;
                        }
                    }
                }
            }
            let _ = tx.eof().await;
        };
        let drain = async {
            let mut status = None;
            // A client that stopped reading must not stop the command from
            // being waited for: write errors only stop the writing.
            let (mut out_ok, mut err_ok) = (true, true);
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } if out_ok => {
                        out_ok =
                            stdout.write_all(&data).await.is_ok() && stdout.flush().await.is_ok();
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } if err_ok => {
                        err_ok =
                            stderr.write_all(&data).await.is_ok() && stderr.flush().await.is_ok();
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        status = Some(ExitStatus::Code(exit_status as i32))
                    }
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        status = Some(ExitStatus::Signal(crate::client::sig_name(&signal_name)))
                    }
                    ChannelMsg::Failure => {
                        return Err(CommError::Remote(format!(
                            "the server refused to run the command: {command}"
                        )))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(status.unwrap_or(ExitStatus::Disconnected))
        };
        // The command may end before it read all of its input (or without
        // reading any): its end ends the feeding too.
        tokio::pin!(feed);
        tokio::pin!(drain);
        let mut fed = false;
        loop {
            tokio::select! {
                _ = &mut feed, if !fed => fed = true,
                r = &mut drain => return r,
            }
        }
    }
}
