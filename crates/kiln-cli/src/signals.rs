//! Ctrl-C and SIGTERM: the first cancels the builds (which then clean up),
//! the second abandons cleanup.
use kiln_core::Output;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub fn install(output: Output, cancel: CancellationToken, abandon: CancellationToken) {
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            output.error("kiln: cannot install signal handlers; Ctrl-C will not clean up");
            return;
        }
    };
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                output.error(
                    "Interrupt received. Cancelling builds and cleaning up (press Ctrl-C again to abandon cleanup)...",
                );
                cancel.cancel();
            } else {
                output.error("Second interrupt received. Abandoning cleanup...");
                abandon.cancel();
                return;
            }
        }
    });
}
