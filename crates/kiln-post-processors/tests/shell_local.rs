mod common;
use common::*;
use kiln_core::{BuildError, PostProcessor};
use kiln_post_processors::shell_local::{go_sprintf, Config, ShellLocal};

fn config(execute_command: &[&str]) -> Config {
    Config {
        inline: None,
        scripts: vec![],
        vars: vec![],
        env_var_format: "%s='%s' ".into(),
        execute_command: execute_command.iter().map(|s| s.to_string()).collect(),
        inline_shebang: "/bin/sh -e".into(),
        only_on: vec![],
        valid_exit_codes: vec![],
        tempfile_extension: String::new(),
    }
}

async fn run(env: &Env, c: Config) -> Result<kiln_core::PostProcessed, BuildError> {
    let mut c = c;
    if c.inline.is_none() && c.scripts.is_empty() {
        c.inline = Some(vec!["true".into()]);
    }
    ShellLocal { config: c }
        .post_process(&env.ctx(), artifact(vec![env.path("in.img")]))
        .await
}

#[tokio::test]
async fn output_is_streamed_by_line_and_input_is_kept() {
    let env = Env::new("web", "qemu");
    let out = run(
        &env,
        config(&[
            "/bin/sh",
            "-c",
            "echo one; echo two >&2; printf 'x\\rthree  \\n'; printf 'partial'",
        ]),
    )
    .await
    .unwrap();
    assert!(out.keep && out.force_keep);
    let a = out.artifact.unwrap();
    assert_eq!(a.builder_id(), "kiln.test");
    let text = env.captured();
    assert!(
        text.contains("==> web: Running local shell script: "),
        "{text}"
    );
    assert!(text.contains("    web: one\n"), "{text}");
    assert!(text.contains("==> web: two\n"), "{text}");
    assert!(text.contains("    web: three\n"), "{text}");
    assert!(text.contains("    web: partial\n"), "{text}");
}

