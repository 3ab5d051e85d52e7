//! The subcommands.
use crate::args::{BuildArgs, Cli, Common};
use crate::registry::registry;
use kiln_core::build::{self, PrepareOptions, RunOptions};
use kiln_core::context::{AskAnswer, Asker};
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{OnError, Output};
use kiln_template::{Diagnostics, Source, Template, Variables};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(cli: Cli, machine_readable: bool) -> u8 {
    let mut config = OutputConfig::detect();
    if machine_readable {
        config.mode = Mode::MachineReadable;
        config.color = false;
    }
    if let Cli::Build(b) = &cli {
        config.color &= b.color;
        config.timestamp = b.timestamp_ui;
    }
    let output = Output::new(config);
    match cli {
        Cli::Version => {
            output.machine("", "version", &[env!("CARGO_PKG_VERSION")]);
            if !machine_readable {
                output.raw(&format!(
                    "kiln {} (Packer {} template compatible)",
                    env!("CARGO_PKG_VERSION"),
                    kiln_template::interp::PACKER_COMPAT_VERSION
                ));
            }
            0
        }
        Cli::Validate {
            common,
            syntax_only,
        } => validate(&output, &common, syntax_only),
        Cli::Inspect { template } => inspect(&output, &template),
        Cli::Console { common } => console(&output, &common),
        Cli::Fix { template, validate } => fix(&output, &template, validate),
        Cli::Build(b) => build_cmd(&output, b).await,
        Cli::CacheList => crate::cache_cmd::list(&output),
        Cli::CachePrune {
            max_age,
            max_size,
            all,
        } => crate::cache_cmd::prune(&output, max_age.as_deref(), max_size.as_deref(), all),
    }
}

/// Print problems, each once, in file order, and their count.
fn print_diags(output: &Output, mut diags: Diagnostics) {
    diags.dedup();
    diags.sort_by_position();
    for d in &diags.0 {
        output.error(&d.to_string());
        output.error("");
    }
    let n = diags.0.len();
    output.error(&format!(
        "{n} error{} found.",
        if n == 1 { "" } else { "s" }
    ));
}

/// Read the template, and register as secrets the values known to be
/// sensitive before it is parsed, so that no diagnostic of any stage can
/// print them.
fn read_template(
    output: &Output,
    path: &Path,
    vars: &[kiln_template::VarSource],
) -> Result<Arc<Source>, Diagnostics> {
    let src = kiln_template::template::read_source(path)?;
    for s in kiln_template::vars::early_secrets_in(src.clone(), vars) {
        output.add_secret(&s);
    }
    Ok(src)
}

/// Parse the template and resolve its variables; print problems.
///
/// Problems are reported in stages, each as complete as it can be:
/// structural problems (JSON, root keys, definitions) come with the
/// problems of the components that could be decoded, unless a variable has
/// a problem too; variable problems stop before the components, whose
/// values depend on the variables. Component problems of a template whose
/// structure and variables are sound come from `prepare`.
fn load(output: &Output, common: &Common) -> Option<(Template, Variables)> {
    let Some(path) = &common.template else {
        output.error("A template path is required.");
        return None;
    };
    let src = match read_template(output, path, &common.vars) {
        Ok(src) => src,
        Err(d) => {
            print_diags(output, d);
            return None;
        }
    };
    let (template, mut diags) = kiln_template::template::parse_partial(src);
    let Some(template) = template else {
        print_diags(output, diags);
        return None;
    };
    let (vars, var_diags) = kiln_template::vars::resolve_partial(&template, &common.vars);
    // Every value that did resolve and is sensitive is hidden before
    // anything is printed.
    for s in vars.secrets() {
        output.add_secret(&s);
    }
    if !diags.0.is_empty() {
        if var_diags.0.is_empty() {
            let (problems, warnings) = build::component_problems_with_warnings(
                &template,
                &vars,
                &registry(),
                &prepare_opts(common, false),
            );
            print_warning_diags(output, warnings);
            diags.extend(problems);
        } else {
            diags.extend(var_diags);
        }
        print_diags(output, diags);
        return None;
    }
    if !var_diags.0.is_empty() {
        print_diags(output, var_diags);
        return None;
    }
    Some((template, vars))
}

fn prepare_opts(common: &Common, force: bool) -> PrepareOptions {
    PrepareOptions {
        only: common.only.clone(),
        except: common.except.clone(),
        force,
        ..Default::default()
    }
}

/// Print warnings (Packer's prepare warnings, keys `kiln fix` would
/// rewrite), each once, in file order.
fn print_warning_diags(output: &Output, mut warnings: Diagnostics) {
    warnings.dedup();
    warnings.sort_by_position();
    for d in &warnings.0 {
        output.error(&format!("Warning: {d}"));
    }
}

