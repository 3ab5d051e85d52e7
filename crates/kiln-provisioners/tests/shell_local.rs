//! The shell-local provisioner: runs on the machine running kiln.
mod common;
use common::*;
use kiln_core::{ProvisionCtx, Provisioner};

async fn run_local(json: &str) -> (Result<(), String>, String) {
    let work = tempfile::tempdir().unwrap();
    let (out, mut ctx) = kiln_testkit::test_ctx("t", work.path());
    ctx.build_type = "null".into();
    let p = match decode(shell_local(), json) {
        Ok(p) => p,
        Err(e) => return (Err(e), String::new()),
    };
    let pctx = ProvisionCtx {
        build: &ctx,
        interp: interp(),
    };
    let r: Result<(), String> = Provisioner::provision(&*p, &pctx, None)
        .await
        .map_err(|e| e.to_string());
    (r, out.captured())
}

#[tokio::test]
async fn command_inline_and_environment() {
    let (r, out) = run_local(
        r#"{"command": "echo \"local $PACKER_BUILD_NAME $PACKER_BUILDER_TYPE V=$V\"; echo err >&2",
            "environment_vars": ["V=it's"]}"#,
    )
    .await;
    r.unwrap();
    assert!(out.contains("==> t: Running local shell script: "), "{out}");
    assert!(out.contains("    t: local t null V=it's\n"), "{out}");
    assert!(out.contains("==> t: err\n"), "{out}");

    let (r, out) = run_local(
        r#"{"inline": ["echo one", "echo \"two $0\""], "inline_shebang": "/bin/bash -e",
            "tempfile_extension": ".sh"}"#,
    )
    .await;
    r.unwrap();
    assert!(out.contains("    t: one\n"), "{out}");
    assert!(out.contains(".sh\n"), "{out}");
}

#[tokio::test]
async fn scripts_execute_command_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = dir.path().join("s1.sh");
    std::fs::write(&s1, "#!/bin/sh\necho \"s1 $1 X=$X\"\nexit 4\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&s1, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (r, _out) = run_local(&format!(r#"{{"script": {}}}"#, js(&p(&s1)))).await;
    assert_eq!(
        r.unwrap_err(),
        "Script exited with non-zero exit status: 4. Allowed exit codes are: [0]"
    );
    let (r, out) = run_local(&format!(
        r#"{{"scripts": [{}], "valid_exit_codes": [4], "environment_vars": ["X=y"],
             "execute_command": ["/bin/bash", "-c", "{{{{.Vars}}}} bash {{{{.Script}}}} arg1"]}}"#,
        js(&p(&s1))
    ))
    .await;
    r.unwrap();
    assert!(out.contains("    t: s1 arg1 X=y\n"), "{out}");
    // env_var_format.
    let (r, out) = run_local(
        r#"{"inline": ["echo \"[$A]\""], "environment_vars": ["A=b"], "env_var_format": "export %s=%s; ",
            "execute_command": ["/bin/sh", "-c", "{{.Vars}} /bin/sh {{.Script}}"]}"#,
    )
    .await;
    r.unwrap();
    assert!(out.contains("    t: [b]\n"), "{out}");
}

#[tokio::test]
async fn only_on_and_decode_errors() {
    let (r, out) = run_local(r#"{"inline": ["echo ran"], "only_on": ["darwin"]}"#).await;
    r.unwrap();
    assert!(
        out.contains("==> t: Skipping shell-local due to runtime OS"),
        "{out}"
    );
    assert!(!out.contains("ran"));
    let (r, out) = run_local(r#"{"inline": ["echo ran"], "only_on": ["linux"]}"#).await;
    r.unwrap();
    assert!(out.contains("    t: ran\n"), "{out}");

    let e = decode(shell_local(), "{}").err().unwrap();
    assert!(
        e.contains("Command, Inline, Script and Scripts options cannot all be empty."),
        "{e}"
    );
    let e = decode(shell_local(), r#"{"command": "x", "inline": ["y"]}"#)
        .err()
        .unwrap();
    assert!(
        e.contains("You may only specify one of the following options"),
        "{e}"
    );
    let e = decode(shell_local(), r#"{"command": "x", "only_on": ["plan9"]}"#)
        .err()
        .unwrap();
    assert!(
        e.contains("Invalid OS specified in only_on: 'plan9'"),
        "{e}"
    );
    let e = decode(shell_local(), r#"{"script": "/nonexistent.sh"}"#)
        .err()
        .unwrap();
    assert!(e.contains("Bad script '/nonexistent.sh'"), "{e}");
    let e = decode(
        shell_local(),
        r#"{"command": "x", "use_linux_pathing": true}"#,
    )
    .err()
    .unwrap();
    assert!(e.contains("use_linux_pathing"), "{e}");
}
