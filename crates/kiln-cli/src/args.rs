//! Command-line flags, as Packer 1.6.6 spells them.
//!
//! Packer uses Go's `flag` package: long flags take one dash (`-var`,
//! `-only=a,b`), and two dashes work too. clap wants two, so [`normalize`]
//! rewrites known single-dash long flags before clap sees them.
use clap::{Arg, ArgAction, ArgMatches, Command};
use kiln_template::VarSource;
use std::path::PathBuf;

/// Long flags accepted with a single dash.
const LONG_FLAGS: &[&str] = &[
    "var",
    "var-file",
    "only",
    "except",
    "force",
    "no-cache",
    "cache-max-age",
    "on-error",
    "parallel-builds",
    "parallel",
    "color",
    "timestamp-ui",
    "syntax-only",
    "validate",
    "machine-readable",
    "max-age",
    "max-size",
    "all",
    "help",
    "version",
];

/// Rewrite `-flag` to `--flag` for known long flags, and pull out the
/// global `-machine-readable` wherever it is (Packer accepts it anywhere).
pub fn normalize(argv: Vec<String>) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(argv.len());
    let mut machine = false;
    let mut after_dashdash = false;
    for (i, a) in argv.into_iter().enumerate() {
        if i == 0 || after_dashdash {
            out.push(a);
            continue;
        }
        if a == "--" {
            after_dashdash = true;
            out.push(a);
            continue;
        }
        let name = a.trim_start_matches('-');
        let bare = name.split('=').next().unwrap_or("");
        if (a.starts_with('-')) && bare == "machine-readable" {
            machine = true;
            continue;
        }
        if a.starts_with('-') && !a.starts_with("--") && LONG_FLAGS.contains(&bare) {
            out.push(format!("-{a}"));
        } else {
            out.push(a);
        }
    }
    (out, machine)
}

#[derive(Debug, Clone)]
pub enum Cli {
    Build(BuildArgs),
    Validate {
        common: Common,
        syntax_only: bool,
    },
    Inspect {
        template: PathBuf,
    },
    Console {
        common: Common,
    },
    Fix {
        template: PathBuf,
        validate: bool,
    },
    /// `kiln cache list`.
    CacheList,
    /// `kiln cache prune`.
    CachePrune {
        max_age: Option<String>,
        max_size: Option<String>,
        all: bool,
    },
    Version,
}

/// Flags shared by build, validate and console.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub template: Option<PathBuf>,
    /// `-var` and `-var-file`, in command-line order.
    pub vars: Vec<VarSource>,
    pub only: Vec<String>,
    pub except: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BuildArgs {
    pub common: Common,
    pub force: bool,
    /// `-no-cache`: no provisioning cache for this build.
    pub no_cache: bool,
    /// `-cache-max-age`: states older than this are not reused.
    pub cache_max_age: Option<std::time::Duration>,
    pub on_error: String,
    pub parallel_builds: usize,
    pub color: bool,
    pub timestamp_ui: bool,
}

fn bool_flag(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .help(help)
        .num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .value_parser(clap::builder::BoolishValueParser::new())
}

fn var_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("var")
            .long("var")
            .value_name("KEY=VALUE")
            .action(ArgAction::Append)
            .help("Set a template variable (repeatable; applied in command-line order with -var-file, later wins)"),
    )
    .arg(
        Arg::new("var-file")
            .long("var-file")
            .value_name("FILE")
            .action(ArgAction::Append)
            .help("JSON file of variable values (repeatable; applied in command-line order with -var)"),
    )
}

fn select_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("only")
            .long("only")
            .value_name("NAMES")
            .value_delimiter(',')
            .action(ArgAction::Append)
            .help("Run only the named builds (comma-separated; `*` globs)"),
    )
    .arg(
        Arg::new("except")
            .long("except")
            .value_name("NAMES")
            .value_delimiter(',')
            .action(ArgAction::Append)
            .help("Skip the named builds and post-processors (comma-separated; `*` globs)"),
    )
}

fn template_arg(required: bool) -> Arg {
    Arg::new("template")
        .value_name("TEMPLATE")
        .required(required)
        .value_parser(clap::value_parser!(PathBuf))
        .help("Path to a Packer JSON template")
}