fn validate(output: &Output, common: &Common, syntax_only: bool) -> u8 {
    if syntax_only {
        let Some(path) = &common.template else {
            output.error("A template path is required.");
            return 1;
        };
        let parsed =
            read_template(output, path, &common.vars).and_then(kiln_template::template::parse);
        return match parsed {
            Ok(_) => {
                output.raw("Syntax-only check passed. Everything looks okay.");
                0
            }
            Err(d) => {
                output.error("Template validation failed. Errors are shown below.\n");
                print_diags(output, d);
                1
            }
        };
    }
    let Some((template, vars)) = load(output, common) else {
        return 1;
    };
    let (prepared, warnings) =
        build::prepare_with_warnings(&template, &vars, &registry(), &prepare_opts(common, false));
    print_warning_diags(output, warnings);
    match prepared {
        Ok(_) => {
            output.raw("Template validated successfully.");
            0
        }
        Err(d) => {
            output.error("Template validation failed. Errors are shown below.\n");
            print_diags(output, d);
            1
        }
    }
}

fn inspect(output: &Output, path: &Path) -> u8 {
    let template = match read_template(output, path, &[]).and_then(kiln_template::template::parse) {
        Ok(t) => t,
        Err(d) => {
            print_diags(output, d);
            return 1;
        }
    };
    let sensitive: std::collections::BTreeSet<&str> = template
        .sensitive_variables
        .iter()
        .map(|s| s.value.as_str())
        .collect();
    output.raw("kiln inspect: JSON template");
    if let Some(d) = &template.description {
        output.raw("Description:\n");
        output.raw(d);
        output.raw("");
    }
    let required: Vec<_> = template
        .variables
        .iter()
        .filter(|v| v.default.is_none())
        .collect();
    let optional: Vec<_> = template
        .variables
        .iter()
        .filter(|v| v.default.is_some())
        .collect();
    if !required.is_empty() {
        output.raw("Required variables:\n");
        for v in &required {
            output.raw(&format!("  {}", v.name.value));
            output.machine("", "template-variable", &[&v.name.value, "", "1"]);
        }
        output.raw("");
    }
    output.raw("Optional variables and their defaults:\n");
    if optional.is_empty() {
        output.raw("  <No optional variables>");
    }
    let width = optional
        .iter()
        .map(|v| v.name.value.len())
        .max()
        .unwrap_or(0);
    for v in &optional {
        let val = if sensitive.contains(v.name.value.as_str()) {
            "<sensitive>".to_string()
        } else {
            v.default.clone().unwrap_or_default()
        };
        output.raw(&format!("  {:width$} = {val}", v.name.value));
        output.machine("", "template-variable", &[&v.name.value, &val, "0"]);
    }
    output.raw("\nBuilders:\n");
    for b in &template.builders {
        if b.name.value == b.type_name.value {
            output.raw(&format!("  {}", b.name.value));
        } else {
            output.raw(&format!("  {:<20} ({})", b.name.value, b.type_name.value));
        }
        output.machine("", "template-builder", &[&b.name.value, &b.type_name.value]);
    }
    output.raw("\nProvisioners:\n");
    if template.provisioners.is_empty() {
        output.raw("  <No provisioners>");
    }
    for p in &template.provisioners {
        output.raw(&format!("  {}", p.type_name.value));
        output.machine("", "template-provisioner", &[&p.type_name.value]);
    }
    output.raw("\nPost-processors:\n");
    if template.post_processors.is_empty() {
        output.raw("  <No post-processors>");
    }
    for (i, chain) in template.post_processors.iter().enumerate() {
        let names: Vec<String> = chain
            .iter()
            .map(|p| match &p.name {
                Some(n) => format!("{} ({})", p.type_name.value, n.value),
                None => p.type_name.value.clone(),
            })
            .collect();
        output.raw(&format!("  {i}: {}", names.join(" -> ")));
    }
    output.raw(
        "\nNote: build names that use user variables or functions such as `timestamp` are\n\
         shown raw here; they are rendered when the build runs.",
    );
    0
}

fn console(output: &Output, common: &Common) -> u8 {
    let (dir, vars) = match &common.template {
        Some(_) => match load(output, common) {
            Some((t, v)) => (t.dir.clone(), v),
            None => return 1,
        },
        None => (
            std::env::current_dir().unwrap_or_default(),
            Variables::default(),
        ),
    };
    let mut ctx = kiln_template::Context::new(dir);
    ctx.user_vars = Arc::new(vars.values.clone());
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" {
            break;
        }
        match kiln_template::interp::render(line, &ctx) {
            Ok(s) => output.raw(&s),
            Err(e) => output.error(&format!("error: {e}")),
        }
    }
    0
}

