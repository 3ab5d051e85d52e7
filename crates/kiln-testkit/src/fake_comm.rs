//! [`FakeComm`]: a communicator with no machine behind it.
use kiln_core::communicator::{CommError, FileMeta, TransferProgress};
use kiln_core::{async_trait, Communicator, ExitStatus, OutputSink};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

type Answer = dyn Fn(&str, &dyn OutputSink) -> ExitStatus + Send + Sync;

/// A communicator for tests of builders and steps: it runs nothing, keeps
/// every command it is given ([`FakeComm::commands`]) and answers each
/// with [`FakeComm::answering`]'s function (exit status 0 for every
/// command by default). Uploads, downloads and reconnecting succeed
/// without moving a byte.
pub struct FakeComm {
    commands: Mutex<Vec<String>>,
    answer: Box<Answer>,
}

impl Default for FakeComm {
    fn default() -> Self {
        FakeComm::answering(|_, _| ExitStatus::Code(0))
    }
}

impl FakeComm {
    /// Every command succeeds.
    pub fn new() -> Self {
        FakeComm::default()
    }

    /// Each command's exit status (and output, written to the sink) is
    /// `answer(command, out)`.
    pub fn answering(
        answer: impl Fn(&str, &dyn OutputSink) -> ExitStatus + Send + Sync + 'static,
    ) -> Self {
        FakeComm {
            commands: Mutex::new(vec![]),
            answer: Box::new(answer),
        }
    }

    /// The commands run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

#[async_trait]
impl Communicator for FakeComm {
    async fn start(&self, command: &str, out: &dyn OutputSink) -> Result<ExitStatus, CommError> {
        self.commands.lock().unwrap().push(command.to_string());
        Ok((self.answer)(command, out))
    }
    async fn upload(
        &self,
        _: &str,
        _: &mut (dyn AsyncRead + Send + Unpin),
        _: FileMeta,
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Ok(())
    }
    async fn upload_dir(
        &self,
        _: &str,
        _: &Path,
        _: &[String],
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Ok(())
    }
    async fn download(
        &self,
        _: &str,
        _: &mut (dyn AsyncWrite + Send + Unpin),
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Ok(())
    }
    async fn download_dir(
        &self,
        _: &str,
        _: &Path,
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Ok(())
    }
    async fn reconnect(&self, _: Duration) -> Result<(), CommError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FakeComm;
    use kiln_core::{Communicator, ExitStatus, OutputSink};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl OutputSink for Lines {
        fn stdout_line(&self, l: &str) {
            self.0.lock().unwrap().push(format!("out: {l}"));
        }
        fn stderr_line(&self, l: &str) {
            self.0.lock().unwrap().push(format!("err: {l}"));
        }
    }

    #[tokio::test]
    async fn records_commands_and_answers_as_told() {
        let sink = Lines::default();
        let ok = FakeComm::new();
        assert_eq!(ok.start("true", &sink).await.unwrap(), ExitStatus::Code(0));
        assert_eq!(ok.commands(), ["true"]);

        let picky = FakeComm::answering(|c, out| {
            if c.contains("poweroff") {
                out.stderr_line("no poweroff here");
                ExitStatus::Code(1)
            } else {
                ExitStatus::Code(0)
            }
        });
        assert_eq!(
            picky.start("sudo poweroff", &sink).await.unwrap(),
            ExitStatus::Code(1)
        );
        assert_eq!(picky.start("ls", &sink).await.unwrap(), ExitStatus::Code(0));
        assert_eq!(picky.commands(), ["sudo poweroff", "ls"]);
        assert_eq!(*sink.0.lock().unwrap(), ["err: no poweroff here"]);
    }
}