pub fn command() -> Command {
    Command::new("kiln")
        .about("Build identical machine images from Packer JSON templates")
        .long_about(
            "kiln builds machine images from Packer 1.6.6 legacy JSON templates, unchanged.\n\
             Flags are Packer's: single or double dash, `-flag=value` or `-flag value`.\n\
             `-machine-readable` may appear anywhere.",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .disable_version_flag(true)
        .subcommand(
            select_args(var_args(Command::new("build")))
                .about("Build images from a template")
                .long_about(
                    "Build images from a template.\n\n\
                     Every resource a build creates is cleaned up in reverse order when the build \
                     ends, fails, or is interrupted (Ctrl-C or SIGTERM). Press Ctrl-C a second time \
                     to abandon cleanup; kiln then lists what may be left behind.\n\n\
                     Exit status: 0 when every build succeeded, 1 otherwise.",
                )
                .arg(bool_flag("force", "Overwrite existing output (e.g. output_directory)"))
                .arg(bool_flag(
                    "no-cache",
                    "Run every provisioner: neither reuse nor save the provisioning cache's states \
                     (qemu builder; the cache is in KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, \
                     else ~/.cache/kiln; see `kiln cache`)",
                ))
                .arg(
                    Arg::new("cache-max-age")
                        .long("cache-max-age")
                        .value_name("DURATION")
                        .value_parser(|s: &str| kiln_cache::parse_age(s))
                        .help("Do not reuse provisioning cache states older than this (a Go duration such as 90m; default KILN_CACHE_MAX_AGE, else 24h)"),
                )
                .arg(
                    Arg::new("on-error")
                        .long("on-error")
                        .value_name("cleanup|abort|ask")
                        .default_value("cleanup")
                        .value_parser(["cleanup", "abort", "ask"])
                        .help("What to do when a build step fails: clean up (default), abort leaving everything in place, or ask"),
                )
                .arg(
                    Arg::new("parallel-builds")
                        .long("parallel-builds")
                        .value_name("N")
                        .default_value("0")
                        .value_parser(clap::value_parser!(usize))
                        .help("Run at most N builds at once (0 = no limit)"),
                )
                .arg(
                    bool_flag("parallel", "Deprecated: -parallel=false is -parallel-builds=1")
                        .hide(true),
                )
                .arg(bool_flag("color", "Colour the output (default: when stdout is a terminal and NO_COLOR is unset)"))
                .arg(bool_flag("timestamp-ui", "Prefix every line with a UTC timestamp"))
                .arg(template_arg(true)),
        )
        .subcommand(
            select_args(var_args(Command::new("validate")))
                .about("Check that a template is valid")
                .long_about(
                    "Check that a template is valid: syntax, keys, types, variables, and every \
                     component's configuration. Every problem is reported at once, each with \
                     file:line:col. Exit status 0 when valid, 1 otherwise.",
                )
                .arg(bool_flag("syntax-only", "Only parse the template: JSON syntax and the template's structure (root keys, variables, builder/provisioner/post-processor definitions), not variable values nor the components' keys and values"))
                .arg(template_arg(true)),
        )
        .subcommand(
            Command::new("inspect")
                .about("Show the variables, builds, provisioners and post-processors of a template")
                .arg(template_arg(true)),
        )
        .subcommand(
            var_args(Command::new("console"))
                .about("Evaluate interpolation expressions, e.g. {{user `name`}}")
                .long_about(
                    "Evaluate interpolation expressions against a template's variables. Reads one \
                     expression per line from standard input (e.g. `{{user \"name\"}}` or \
                     `{{timestamp}}`) and prints each result.",
                )
                .arg(template_arg(false)),
        )
        .subcommand(
            Command::new("fix")
                .about("Rewrite a template's keys that older Packers used (Packer's fixers) to standard output")
                .long_about(fix_help())
                .arg(bool_flag("validate", "Check the fixed template's structure too (default true); exit 1 when it is not valid"))
                .arg(template_arg(true)),
        )
        .subcommand(
            Command::new("cache")
                .about("List or prune the provisioning cache")
                .long_about(
                    "List or prune kiln's provisioning cache: the machine states saved after each \
                     provisioning step (the disk, and the memory marked `(memory)`, which lets a \
                     resumed build continue the machine instead of booting it; \
                     KILN_CACHE_MEMORY=off saves disks only), in KILN_CACHE_DIR (default \
                     $XDG_CACHE_HOME/kiln, else ~/.cache/kiln). Bounded by KILN_CACHE_MAX_SIZE \
                     (20G) and KILN_CACHE_MAX_AGE (24h). See docs/cache.md.",
                )
                .subcommand_required(true)
                .subcommand(Command::new("list").about(
                    "What is cached: for which template, build and provisioning step, its size and age",
                ))
                .subcommand(
                    Command::new("prune")
                        .about("Remove old states, then the oldest until the cache fits its size limit")
                        .arg(
                            Arg::new("max-age")
                                .long("max-age")
                                .value_name("DURATION")
                                .help("Remove states older than this (e.g. 24h, 90m; default KILN_CACHE_MAX_AGE or 24h)"),
                        )
                        .arg(
                            Arg::new("max-size")
                                .long("max-size")
                                .value_name("SIZE")
                                .help("Then remove the oldest states until the cache is at most this size (e.g. 20G; default KILN_CACHE_MAX_SIZE or 20G)"),
                        )
                        .arg(bool_flag("all", "Remove every state")),
                ),
        )
        .subcommand(Command::new("version").about("Print kiln's version"))
}

/// `kiln fix --help`: what it does, how it differs from `packer fix`, and
/// every fixer in the order they run. Wrapped here (at 78 columns, the
/// fixers' descriptions indented under their names) so that clap, which
/// wraps only lines longer than the terminal, keeps the layout.
fn fix_help() -> String {
    let paragraphs = [
        "Reads a Packer JSON template, rewrites the keys that Packer 1.6.6 no longer \
         accepts, those that its `packer fix` rewrites (`iso_checksum_type` and \
         `iso_checksum_url` folded into `iso_checksum`, `ssh_wait_timeout`, `ssh_key_path`, \
         `ssh_disable_agent`, the Amazon keys, ...), and writes the fixed template to \
         standard output. The file itself is not changed: redirect the output to keep it \
         (`kiln fix old.json > new.json`). What each fixer changed is listed on standard \
         error, with file:line:col.",
        "Unlike `packer fix`, the template keeps its shape: keys stay in the order of the \
         file (a renamed key takes the old key's place), comment keys (`_comment`, any key \
         starting with `_`) stay where they were, and numbers are written as they were. \
         The layout is Packer's (one member or element per line) with the file's own \
         indentation (the white space of its first indented line; two spaces, as Packer, \
         for a file on one line).",
        "`kiln validate` and `kiln build` report each key that a fixer would rewrite at its \
         position, with what it becomes, and suggest `kiln fix`.",
        "Exit status: 0 when the template was fixed (also when nothing needed fixing); 1 \
         when it cannot be read or parsed, when a fixer cannot work on it (where Packer's \
         fails or crashes), or when -validate is on and the fixed template's structure is \
         not valid.",
        "Fixers, in the order they run (Packer 1.6.6's names and order):",
    ];
    let mut s = String::new();
    for p in paragraphs {
        s.push_str(&wrap(p, 78, ""));
        s.push('\n');
    }
    for f in kiln_fix::FIXERS {
        s.push_str(&format!("\n  {}\n", f.name));
        s.push_str(&wrap(f.synopsis, 78, "      "));
    }
    s
}

/// `text` in lines of at most `width` columns (words are not split), each
/// starting with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `-var` and `-var-file` merged in command-line order.
fn var_sources(m: &ArgMatches) -> Result<Vec<VarSource>, clap::Error> {
    let mut indexed: Vec<(usize, VarSource)> = Vec::new();
    if let (Some(vals), Some(idx)) = (m.get_many::<String>("var"), m.indices_of("var")) {
        for (v, i) in vals.zip(idx) {
            let src = kiln_template::vars::parse_var_flag(v).map_err(|e| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("-var {v}: {e}\n"),
                )
            })?;
            indexed.push((i, src));
        }
    }
    if let (Some(vals), Some(idx)) = (m.get_many::<String>("var-file"), m.indices_of("var-file")) {
        for (v, i) in vals.zip(idx) {
            indexed.push((i, VarSource::File(PathBuf::from(v))));
        }
    }
    indexed.sort_by_key(|(i, _)| *i);
    Ok(indexed.into_iter().map(|(_, s)| s).collect())
}