#[tokio::test]
async fn exit_codes_are_checked_against_valid_exit_codes() {
    let env = Env::new("b", "null");
    let err = run(&env, config(&["/bin/sh", "-c", "exit 3"]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("non-zero exit status: 3"), "{err}");
    assert!(err.contains("[0]"), "{err}");

    let mut c = config(&["/bin/sh", "-c", "exit 3"]);
    c.valid_exit_codes = vec![0, 3];
    run(&env, c).await.unwrap();

    let mut c = config(&["/bin/sh", "-c", "exit 0"]);
    c.valid_exit_codes = vec![2];
    let err = run(&env, c).await.err().unwrap().to_string();
    assert!(err.contains("non-zero exit status: 0"), "{err}");
}

#[tokio::test]
async fn a_missing_program_is_an_error() {
    let env = Env::new("b", "null");
    let err = run(&env, config(&["/nonexistent/kiln-test-program"]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Error executing script"), "{err}");
    assert!(err.contains("/nonexistent/kiln-test-program"), "{err}");
}

#[tokio::test]
async fn only_on_other_os_skips() {
    let env = Env::new("b", "null");
    let mut c = config(&["/bin/sh", "-c", "exit 1"]);
    c.only_on = vec!["windows".into()];
    run(&env, c).await.unwrap();
    assert!(env
        .captured()
        .contains("Skipping shell-local due to runtime OS"));
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z'
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn cancel_kills_the_command_and_its_children() {
    let env = Env::new("b", "null");
    let pids = env.path("pids");
    // The shell ignores SIGTERM, so the grace period runs out and SIGKILL
    // is needed; its background child is in the same group.
    let script = format!("trap '' TERM; sleep 1000 & echo $$ $! > {}; wait", q(&pids));
    let argv = ["/bin/sh".to_string(), "-c".to_string(), script];
    let cancel = env.build.cancel.clone();
    let pids2 = pids.clone();
    let canceller = tokio::spawn(async move {
        while !pids2.exists()
            || std::fs::read_to_string(&pids2)
                .unwrap()
                .split_whitespace()
                .count()
                < 2
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        cancel.cancel();
    });
    let r = kiln_core::local::run_streaming(&argv, &[], &*env.build.ui, &env.build.cancel).await;
    canceller.await.unwrap();
    assert!(matches!(r, Err(kiln_core::local::ExecError::Cancelled)));
    let text = std::fs::read_to_string(&pids).unwrap();
    for pid in text.split_whitespace() {
        let pid: i32 = pid.parse().unwrap();
        // Killed and reaped (the shell by us, sleep by init once orphaned):
        // wait for the kernel to finish tearing it down.
        let mut tries = 0;
        while alive(pid) && tries < 500 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            tries += 1;
        }
        assert!(!alive(pid), "process {pid} survived the cancel");
    }
}

#[test]
fn env_var_format_is_go_sprintf() {
    assert_eq!(go_sprintf("%s='%s' ", &["A", "b"]), "A='b' ");
    assert_eq!(go_sprintf("set %s=%s && ", &["A", "b"]), "set A=b && ");
    assert_eq!(go_sprintf("%s", &["A", "b"]), "A%!(EXTRA string=b)");
    assert_eq!(go_sprintf("%s=%s %s", &["A", "b"]), "A=b %!s(MISSING)");
    assert_eq!(go_sprintf("100%% %v", &["x"]), "100% x");
}

// The following need the template engine ({{.Vars}}, {{.Script}}).

#[tokio::test]
async fn inline_runs_with_packer_variables_and_environment_vars() {
    let env = Env::new("web", "qemu");
    let mut c = config(&["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]);
    c.inline = Some(vec![
        "echo name=$PACKER_BUILD_NAME type=$PACKER_BUILDER_TYPE".into(),
        "echo greeting=\"$GREETING\"".into(),
        "echo run=${PACKER_RUN_UUID:+set}".into(),
        "echo shebang=$(head -n1 $0)".into(),
    ]);
    c.vars = vec!["GREETING=it's me".into()];
    run(&env, c).await.unwrap();
    let text = env.captured();
    assert!(text.contains("    web: name=web type=qemu\n"), "{text}");
    assert!(text.contains("    web: greeting=it's me\n"), "{text}");
    assert!(text.contains("    web: run=set\n"), "{text}");
    assert!(text.contains("    web: shebang=#!/bin/sh -e\n"), "{text}");
    // The inline script is removed afterwards.
    let left: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("packer-shell"))
        .collect();
    assert!(left.is_empty());
}

#[tokio::test]
async fn scripts_run_in_order_with_absolute_paths() {
    let env = Env::new("b", "null");
    let s1 = env.write("s1.sh", b"echo first $0\n");
    let s2 = env.write("s2.sh", b"echo second\nexit 4\n");
    let (pp, diags) = decode_pp(
        "shell-local",
        &format!(
            r#"{{"type": "shell-local", "scripts": ["{}", "{}"], "valid_exit_codes": [0, 4],
                "execute_command": ["/bin/sh", "-c", "{{{{.Vars}}}} /bin/sh {{{{.Script}}}}"]}}"#,
            s1.display(),
            s2.display()
        ),
        false,
    );
    assert_eq!(diags, "");
    pp.unwrap()
        .post_process(&env.ctx(), artifact(vec![]))
        .await
        .unwrap();
    let text = env.captured();
    let first = text.find(&format!("first {}", s1.display())).expect(&text);
    let second = text.find("second").expect(&text);
    assert!(first < second);
}

#[tokio::test]
async fn single_string_execute_command_runs_with_sh_c() {
    let env = Env::new("b", "null");
    let (pp, diags) = decode_pp(
        "shell-local",
        r#"{"type": "shell-local", "inline": ["echo hi"], "execute_command": "echo via-sh-c {{.Script}} | sed s/via/VIA/"}"#,
        false,
    );
    assert_eq!(diags, "");
    pp.unwrap()
        .post_process(&env.ctx(), artifact(vec![]))
        .await
        .unwrap();
    assert!(env.captured().contains("VIA-sh-c /"), "{}", env.captured());
}