/// `kiln fix`: the fixed template on standard output, what changed on
/// standard error.
fn fix(output: &Output, path: &Path, validate: bool) -> u8 {
    let src = match kiln_template::template::read_source(path) {
        Ok(s) => s,
        Err(d) => {
            print_diags(output, d);
            return 1;
        }
    };
    let fixed = match kiln_fix::fix_source(src.clone()) {
        Ok((f, dups)) => {
            // As Packer, the last value of a duplicate key is kept.
            for d in &dups.0 {
                output.error(&format!(
                    "Warning: {d}\n  help: its last value is kept (as Packer does); kiln validate refuses duplicate keys"
                ));
            }
            f
        }
        Err(kiln_fix::FixError::Parse(d)) => {
            print_diags(output, d);
            return 1;
        }
        Err(kiln_fix::FixError::Fixer { fixer, diag }) => {
            output.error(&format!(
                "The template cannot be fixed: Packer's `{fixer}` fixer cannot work on it."
            ));
            print_diags(output, diag.into());
            return 1;
        }
    };
    let text = kiln_fix::to_text(&fixed.root, &kiln_fix::Indent::detect(&src.text));
    output.raw(text.strip_suffix('\n').unwrap_or(&text));
    // What changed, once per key, in file order.
    let notes = kiln_fix::notes_of(&fixed, &src, String::new());
    for note in notes.by_key.values() {
        let pos = kiln_template::Pos::of_offset(&src.text, note.key_offset);
        output.error(&format!("{}:{pos}: {}", path.display(), note.message));
    }
    if validate {
        let fixed_src = Arc::new(Source {
            path: format!("{} (fixed)", path.display()).into(),
            text,
        });
        if let Err(d) = kiln_template::template::parse(fixed_src) {
            output.error(
                "The fixed template is not valid (its problems were in the original already; -validate=false skips this check):\n",
            );
            print_diags(output, d);
            return 1;
        }
    }
    0
}

/// `-on-error=ask`: ask on the terminal.
struct TerminalAsker {
    output: Output,
}

impl Asker for TerminalAsker {
    fn ask(&self, build: &str, step: &str, error: &str) -> AskAnswer {
        tokio::task::block_in_place(|| loop {
            self.output.error(&format!(
                "==> {build}: Step \"{step}\" failed: {error}\n==> {build}: [c] Clean up and exit, [a] abort without cleanup, or [r] retry step (build may fail even if retry succeeds)?"
            ));
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => return AskAnswer::Cleanup,
                Ok(_) => {}
            }
            match line.trim() {
                "c" | "C" => return AskAnswer::Cleanup,
                "a" | "A" => return AskAnswer::Abort,
                "r" | "R" => return AskAnswer::Retry,
                _ => continue,
            }
        })
    }
}

async fn build_cmd(output: &Output, b: BuildArgs) -> u8 {
    let Some((template, vars)) = load(output, &b.common) else {
        return 1;
    };
    let (prepared, warnings) = build::prepare_with_warnings(
        &template,
        &vars,
        &registry(),
        &PrepareOptions {
            no_cache: b.no_cache,
            cache_max_age: b.cache_max_age,
            ..prepare_opts(&b.common, b.force)
        },
    );
    print_warning_diags(output, warnings);
    let builds = match prepared {
        Ok(bs) => bs,
        Err(d) => {
            print_diags(output, d);
            return 1;
        }
    };
    let on_error = match b.on_error.as_str() {
        "abort" => OnError::Abort,
        "ask" => OnError::Ask,
        _ => OnError::Cleanup,
    };
    let cancel = CancellationToken::new();
    let abandon = CancellationToken::new();
    crate::signals::install(output.clone(), cancel.clone(), abandon.clone());
    let opts = RunOptions {
        output: output.clone(),
        parallel: b.parallel_builds,
        on_error,
        asker: Some(Arc::new(TerminalAsker {
            output: output.clone(),
        })),
        cancel: cancel.clone(),
        abandon,
    };
    let started = std::time::Instant::now();
    let outcomes = build::run_builds(builds, &opts).await;
    build::print_summary(output, &outcomes, started.elapsed());
    if cancel.is_cancelled() {
        output.error("Cleanly cancelled builds after being interrupted.");
        return 1;
    }
    if outcomes.iter().any(|o| o.result.is_err()) {
        1
    } else {
        0
    }
}