fn strings(m: &ArgMatches, id: &str) -> Vec<String> {
    m.get_many::<String>(id)
        .map(|v| v.filter(|s| !s.is_empty()).cloned().collect())
        .unwrap_or_default()
}

fn flag(m: &ArgMatches, id: &str) -> Option<bool> {
    m.get_one::<bool>(id).copied()
}

fn common(m: &ArgMatches, with_select: bool) -> Result<Common, clap::Error> {
    Ok(Common {
        template: m.get_one::<PathBuf>("template").cloned(),
        vars: var_sources(m)?,
        only: if with_select {
            strings(m, "only")
        } else {
            vec![]
        },
        except: if with_select {
            strings(m, "except")
        } else {
            vec![]
        },
    })
}

pub fn parse(argv: Vec<String>) -> Result<Cli, clap::Error> {
    let m = command().try_get_matches_from(argv)?;
    Ok(match m.subcommand() {
        Some(("build", m)) => {
            let mut parallel_builds = *m.get_one::<usize>("parallel-builds").unwrap_or(&0);
            if flag(m, "parallel") == Some(false) {
                parallel_builds = 1;
            }
            let color = flag(m, "color").unwrap_or(true);
            Cli::Build(BuildArgs {
                common: common(m, true)?,
                force: flag(m, "force").unwrap_or(false),
                no_cache: flag(m, "no-cache").unwrap_or(false),
                cache_max_age: m.get_one::<std::time::Duration>("cache-max-age").copied(),
                on_error: m
                    .get_one::<String>("on-error")
                    .cloned()
                    .unwrap_or_else(|| "cleanup".into()),
                parallel_builds,
                color,
                timestamp_ui: flag(m, "timestamp-ui").unwrap_or(false),
            })
        }
        Some(("validate", m)) => Cli::Validate {
            common: common(m, true)?,
            syntax_only: flag(m, "syntax-only").unwrap_or(false),
        },
        Some(("inspect", m)) => Cli::Inspect {
            template: m
                .get_one::<PathBuf>("template")
                .cloned()
                .unwrap_or_default(),
        },
        Some(("console", m)) => Cli::Console {
            common: common(m, false)?,
        },
        Some(("fix", m)) => Cli::Fix {
            template: m
                .get_one::<PathBuf>("template")
                .cloned()
                .unwrap_or_default(),
            validate: flag(m, "validate").unwrap_or(true),
        },
        Some(("cache", m)) => match m.subcommand() {
            Some(("prune", m)) => Cli::CachePrune {
                max_age: m.get_one::<String>("max-age").cloned(),
                max_size: m.get_one::<String>("max-size").cloned(),
                all: flag(m, "all").unwrap_or(false),
            },
            _ => Cli::CacheList,
        },
        _ => Cli::Version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn single_dash_long_flags() {
        let (a, m) = normalize(argv(
            "kiln build -var a=1 -only=x,y -machine-readable t.json",
        ));
        assert!(m);
        assert_eq!(a, argv("kiln build --var a=1 --only=x,y t.json"));
    }

    #[test]
    fn vars_in_command_line_order() {
        let (a, _) = normalize(argv(
            "kiln build -var-file f1.json -var a=1 -var-file f2.json -var b=2=3 t.json",
        ));
        let Cli::Build(b) = parse(a).unwrap() else {
            panic!("not build")
        };
        assert_eq!(
            b.common.vars,
            vec![
                VarSource::File("f1.json".into()),
                VarSource::Pair {
                    name: "a".into(),
                    value: "1".into()
                },
                VarSource::File("f2.json".into()),
                VarSource::Pair {
                    name: "b".into(),
                    value: "2=3".into()
                },
            ]
        );
    }

    #[test]
    fn build_flags() {
        let (a, _) = normalize(argv(
            "kiln build -force -on-error=abort -parallel-builds 2 -color=false -only a,b t.json",
        ));
        let Cli::Build(b) = parse(a).unwrap() else {
            panic!("not build")
        };
        assert!(b.force);
        assert_eq!(b.on_error, "abort");
        assert_eq!(b.parallel_builds, 2);
        assert!(!b.color);
        assert_eq!(b.common.only, vec!["a", "b"]);
    }

    #[test]
    fn bad_on_error_is_rejected() {
        let (a, _) = normalize(argv("kiln build -on-error=explode t.json"));
        assert!(parse(a).is_err());
    }

    #[test]
    fn fix_flags() {
        let (a, _) = normalize(argv("kiln fix -validate=false t.json"));
        let Cli::Fix { template, validate } = parse(a).unwrap() else {
            panic!("not fix")
        };
        assert_eq!(template, PathBuf::from("t.json"));
        assert!(!validate);
        let (a, _) = normalize(argv("kiln fix t.json"));
        assert!(matches!(parse(a).unwrap(), Cli::Fix { validate: true, .. }));
    }

    #[test]
    fn cache_commands() {
        assert!(matches!(
            parse(argv("kiln cache list")).unwrap(),
            Cli::CacheList
        ));
        let (a, _) = normalize(argv("kiln cache prune -max-age=2h -max-size 5G"));
        match parse(a).unwrap() {
            Cli::CachePrune {
                max_age,
                max_size,
                all,
            } => {
                assert_eq!(max_age.as_deref(), Some("2h"));
                assert_eq!(max_size.as_deref(), Some("5G"));
                assert!(!all);
            }
            c => panic!("{c:?}"),
        }
        let (a, _) = normalize(argv("kiln cache prune -all"));
        assert!(matches!(
            parse(a).unwrap(),
            Cli::CachePrune { all: true, .. }
        ));
        assert!(parse(argv("kiln cache")).is_err());
    }

    #[test]
    fn deprecated_parallel_false() {
        let (a, _) = normalize(argv("kiln build -parallel=false t.json"));
        let Cli::Build(b) = parse(a).unwrap() else {
            panic!("not build")
        };
        assert_eq!(b.parallel_builds, 1);
    }
}
