//! The summary printed after every build has finished.

use super::{human_duration, BuildOutcome};
use crate::ui::Output;
use std::time::Duration;

/// Print the final summary (`==> Builds finished...`) and machine-readable
/// artifact records.
pub fn print_summary(output: &Output, outcomes: &[BuildOutcome], wall: Duration) {
    output.raw("");
    output.say(&format!("Wait completed after {}", human_duration(wall)));
    let ok: Vec<&BuildOutcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    let failed: Vec<&BuildOutcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    if !failed.is_empty() {
        output.raw("");
        output.error("==> Some builds didn't complete successfully and had errors:");
        for o in &failed {
            if let Err(e) = &o.result {
                output.error(&format!("--> {}: {e}", o.name));
            }
        }
    }
    let any_artifacts = ok
        .iter()
        .any(|o| o.result.as_ref().is_ok_and(|a| !a.is_empty()));
    output.raw("");
    if any_artifacts {
        output.say("Builds finished. The artifacts of successful builds are:");
    } else {
        output.say("Builds finished but no artifacts were created.");
    }
    for o in ok {
        let Ok(arts) = &o.result else { continue };
        output.machine(&o.name, "artifact-count", &[&arts.len().to_string()]);
        for (i, a) in arts.iter().enumerate() {
            let i = i.to_string();
            output.machine(&o.name, "artifact", &[&i, "builder-id", a.builder_id()]);
            output.machine(&o.name, "artifact", &[&i, "id", &a.id()]);
            output.machine(&o.name, "artifact", &[&i, "string", &a.description()]);
            let files = a.files();
            output.machine(
                &o.name,
                "artifact",
                &[&i, "files-count", &files.len().to_string()],
            );
            for (j, f) in files.iter().enumerate() {
                output.machine(
                    &o.name,
                    "artifact",
                    &[&i, "file", &j.to_string(), &f.display().to_string()],
                );
            }
            output.machine(&o.name, "artifact", &[&i, "end"]);
            output.raw(&format!("--> {}: {}", o.name, a.description()));
        }
    }
    let leftovers: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.leftovers.iter().map(move |l| format!("{}: {l}", o.name)))
        .collect();
    if !leftovers.is_empty() {
        output.error(&format!(
            "==> These resources may have been left behind:\n  - {}",
            leftovers.join("\n  - ")
        ));
    }
}
