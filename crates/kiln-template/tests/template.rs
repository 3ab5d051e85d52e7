//! Table tests for kiln-template: JSON positions, template root checks,
//! weak typing, interpolation, variables and decoding.
use kiln_template::decode::Decoder;
use kiln_template::diag::{suggest, Diagnostics, Source};
use kiln_template::interp::{self, check_syntax, render, Context};
use kiln_template::json::{self, Value};
use kiln_template::template::{self, parse, Template, BUILDER_CORE_KEYS, PROVISIONER_CORE_KEYS};
use kiln_template::vars::{self, parse_var_flag, VarSource};
use std::collections::BTreeMap;
use std::sync::Arc;

fn src(text: &str) -> Arc<Source> {
    Arc::new(Source {
        path: "t.json".into(),
        text: text.to_string(),
    })
}

fn tpl(text: &str) -> Result<Template, Diagnostics> {
    parse(src(text))
}

fn errs(text: &str) -> String {
    match tpl(text) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(d) => d.to_string(),
    }
}

const SEED: &str = r#"{
    "builders": [
        {
            "flavor": "m1.small",
            "image_name": "image built by Packer",
            "source_image": "82b55c8c-cce1-4301-92c4-b005180531de",
            "ssh_username": "ubuntu",
            "use_floating_ip" : "true",
            "floating_ip_pool" : "nova",
            "type": "openstack",
            "security_groups" : "ssh"
        }
    ],
    "provisioners": [
        {
            "scripts": [
                "scripts/update.sh",
                "scripts/sudoers.sh",
                "scripts/compiler_tools.sh"
            ],
            "type": "shell",
            "execute_command": "sudo bash '{{.Path}}'"
        },
        {
            "destination": "/stash",
            "source": "./data/",
            "type": "file"
        }
    ]
}"#;

// ------------------------------------------------------------------ JSON

#[test]
fn json_positions() {
    let n = json::parse(src(
        "{\n  \"a\": [1, \"é\", {\"b\": null}],\n\t\"c\": true\n}",
    ))
    .unwrap();
    let obj = n.as_object().unwrap();
    assert_eq!(
        (obj[0].0.pos.line, obj[0].0.pos.col, obj[0].0.pos.offset),
        (2, 3, 4)
    );
    let a = n.get("a").unwrap();
    assert_eq!((a.pos.line, a.pos.col), (2, 8));
    let items = a.as_array().unwrap();
    assert_eq!((items[1].pos.line, items[1].pos.col), (2, 12));
    // col counts characters: `é` is 2 bytes but one column.
    assert_eq!((items[2].pos.line, items[2].pos.col), (2, 17));
    assert_eq!(items[2].pos.offset, 19);
    let c = &obj[1].0;
    assert_eq!((c.pos.line, c.pos.col), (3, 2));
    assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
    assert_eq!(items[0].value, Value::Number("1".into()));
    assert_eq!(n.kind(), "object");
    assert_eq!(
        n.to_json(),
        serde_json::json!({"a": [1, "é", {"b": null}], "c": true})
    );
}

#[test]
fn json_strings_and_escapes() {
    let n = json::parse(src(
        r#"["a\"b\\c\/d\b\f\n\r\t", "\u00e9\ud83d\ude00", "\ud800x"]"#,
    ))
    .unwrap();
    let items = n.as_array().unwrap();
    assert_eq!(items[0].as_str(), Some("a\"b\\c/d\u{8}\u{c}\n\r\t"));
    assert_eq!(items[1].as_str(), Some("é😀"));
    assert_eq!(items[2].as_str(), Some("\u{fffd}x"));
}

#[test]
fn json_syntax_errors_have_positions() {
    let cases: &[(&str, &str)] = &[
        ("", "t.json:1:1: unexpected end of input"),
        ("   \n  ", "t.json:2:3: unexpected end of input"),
        ("{", "t.json:1:2: unexpected end of input"),
        (
            "{\"a\" 1}",
            "t.json:1:6: unexpected character `1`, expected `:`",
        ),
        ("{\"a\": 1,}", "t.json:1:9: trailing comma"),
        ("[1,]", "t.json:1:4: trailing comma"),
        ("{\"a\": \"x}", "t.json:1:7: unterminated string"),
        ("{\"a\": \"x\ny\"}", "t.json:1:9: unterminated string"),
        ("[tru]", "t.json:1:2: invalid literal"),
        ("[01]", "t.json:1:2: invalid number: leading zeros"),
        ("[1.]", "t.json:1:2: invalid number"),
        ("[-]", "t.json:1:2: invalid number"),
        ("{'a': 1}", "t.json:1:2: unexpected character `'`"),
        (
            "{} x",
            "t.json:1:4: unexpected character `x`, expected end of input",
        ),
        ("[\"\\x\"]", "t.json:1:3: invalid escape sequence `\\x`"),
        ("[\"\\u12\"]", "t.json:1:5: invalid \\u escape"),
        ("[\"a\tb\"]", "t.json:1:4: invalid control character U+0009"),
    ];
    for (text, want) in cases {
        let e = json::parse(src(text)).unwrap_err().to_string();
        assert!(
            e.starts_with(want),
            "{text:?}: got\n{e}\nwant prefix {want:?}"
        );
    }
    // The excerpt shows the line and a caret under the column.
    let e = json::parse(src("{\n  \"a\": 1 2\n}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains(" 2 |   \"a\": 1 2\n   |          ^"), "{e}");
}

#[test]
fn json_duplicate_keys_all_reported() {
    let e = json::parse(src("{\"a\": 1, \"b\": {\"x\": 1, \"x\": 2}, \"a\": 3}")).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    let s = e.to_string();
    assert!(
        s.contains("t.json:1:24: duplicate key `x` (first at 1:16)"),
        "{s}"
    );
    assert!(
        s.contains("t.json:1:33: duplicate key `a` (first at 1:2)"),
        "{s}"
    );
}

#[test]
fn json_deep_nesting_is_an_error_not_a_crash() {
    let deep = "[".repeat(100_000);
    let e = json::parse(src(&deep)).unwrap_err().to_string();
    assert!(e.contains("nesting deeper than"), "{e}");
    let ok = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert!(json::parse(src(&ok)).is_ok());
}

// ------------------------------------------------------------------ template

#[test]
fn seed_template_parses() {
    let t = tpl(SEED).unwrap();
    assert_eq!(t.builders.len(), 1);
    assert_eq!(t.builders[0].type_name.value, "openstack");
    assert_eq!(t.builders[0].name.value, "openstack");
    assert_eq!(t.provisioners.len(), 2);
    assert_eq!(t.provisioners[0].type_name.value, "shell");
    assert_eq!(t.provisioners[1].type_name.value, "file");
    assert!(t.provisioners[0].applies_to("openstack"));
    assert!(t.post_processors.is_empty());
    assert!(t.path.is_absolute());
    assert_eq!(t.path.parent(), Some(t.dir.as_path()));

    // The shell provisioner's keys decode; `.Path` stays raw.
    let ctx = Context::new(t.dir.clone());
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&t.provisioners[0].config, &ctx, &mut diags);
    d.ignore(PROVISIONER_CORE_KEYS);
    let scripts = d.string_list("scripts").unwrap();
    let cmd = d.raw_string("execute_command").unwrap();
    d.finish();
    assert!(diags.is_empty(), "{diags}");
    assert_eq!(scripts.len(), 3);
    assert_eq!(cmd, "sudo bash '{{.Path}}'");
    assert_eq!(
        render(&cmd, &ctx.with("Path", "/tmp/s.sh")).unwrap(),
        "sudo bash '/tmp/s.sh'"
    );
}

#[test]
fn root_keys() {
    // Comments and the legacy keys Packer accepts.
    let t = tpl(
        r#"{"_comment": "hi", "description": "d", "min_packer_version": "1.5.0",
        "push": {}, "comments": [{"a": "b"}],
        "builders": [{"type": "null"}],
        "error-cleanup-provisioner": {"type": "shell-local", "inline": ["echo"]}}"#,
    )
    .unwrap();
    assert_eq!(t.description.as_deref(), Some("d"));
    assert_eq!(t.min_packer_version.as_deref(), Some("1.5.0"));
    assert_eq!(
        t.error_cleanup_provisioner.unwrap().type_name.value,
        "shell-local"
    );

    let table: &[(&str, &str)] = &[
        (
            r#"{"builders": [{"type": "null"}], "provisoners": []}"#,
            "t.json:1:34: unknown root key `provisoners` in template\n",
        ),
        (
            r#"{"builders": [{"type": "null"}], "provisoners": []}"#,
            "did you mean `provisioners`?",
        ),
        (
            r#"{"builders": [{"type": "null"}], "post_processors": []}"#,
            "did you mean `post-processors`?",
        ),
        (
            r#"{"builders": [{"type": "null"}], "zzz": []}"#,
            "valid root keys are",
        ),
        (
            r#"{"builders": [{"type": "null"}], "_c": {}}"#,
            "root-level comment `_c` must be a string, found object",
        ),
        (
            r#"{"builders": {"type": "null"}}"#,
            "`builders` must be an array, found object",
        ),
        (
            r#"{"builders": [{"type": "null"}], "description": 1}"#,
            "`description` must be a string, found number",
        ),
        (
            r#"{"builders": [{"type": "null"}], "variables": []}"#,
            "`variables` must be an object, found array",
        ),
        (
            r#"{"builders": [{"type": "null"}], "variables": {"a": 5}}"#,
            "variable `a`: the default must be a string",
        ),
        (
            r#"{"builders": [{"type": "null"}], "sensitive-variables": [1]}"#,
            "`sensitive-variables` must list strings",
        ),
        (
            r#"{"builders": [{"type": "null"}], "push": 1}"#,
            "`push` must be an object",
        ),
        (
            r#"{"builders": [{"type": "null"}], "comments": "x"}"#,
            "`comments` must be a list",
        ),
        (
            r#"[]"#,
            "t.json:1:1: a template must be a JSON object, found array",
        ),
        (r#"{}"#, "t.json:1:1: at least one builder must be defined"),
        (
            r#"{"builders": []}"#,
            "t.json:1:2: at least one builder must be defined",
        ),
        (
            r#"{"builders": [{"type": "null"}], "min_packer_version": "9.0.0"}"#,
            "This template requires Packer version 9.0.0 or higher; using 1.6.6",
        ),
        (
            r#"{"builders": [{"type": "null"}], "min_packer_version": "x.y"}"#,
            "min_packer_version is invalid",
        ),
    ];
    for (text, want) in table {
        let e = errs(text);
        assert!(e.contains(want), "{text}:\n{e}\nmissing {want:?}");
    }
}

#[test]
fn builders() {
    let t =
        tpl(r#"{"builders": [{"type": "null"}, {"type": "null", "name": "two"}, {"type": 5}]}"#)
            .unwrap();
    let names: Vec<&str> = t.builders.iter().map(|b| b.name.value.as_str()).collect();
    assert_eq!(names, ["null", "two", "5"]);
    let table: &[(&str, &str)] = &[
        (
            r#"{"builders": [{"name": "x"}]}"#,
            "t.json:1:15: builder 1: missing `type`",
        ),
        (
            r#"{"builders": [{"type": ""}]}"#,
            "builder 1: missing `type`",
        ),
        (
            r#"{"builders": ["null"]}"#,
            "builder 1: must be an object, found string",
        ),
        (
            r#"{"builders": [{"type": {}}]}"#,
            "builder 1: `type` must be a string, found object",
        ),
        (
            r#"{"builders": [{"type": "null"}, {"type": "null"}]}"#,
            "t.json:1:42: builder 2: a builder named `null` already exists (first at 1:24)",
        ),
    ];
    for (text, want) in table {
        let e = errs(text);
        assert!(e.contains(want), "{text}:\n{e}\nmissing {want:?}");
        assert!(!e.contains("at least one builder"), "{e}");
    }
}

#[test]
fn provisioners() {
    let t = tpl(r#"{"builders": [{"type": "null", "name": "a"}, {"type": "null", "name": "b"}],
        "provisioners": [
          {"type": "shell", "only": ["a"], "pause_before": "1m30s", "timeout": "5m", "max_retries": "3",
           "inline": ["x"], "override": {"b": {"inline": ["y"], "extra": 1}}},
          {"type": "shell", "except": "a", "max_retries": 2, "pause_before": 10},
          {"type": "shell", "max_retries": "{{user `n`}}"}
        ]}"#)
    .unwrap();
    let p = &t.provisioners[0];
    assert!(p.applies_to("a") && !p.applies_to("b"));
    assert_eq!(p.pause_before, Some(std::time::Duration::from_secs(90)));
    assert_eq!(p.timeout, Some(std::time::Duration::from_secs(300)));
    assert_eq!(p.max_retries, 3);
    let over = p.config_for("b");
    assert_eq!(
        over.get("inline").unwrap().to_json(),
        serde_json::json!(["y"])
    );
    assert_eq!(over.get("extra").unwrap().to_json(), serde_json::json!(1));
    assert_eq!(over.get("type").unwrap().as_str(), Some("shell"));
    assert_eq!(
        p.config_for("a").get("inline").unwrap().to_json(),
        serde_json::json!(["x"])
    );
    let p = &t.provisioners[1];
    assert!(!p.applies_to("a") && p.applies_to("b"));
    assert_eq!(p.max_retries, 2);
    assert_eq!(p.pause_before, Some(std::time::Duration::from_secs(10)));
    let p = &t.provisioners[2];
    let mut ctx = Context::new(t.dir.clone());
    ctx.user_vars = Arc::new(BTreeMap::from([("n".to_string(), "4".to_string())]));
    assert_eq!(p.resolved_max_retries(&ctx).unwrap(), 4);

    let base = r#"{"builders": [{"type": "null", "name": "alpha"}], "provisioners": [PROV]}"#;
    let table: &[(&str, &str)] = &[
        (r#"{"inline": []}"#, "provisioner 1: missing `type`"),
        (
            r#""shell""#,
            "provisioner 1: must be an object, found string",
        ),
        (
            r#"{"type": "shell", "only": ["alpah"]}"#,
            "provisioner 1: 'only' specified builder `alpah` not found",
        ),
        (
            r#"{"type": "shell", "only": ["alpah"]}"#,
            "did you mean `alpha`?",
        ),
        (
            r#"{"type": "shell", "except": ["zzzzzz"]}"#,
            "the builders are: alpha",
        ),
        (
            r#"{"type": "shell", "only": ["alpha"], "except": ["alpha"]}"#,
            "only one of `only` or `except` may be specified",
        ),
        (
            r#"{"type": "shell", "override": {"alhpa": {}}}"#,
            "provisioner 1: override `alhpa` doesn't exist",
        ),
        (
            r#"{"type": "shell", "override": {"alpha": 1}}"#,
            "override `alpha` must be an object",
        ),
        (
            r#"{"type": "shell", "pause_before": "10"}"#,
            "missing unit in duration",
        ),
        (r#"{"type": "shell", "timeout": "1d"}"#, "unknown unit"),
        (
            r#"{"type": "shell", "timeout": true}"#,
            "`timeout` must be a duration",
        ),
        (
            r#"{"type": "shell", "max_retries": "x"}"#,
            "`max_retries` must be a valid integer",
        ),
        (
            r#"{"type": "shell", "max_retries": "-1"}"#,
            "`max_retries` must not be negative",
        ),
        (
            r#"{"type": "shell", "max_retries": "{{"}"#,
            "`max_retries`: unclosed action",
        ),
    ];
    for (prov, want) in table {
        let text = base.replace("PROV", prov);
        let e = errs(&text);
        assert!(e.contains(want), "{prov}:\n{e}\nmissing {want:?}");
    }
}

#[test]
fn all_problems_reported_at_once() {
    let e = tpl(r#"{"builders": [{"type": "null"}, {"name": "x"}],
        "provisioners": [{"type": "shell", "only": ["nope"]}, {"inline": []}],
        "post-processors": [[["nested"]]],
        "bogus": 1}"#)
    .unwrap_err();
    let s = e.to_string();
    for want in [
        "builder 2: missing `type`",
        "'only' specified builder `nope`",
        "provisioner 2: missing `type`",
        "nested in a sequence",
        "unknown root key `bogus`",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    assert_eq!(e.0.len(), 5, "{s}");
    assert!(
        e.0.iter().all(|d| d.pos.is_some()),
        "every error has a position"
    );
}

#[test]
fn post_processors() {
    let t = tpl(r#"{"builders": [{"type": "null", "name": "a"}],
        "post-processors": [
          "compress",
          {"type": "manifest", "keep_input_artifact": true, "name": "m", "only": "a"},
          ["checksum", {"type": "shell-local", "keep_input_artifact": "false", "except": ["a"]}]
        ]}"#)
    .unwrap();
    assert_eq!(t.post_processors.len(), 3);
    let c = &t.post_processors[0][0];
    assert_eq!(c.type_name.value, "compress");
    assert_eq!(c.config.get("type").unwrap().as_str(), Some("compress"));
    assert!(c.name.is_none() && c.keep_input_artifact.is_none());
    let m = &t.post_processors[1][0];
    assert_eq!(m.name.as_ref().unwrap().value, "m");
    assert_eq!(m.keep_input_artifact, Some(true));
    assert!(m.applies_to("a"));
    let chain = &t.post_processors[2];
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].keep_input_artifact, Some(false));
    assert!(!chain[1].applies_to("a"));

    let base = r#"{"builders": [{"type": "null", "name": "a"}], "post-processors": [PP]}"#;
    let table: &[(&str, &str)] = &[
        ("5", "post-processor 1: bad format"),
        (r#"[5]"#, "post-processor 1.1: unknown format"),
        (
            r#"[["x"]]"#,
            "post-processor 1.1: sequence not allowed to be nested in a sequence",
        ),
        (r#"{"name": "x"}"#, "post-processor 1.1: type is required"),
        (
            r#"{"type": "x", "keep_input_artifact": "maybe"}"#,
            "`keep_input_artifact` must be true or false",
        ),
        (
            r#"{"type": "x", "only": ["b"]}"#,
            "post-processor 1.1: 'only' specified builder `b` not found",
        ),
        (
            r#"["x", {"type": "y", "except": ["c"]}]"#,
            "post-processor 1.2: 'except' specified builder `c` not found",
        ),
    ];
    for (pp, want) in table {
        let text = base.replace("PP", pp);
        let e = errs(&text);
        assert!(e.contains(want), "{pp}:\n{e}\nmissing {want:?}");
    }
}

#[test]
fn parse_file_reads_and_reports_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.json");
    std::fs::write(&p, SEED).unwrap();
    let t = template::parse_file(&p).unwrap();
    assert_eq!(t.path, p);
    assert_eq!(t.dir, dir.path());
    let e = template::parse_file(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read template"), "{e}");
    std::fs::write(&p, "{\n  \"builders\": [,]\n}").unwrap();
    let e = template::parse_file(&p).unwrap_err().to_string();
    assert!(e.contains("t.json:2:16: unexpected character `,`"), "{e}");
}

#[test]
fn suggestions_table() {
    let keys = ["scripts", "type", "flavor", "ssh_username", "source_image"];
    for (name, want) in [
        ("scirpts", Some("scripts")),
        ("typ", Some("type")),
        ("flavour", Some("flavor")),
        ("ssh_user", Some("ssh_username")),
        ("completely_different", None),
        ("q", None),
    ] {
        assert_eq!(suggest(name, keys), want, "{name}");
    }
}

// ------------------------------------------------------------------ interpolation

fn ctx() -> Context {
    let mut c = Context::new("/tmpl/dir".into());
    c.timestamp = 1_257_894_245; // 2009-11-10T23:04:05Z, a Tuesday
    c.user_vars = Arc::new(BTreeMap::from([
        ("a".to_string(), "5".to_string()),
        ("name".to_string(), "My Image".to_string()),
        ("empty".to_string(), String::new()),
    ]));
    c.build_name = Some("qemu".into());
    c.build_type = Some("qemu-type".into());
    c.data.insert("Path".into(), "/tmp/script.sh".into());
    c.data.insert("Vars".into(), "A=1".into());
    c
}

#[test]
fn interpolation_table() {
    let c = ctx();
    let table: &[(&str, &str)] = &[
        ("plain text", "plain text"),
        ("", ""),
        ("{{user `a`}}", "5"),
        ("{{ user \"name\" }}", "My Image"),
        ("{{user `undeclared`}}x", "x"),
        ("{{timestamp}}", "1257894245"),
        ("{{isotime}}", "2009-11-10T23:04:05Z"),
        ("{{isotime \"2006-01-02\"}}", "2009-11-10"),
        ("{{ isotime `Mon Jan _2 15:04:05 MST 2006` }}", "Tue Nov 10 23:04:05 UTC 2009"),
        ("{{isotime \"3:04PM -0700\"}}", "11:04PM +0000"),
        ("{{strftime \"%Y%m%d-%H%M%S %q %%\"}}", "20091110-230405 %q %"),
        ("{{build_name}}-{{build_type}}", "qemu-qemu-type"),
        ("{{template_dir}}", "/tmpl/dir"),
        ("{{split \"a,b,c\" \",\" 1}}", "b"),
        ("{{ \"a-b\" | split \"-\" | print }}", "__SKIP__"),
        ("{{replace \"b\" \"x\" 1 \"abcb\"}}", "axcb"),
        ("{{\"abcb\" | replace \"b\" \"x\" -1}}", "axcx"),
        ("{{replace_all \"b\" \"y\" \"abcb\"}}", "aycy"),
        ("{{lower \"AbC\"}}{{upper \"x\"}}", "abcX"),
        ("{{user `name` | lower}}", "my image"),
        ("{{clean_resource_name \"My Image_1.0\"}}", "my-image-1-0"),
        ("{{packer_version}}", "1.6.6"),
        ("{{build `ID`}}", "Build_ID. Placeholder: this value is generated by the builder at run time (read it with the `build` function)"),
        ("{{.Path}} {{ .Vars }}", "/tmp/script.sh A=1"),
        ("{{ index . \"Path\" }}", "/tmp/script.sh"),
        ("{{len .Path}}", "14"),
        // pipelines: the piped value is the last argument
        ("{{ 3 | print 1 2 }}", "1 2 3"),
        ("{{ \"x\" | printf \"%s-%s\" \"y\" }}", "y-x"),
        ("{{ (user `a`) }}", "5"),
        ("{{ print (lower \"A\") (upper \"b\") }}", "aB"),
        ("{{ upper (user `name` | lower) }}", "MY IMAGE"),
        // literals
        ("{{ 1.50 }} {{ 1e3 }} {{ 0x10 }} {{ 'a' }} {{ -3 }} {{ true }}", "1.5 1000 16 97 -3 true"),
        ("{{ `raw \\n` }}", "raw \\n"),
        // Go's %v of float64 (checked against Packer 1.6.6)
        ("{{ 1e6 }} {{ 1234567.0 }} {{ 0.00001 }} {{ 123456.0 }}", "1e+06 1.234567e+06 1e-05 123456"),
        // piped value is the last argument: here it lands on `split`'s int
        ("{{ \"a\" | split \"-\" 0 }}", "__ERR__"),
        ("{{ \"esc\\t\\u00e9\" }}", "esc\té"),
        // if / else
        ("{{if eq (user `a`) \"5\"}}five{{else}}other{{end}}", "five"),
        ("{{if user `empty`}}yes{{else}}no{{end}}", "no"),
        ("{{if eq (user `a`) \"\"}}E{{else if eq (user `a`) \"5\"}}F{{else}}N{{end}}", "F"),
        ("{{if 0}}a{{else if \"\"}}b{{else}}c{{end}}", "c"),
        ("{{if true}}{{if false}}x{{else}}y{{end}}{{end}}", "y"),
        ("{{with user `name`}}[{{.}}]{{end}}{{with \"\"}}A{{else}}B{{end}}", "[My Image]B"),
        // builtins
        ("{{ and 1 0 }}|{{ or 0 \"\" }}|{{ or 0 \"x\" }}|{{ not \"\" }}", "0||x|true"),
        ("{{ eq \"a\" \"b\" \"a\" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1 2 }}", "true true true true true false"),
        ("{{ len \"abc\" }} {{ index \"abc\" 1 }} {{ slice \"abcd\" 1 3 }}", "3 98 bc"),
        ("{{ print 1 2 \"a\" 3 \"b\" \"c\" }}|{{ println 1 2 }}|{{ print 1.5 true }}", "1 2a3bc|1 2\n|1.5 true"),
        ("{{ printf \"%d-%s-%v-%q\" 3 \"x\" 1.5 \"y\" }}", "3-x-1.5-\"y\""),
        ("{{ printf \"%5.2f|%x|%t|%-3d|%03d|%v\" 3.14159 255 true 7 7 nil }}", " 3.14|ff|true|7  |007|<nil>"),
        ("{{ printf \"%s %d %d\" 5 \"x\" }}", "%!s(int=5) %!d(string=x) %!d(MISSING)"),
        ("{{ printf \"%d\" 1 2 }}", "1%!(EXTRA int=2)"),
        ("{{ html \"<a&b>\" }} {{ urlquery \"a b&c\" }} {{ js \"it's\" }}", "&lt;a&amp;b&gt; a+b%26c it\\'s"),
        // variables
        ("{{ $x := \"v\" }}{{ $x }}{{ $x = \"w\" }}{{ $x }}", "vw"),
        ("{{ $p := .Path }}{{ $p }} {{ $.Vars }}", "/tmp/script.sh A=1"),
        // trimming and comments
        ("a  {{- \"b\" -}}  c", "abc"),
        ("a \n {{- /* comment */ -}} \n b", "ab"),
        ("x{{/* a comment with }} inside */}}y", "xy"),
        ("{{-3}}", "-3"),
        ("a {{- 3}}", "a3"),
        ("{{ \"}}\" }}", "}}"),
        ("{{\n user `a`\n}}", "5"),
    ];
    for (t, want) in table {
        if *want == "__SKIP__" {
            continue;
        }
        if *want == "__ERR__" {
            let e = render(t, &c).unwrap_err();
            assert!(e.message.contains("expected string; got int"), "{t}: {e}");
            continue;
        }
        match render(t, &c) {
            Ok(got) => assert_eq!(&got, want, "template {t:?}"),
            Err(e) => panic!("template {t:?}: error {e} at {}", e.offset),
        }
        check_syntax(t).unwrap();
    }
}

#[test]
fn uuid_and_pwd() {
    let c = ctx();
    let u = render("{{uuid}}", &c).unwrap();
    assert_eq!(u.len(), 36);
    assert_eq!(u.matches('-').count(), 4);
    assert_ne!(u, render("{{uuid}}", &c).unwrap());
    assert_eq!(
        render("{{pwd}}", &c).unwrap(),
        std::env::current_dir().unwrap().display().to_string()
    );
    // timestamp is constant in a process.
    let a = Context::new("/".into());
    let b = Context::new("/".into());
    assert_eq!(a.timestamp, b.timestamp);
    assert!(a.timestamp > 1_600_000_000);
}

#[test]
fn interpolation_errors_with_offsets() {
    let mut c = ctx();
    let table: &[(&str, &str, usize)] = &[
        ("ab {{", "unclosed action", 3),
        ("{{", "unclosed action", 0),
        ("x }} y", "__OK__", 0),
        ("{{}}", "missing value for command", 0),
        ("a{{ foo }}", "function \"foo\" not defined", 4),
        ("{{ uper `x` }}", "did you mean `upper`?", 3),
        ("{{ \"abc }}", "unterminated quoted string", 3),
        ("{{ `abc }}", "unterminated raw quoted string", 3),
        (
            "{{ env `HOME` }}",
            "error calling env: env vars are not allowed here",
            3,
        ),
        (
            "{{ .Nope }}",
            "no context value .Nope here (available: .Path, .Vars)",
            3,
        ),
        (
            "xx{{ .Path.X }}",
            "can't evaluate field X in type string",
            5,
        ),
        (
            "{{ lower 5 }}",
            "wrong type for value; expected string; got int",
            9,
        ),
        (
            "{{ split \"a\" \",\" 5 }}",
            "error calling split: the substring 5 was unavailable",
            3,
        ),
        (
            "{{ split \"a\" \",\" \"x\" }}",
            "expected int; got string",
            17,
        ),
        ("{{ eq 1 1.0 }}", "incompatible types for comparison", 3),
        ("{{ lt true false }}", "invalid type for comparison", 3),
        ("{{ len 5 }}", "len of type int", 3),
        ("{{ index \"abc\" 5 }}", "index out of range: 5", 3),
        (
            "{{ user }}",
            "wrong number of args for user: want 1 got 0",
            3,
        ),
        (
            "{{ timestamp 1 }}",
            "wrong number of args for timestamp: want 0 got 1",
            3,
        ),
        ("{{ isotime \"a\" \"b\" }}", "too many values, 1 needed", 3),
        ("{{if true}}x", "missing {{end}}", 0),
        ("{{end}}", "unexpected {{end}}", 0),
        ("{{else}}", "unexpected {{else}}", 0),
        (
            "{{if true}}{{else}}{{else}}{{end}}",
            "expected {{end}} after {{else}}",
            19,
        ),
        ("{{ range . }}{{end}}", "`range` is not supported", 0),
        ("{{ (user `a` }}", "unclosed left paren", 3),
        ("{{ user `a`) }}", "unexpected \")\"", 11),
        ("{{ \"a\" \"b\" }}", "__ARGS__", 0),
        ("{{ $x }}", "undefined variable \"$x\"", 3),
        ("{{ nil }}", "nil is not a command", 3),
        ("{{ 1 | 2 }}", "non executable command in pipeline stage", 7),
        ("{{ 1x }}", "bad number syntax", 3),
        ("{{ 'ab' }}", "malformed character constant", 3),
        ("{{/* x }}", "unclosed comment", 0),
        ("{{/* x */ }}", "comment ends before closing delimiter", 0),
        ("{{ build_name }}", "__NOBUILD__", 0),
        ("{{ sed \"a\" \"b\" }}", "deprecated", 3),
        (
            "{{ vault \"a\" \"b\" }}",
            "only allowed in the variables section",
            3,
        ),
        ("{{ user`a`}}", "missing space?", 7),
        ("{{ print 1\"a\" }}", "missing space?", 10),
        ("{{ # }}", "unexpected '#' in command", 3),
    ];
    for (t, want, off) in table {
        match *want {
            "__OK__" => {
                render(t, &c).unwrap();
                continue;
            }
            "__ARGS__" => {
                let e = render(t, &c).unwrap_err();
                assert!(
                    e.message.contains("can't give argument to non-function"),
                    "{t}: {e}"
                );
                continue;
            }
            "__NOBUILD__" => {
                let mut c2 = c.clone();
                c2.build_name = None;
                let e = render(t, &c2).unwrap_err();
                assert!(e.message.contains("build_name not available"), "{e}");
                continue;
            }
            _ => {}
        }
        let e = render(t, &c).unwrap_err();
        assert!(
            e.message.contains(want),
            "{t:?}: got {:?}, want {want:?}",
            e.message
        );
        assert_eq!(e.offset, *off, "{t:?}: offset of {:?}", e.message);
    }
    // build with generated data
    c.generated = Some(Arc::new(BTreeMap::from([(
        "Host".to_string(),
        "10.0.0.1".to_string(),
    )])));
    assert_eq!(render("{{ build `Host` }}", &c).unwrap(), "10.0.0.1");
    let e = render("{{ build `ID` }}", &c).unwrap_err();
    assert!(e.message.contains("available: Host"), "{e}");
    // env when allowed
    c.allow_env = true;
    std::env::set_var("KILN_TEMPLATE_TEST_ENV", "ev");
    assert_eq!(
        render("{{env `KILN_TEMPLATE_TEST_ENV`}}", &c).unwrap(),
        "ev"
    );
    assert_eq!(
        render("{{env `KILN_TEMPLATE_TEST_UNSET_ENV`}}", &c).unwrap(),
        ""
    );
    let e = render("{{user `undeclared`}}", &c).unwrap_err();
    assert!(e.message.contains("variable not set: undeclared"), "{e}");
}

#[test]
fn interpolation_never_panics() {
    let c = ctx();
    let nasty = [
        "{{",
        "}}",
        "{{-",
        "-}}",
        "{{- -}}",
        "{{ - }}",
        "{{ ( }}",
        "{{ ) }}",
        "{{ | }}",
        "{{ $ }}",
        "{{ . }}",
        "{{ .. }}",
        "{{ $x := }}",
        "{{ := 1 }}",
        "{{ \"\\",
        "{{ '\\",
        "{{ '",
        "{{ `",
        "{{/*",
        "{{/**/",
        "{{ if }}",
        "{{ else if }}",
        "{{ end x }}",
        "{{ 0x }}",
        "{{ 1e }}",
        "{{ +}}",
        "{{ 99999999999999999999 }}",
        "{{ 1.2.3 }}",
        "{{ \"\\x\" }}",
        "{{ \"\\777\" }}",
        "{{ \"\\U0010ffff\" }}",
        "{{ \"\\UFFFFFFFF\" }}",
        "é{{ é }}",
        "{{ printf \"%\" }}",
        "{{ printf \"%9999999999999d\" 1 }}",
        "{{ slice \"é\" 0 1 }}",
        "{{ index \"a\" -1 }}",
        "{{ split \"a\" \"\" -1 }}",
        "{{ replace \"\" \"x\" -1 \"ab\" }}",
        "{{ (((((((((( 1 )))))))))) }}",
        "{{ .Path.A.B }}",
        "{{ $.Nope }}",
        "{{ printf }}",
        "{{ and }}",
    ];
    for t in nasty {
        let _ = render(t, &c);
        let _ = check_syntax(t);
    }
    let deep_if = "{{if true}}".repeat(10_000);
    assert!(render(&deep_if, &c).is_err());
    let deep_paren = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(render(&deep_paren, &c).is_err());
    assert_eq!(render("{{ (((1))) }}", &c).unwrap(), "1");
}

// ------------------------------------------------------------------ variables

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn variables_defaults_and_recursion() {
    std::env::set_var("KILN_TEMPLATE_VAR_ENV", "from-env");
    let t = tpl(r#"{"builders": [{"type": "null"}],
      "variables": {
        "bang": "bang{{user `baz`}}",
        "baz": "{{user `foo`}}baz",
        "foo": "bar",
        "home": "{{env `KILN_TEMPLATE_VAR_ENV`}}",
        "runtime": "{{ .HTTPIP }}:{{.HTTPPort}}",
        "secret": "s3cret",
        "empty": ""
      },
      "sensitive-variables": ["secret", "empty"]}"#)
    .unwrap();
    let v = vars::resolve(&t, &[]).unwrap();
    assert_eq!(v.values["foo"], "bar");
    assert_eq!(v.values["baz"], "barbaz");
    assert_eq!(v.values["bang"], "bangbarbaz");
    assert_eq!(v.values["home"], "from-env");
    assert_eq!(v.values["runtime"], "{{ .HTTPIP }}:{{.HTTPPort}}");
    assert_eq!(v.secrets(), vec!["s3cret".to_string()]);
    assert!(v.sensitive.contains("empty"));
}

#[test]
fn variables_sources_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let f1 = write(&dir, "a.json", r#"{"a": "file1", "b": "file1"}"#);
    let f2 = write(&dir, "b.json", r#"{"b": "file2", "c": "{{user `a`}}-c"}"#);
    let t = tpl(r#"{"builders": [{"type": "null"}],
      "variables": {"a": "def", "b": "def", "c": "def", "d": "{{user `b`}}!", "req": null}}"#)
    .unwrap();
    let srcs = vec![
        VarSource::File(f1),
        parse_var_flag("a=flag=with=equals").unwrap(),
        VarSource::File(f2),
        parse_var_flag("req=set").unwrap(),
        parse_var_flag("undeclared=ok").unwrap(),
    ];
    let v = vars::resolve(&t, &srcs).unwrap();
    assert_eq!(v.values["a"], "flag=with=equals");
    assert_eq!(v.values["b"], "file2");
    assert_eq!(v.values["c"], "flag=with=equals-c");
    assert_eq!(v.values["d"], "file2!");
    assert_eq!(v.values["req"], "set");
    // Packer 1.6.6 accepts variables the template does not declare.
    assert_eq!(v.values["undeclared"], "ok");
    // Later wins, in either direction.
    let v = vars::resolve(
        &t,
        &[
            parse_var_flag("b=flag").unwrap(),
            VarSource::File(dir.path().join("b.json")),
            parse_var_flag("req=1").unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(v.values["b"], "file2");
}

#[test]
fn variables_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = tpl(r#"{"builders": [{"type": "null"}],
      "variables": {"r1": null, "r2": null, "ok": "x"}}"#)
    .unwrap();
    let e = vars::resolve(&t, &[]).unwrap_err();
    assert_eq!(e.0.len(), 2);
    let s = e.to_string();
    assert!(
        s.contains("t.json:2:21: required variable not set: r1"),
        "{s}"
    );
    assert!(s.contains("required variable not set: r2"), "{s}");

    // Cycles are reported once, clearly.
    let t = tpl(r#"{"builders": [{"type": "null"}],
      "variables": {"a": "{{user `b`}}", "b": "x{{user `c`}}", "c": "{{user `a`}}", "d": "{{user `d`}}"}}"#)
    .unwrap();
    let e = vars::resolve(&t, &[]).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("variables refer to each other in a cycle: `a` -> `b` -> `c` -> `a`"),
        "{s}"
    );
    assert!(s.contains("cycle: `d` -> `d`"), "{s}");
    assert_eq!(e.0.len(), 2, "{s}");

    // Undefined reference, with suggestion and position inside the string.
    let t = tpl(
        r#"{"builders": [{"type": "null"}], "variables": {"foo": "x", "b": "ab{{user `fo`}}"}}"#,
    )
    .unwrap();
    let s = vars::resolve(&t, &[]).unwrap_err().to_string();
    assert!(
        s.contains("t.json:1:70: variable `b`: error calling user: variable `fo` is not defined"),
        "{s}"
    );
    assert!(s.contains("did you mean `foo`?"), "{s}");

    // Bad var files: every problem, with file:line:col.
    let bad = write(
        &dir,
        "bad.json",
        "{\n  \"a\": 1,\n  \"b\": [\"x\"],\n  \"c\": \"ok\"\n}",
    );
    let broken = write(&dir, "broken.json", "{\"a\": }");
    let e = vars::resolve(
        &t,
        &[
            VarSource::File(bad.clone()),
            VarSource::File(broken.clone()),
            VarSource::File(dir.path().join("nope.json")),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!(
            "{}:2:8: variable `a` must be a string, found number",
            bad.display()
        )),
        "{e}"
    );
    assert!(e.contains("write it as a string: \"1\""), "{e}");
    assert!(
        e.contains(&format!(
            "{}:3:8: variable `b` must be a string, found array",
            bad.display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}:1:7: unexpected character `}}`",
            broken.display()
        )),
        "{e}"
    );
    assert!(e.contains("cannot read variable file"), "{e}");
    let arr = write(&dir, "arr.json", "[]");
    let e = vars::resolve(&t, &[VarSource::File(arr)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be a JSON object of strings"), "{e}");

    // env is allowed only while resolving variables.
    let t =
        tpl(r#"{"builders": [{"type": "null"}], "variables": {"a": "{{build_name}}"}}"#).unwrap();
    let e = vars::resolve(&t, &[]).unwrap_err().to_string();
    assert!(
        e.contains("variable `a`: error calling build_name: build_name not available"),
        "{e}"
    );
    // Command-line values are rendered too (as Packer), env included.
    let t = tpl(r#"{"builders": [{"type": "null"}], "variables": {"a": "x"}}"#).unwrap();
    std::env::set_var("KILN_TEMPLATE_VAR_ENV2", "e2");
    let v = vars::resolve(
        &t,
        &[parse_var_flag("b={{user `a`}}{{env `KILN_TEMPLATE_VAR_ENV2`}}").unwrap()],
    )
    .unwrap();
    assert_eq!(v.values["b"], "xe2");
    let e = vars::resolve(&t, &[parse_var_flag("b={{nope}}").unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("-var variable `b`: function \"nope\" not defined"),
        "{e}"
    );
}

#[test]
fn var_flags() {
    assert_eq!(
        parse_var_flag("a=b=c"),
        Ok(VarSource::Pair {
            name: "a".into(),
            value: "b=c".into()
        })
    );
    assert_eq!(
        parse_var_flag("a="),
        Ok(VarSource::Pair {
            name: "a".into(),
            value: String::new()
        })
    );
    assert!(parse_var_flag("novalue").unwrap_err().contains("no `=`"));
    assert!(parse_var_flag("=x").is_err());
}

// ------------------------------------------------------------------ decode

fn decode<T>(json: &str, f: impl FnOnce(&mut Decoder<'_>) -> T) -> (T, Diagnostics) {
    let n = json::parse(src(json)).unwrap();
    let mut c = ctx();
    c.data.clear();
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&n, &c, &mut diags);
    let r = f(&mut d);
    d.finish();
    (r, diags)
}

#[test]
fn weak_typing_table() {
    // (json value, string, bool, int)
    type Row = (
        &'static str,
        Option<&'static str>,
        Option<bool>,
        Option<i64>,
    );
    let table: &[Row] = &[
        (r#""22""#, Some("22"), None, Some(22)),
        (r#"22"#, Some("22"), Some(true), Some(22)),
        (r#"22.0"#, Some("22"), Some(true), Some(22)),
        (r#"22.7"#, Some("22.7"), Some(true), Some(22)),
        (r#"-3.9"#, Some("-3.9"), Some(true), Some(-3)),
        (r#"1e3"#, Some("1000"), Some(true), Some(1000)),
        (r#"0"#, Some("0"), Some(false), Some(0)),
        (r#"true"#, Some("1"), Some(true), Some(1)),
        (r#"false"#, Some("0"), Some(false), Some(0)),
        (r#""true""#, Some("true"), Some(true), None),
        (r#""1""#, Some("1"), Some(true), Some(1)),
        (r#""0""#, Some("0"), Some(false), Some(0)),
        (r#""T""#, Some("T"), Some(true), None),
        (r#""FALSE""#, Some("FALSE"), Some(false), None),
        (r#""""#, Some(""), Some(false), None),
        (r#""yes""#, Some("yes"), None, None),
        (r#""0x10""#, Some("0x10"), None, Some(16)),
        (r#""017""#, Some("017"), None, Some(15)),
        (r#"" 22""#, Some(" 22"), None, None),
        (r#""{{user `a`}}""#, Some("5"), None, Some(5)),
        (r#"[]"#, None, None, None),
        (r#"{}"#, None, None, None),
        (r#"null"#, None, None, None),
    ];
    for (v, s, b, i) in table {
        let json = format!(r#"{{"s": {v}, "b": {v}, "i": {v}}}"#);
        let ((gs, gb, gi), diags) = decode(&json, |d| (d.string("s"), d.bool("b"), d.int("i")));
        assert_eq!(gs.as_deref(), *s, "string of {v}: {diags}");
        assert_eq!(gb, *b, "bool of {v}: {diags}");
        assert_eq!(gi, *i, "int of {v}: {diags}");
        let expected_errors = if *v == "null" {
            0
        } else {
            [s.is_none(), b.is_none(), i.is_none()]
                .iter()
                .filter(|x| **x)
                .count()
        };
        assert_eq!(diags.0.len(), expected_errors, "{v}: {diags}");
    }
}

#[test]
fn decode_lists_maps_durations() {
    let json = r#"{
        "l1": ["a", 1, true, "{{user `a`}}"],
        "l2": "a,b,{{user `a`}}",
        "l3": "single",
        "l4": "",
        "l5": 7,
        "raw": ["{{.Path}}", "echo {{user `a`}}"],
        "ll": [["a", "b"], "c,d", "e"],
        "ints": [1, "2", "0x3"],
        "ints2": "4,5",
        "m": {"k": "{{user `a`}}", "n": 1},
        "m2": [{"a": "1"}, {"b": "2", "a": "3"}],
        "d1": "1m30s",
        "d2": 2,
        "d3": "{{user `a`}}s",
        "u": "8",
        "nested": {"inner": "x", "deep": {"z": 1}},
        "nlist": [{"inner": "a"}, {"inner": "b"}],
        "nobj": {"inner": "c"}
    }"#;
    let (r, diags) = decode(json, |d| {
        (
            d.string_list("l1"),
            d.string_list("l2"),
            d.string_list("l3"),
            d.string_list("l4"),
            d.string_list("l5"),
            d.raw_string_list("raw"),
            d.string_list_list("ll"),
            d.int_list("ints"),
            d.int_list("ints2"),
            d.string_map("m"),
            d.string_map("m2"),
            (
                d.duration("d1"),
                d.duration("d2"),
                d.duration("d3"),
                d.uint("u"),
            ),
            d.nested("nested", |n| {
                (n.string("inner"), n.nested("deep", |x| x.int("z")))
            }),
            d.nested_list("nlist", |n| n.string("inner")),
            d.nested_list("nobj", |n| n.string("inner")),
            d.string_list("absent"),
        )
    });
    assert!(diags.is_empty(), "{diags}");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(r.0.unwrap(), s(&["a", "1", "1", "5"]));
    assert_eq!(r.1.unwrap(), s(&["a", "b", "5"]));
    assert_eq!(r.2.unwrap(), s(&["single"]));
    assert_eq!(r.3.unwrap(), Vec::<String>::new());
    assert_eq!(r.4.unwrap(), s(&["7"]));
    assert_eq!(r.5.unwrap(), s(&["{{.Path}}", "echo {{user `a`}}"]));
    assert_eq!(
        r.6.unwrap(),
        vec![s(&["a", "b"]), s(&["c", "d"]), s(&["e"])]
    );
    assert_eq!(r.7.unwrap(), vec![1, 2, 3]);
    assert_eq!(r.8.unwrap(), vec![4, 5]);
    let m = r.9.unwrap();
    assert_eq!(m["k"], "5");
    assert_eq!(m["n"], "1");
    let m2 = r.10.unwrap();
    assert_eq!((m2["a"].as_str(), m2["b"].as_str()), ("3", "2"));
    let (d1, d2, d3, u) = r.11;
    assert_eq!(d1, Some(std::time::Duration::from_secs(90)));
    assert_eq!(d2, Some(std::time::Duration::from_secs(2)));
    assert_eq!(d3, Some(std::time::Duration::from_secs(5)));
    assert_eq!(u, Some(8));
    assert_eq!(r.12, Some((Some("x".to_string()), Some(Some(1)))));
    assert_eq!(
        r.13.unwrap(),
        vec![Some("a".to_string()), Some("b".to_string())]
    );
    assert_eq!(r.14.unwrap(), vec![Some("c".to_string())]);
    assert_eq!(r.15, None);
}

#[test]
fn decode_errors_all_at_once() {
    let json = r#"{
  "type": "shell",
  "scirpts": ["a"],
  "ssh_port": {},
  "flag": "maybe",
  "when": "10",
  "cmd": "{{ env `HOME` }}",
  "raw": "{{ nope }}",
  "list": {"a": 1},
  "u": -1,
  "nested": {"innr": "x"},
  "nlist": [1],
  "totally_unrelated_key": 1,
  "packer_build_name": "ignored like Packer"
}"#;
    let (_, diags) = decode(json, |d| {
        d.ignore(&["type"]);
        d.string_list("scripts");
        d.int("ssh_port");
        d.bool("flag");
        d.duration("when");
        d.string("cmd");
        d.raw_string("raw");
        d.string_list("list");
        d.uint("u");
        d.nested("nested", |n| n.string("inner"));
        d.nested_list("nlist", |n| n.string("inner"));
        let v: Option<String> = d.string("required_thing");
        d.require("required_thing", &v);
    });
    let s = diags.to_string();
    let wants = [
        "t.json:3:3: unknown key `scirpts` in `shell` configuration",
        "help: did you mean `scripts`?",
        "t.json:4:15: `ssh_port` must be an integer, found object",
        "t.json:5:11: `flag` must be a boolean (true or false), found string \"maybe\"",
        "t.json:6:11: `when` must be a duration: time: missing unit in duration \"10\"",
        "t.json:7:14: `cmd`: error calling env: env vars are not allowed here",
        "t.json:8:14: `raw`: function \"nope\" not defined",
        "t.json:9:11: `list` must be a list, found object",
        "t.json:10:8: `u` must be a non-negative integer",
        "t.json:11:14: unknown key `innr` in `nested`",
        "did you mean `inner`?",
        "t.json:12:13: `nlist[0]` must be an object",
        "t.json:1:1: `required_thing` must be specified",
        "unknown key `totally_unrelated_key`",
    ];
    for w in wants {
        assert!(s.contains(w), "missing {w:?} in\n{s}");
    }
    assert!(!s.contains("packer_build_name"), "{s}");
    assert_eq!(diags.0.len(), 12, "{s}");
}

#[test]
fn decode_non_object_and_helpers() {
    let n = json::parse(src("[1]")).unwrap();
    let c = ctx();
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&n, &c, &mut diags);
    assert_eq!(d.string("x"), None);
    d.finish();
    assert!(diags
        .to_string()
        .contains("t.json:1:1: expected an object, found array"));

    let (r, diags) = decode(
        r#"{"type": "t", "a": "{{user `a`}}", "b": 1, "c": null}"#,
        |d| {
            d.ignore(BUILDER_CORE_KEYS);
            d.raw_keys(&["a"]);
            let a = d.string("a");
            let pos = d.pos("b");
            let node = d.node("b").map(|n| n.kind());
            let c = d.string("c");
            let cnode = d.node("c").map(|n| n.kind());
            d.error("b", "b is wrong");
            d.error_here("object is wrong");
            d.describe("`t` builder");
            (a, pos, node, c, cnode)
        },
    );
    assert_eq!(r.0.as_deref(), Some("{{user `a`}}"));
    assert_eq!((r.1.line, r.1.col), (1, 41));
    assert_eq!(r.2, Some("number"));
    assert_eq!(r.3, None);
    assert_eq!(r.4, Some("null"));
    let s = diags.to_string();
    assert!(s.contains("t.json:1:41: b is wrong"), "{s}");
    assert!(s.contains("t.json:1:1: object is wrong"), "{s}");
    assert_eq!(diags.0.len(), 2);
}

#[test]
fn diagnostics_display() {
    let e = errs("{\n\t\"builders\": [{\"type\": \"null\"}],\n\t\"provisoners\": []\n}");
    assert_eq!(
        e,
        "t.json:3:2: unknown root key `provisoners` in template\n   |\n 3 | \t\"provisoners\": []\n   | \t^\n  help: did you mean `provisioners`?"
    );
}

#[test]
fn interp_module_constants() {
    assert_eq!(interp::PACKER_COMPAT_VERSION, "1.6.6");
    assert!(interp::build_placeholder("Host").starts_with("Build_Host. "));
}

// ------------------------------------------------------------------ staged reporting, secrets, retries

#[test]
fn partial_parse_keeps_the_valid_definitions() {
    let (t, d) = template::parse_partial(src(r#"{"bogus": 1,
      "variables": {"n": 3, "ok": "x"},
      "builders": [{"type": "file", "name": "a"}, {"name": "no-type"}],
      "provisioners": [{"type": "shell-local", "max_retries": "-1"}, {"type": "shell-local"}]}"#));
    let t = t.expect("a partial template");
    let s = d.to_string();
    assert_eq!(d.0.len(), 4, "{s}");
    for want in [
        "unknown root key `bogus`",
        "variable `n`: the default must be a string",
        "builder 2: missing `type`",
        "`max_retries` must not be negative",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    assert_eq!(t.builders.len(), 1);
    assert_eq!(t.provisioners.len(), 2);
    // A malformed default is kept, empty, so its uses are not "undefined".
    let n = t.variables.iter().find(|v| v.name.value == "n").unwrap();
    assert_eq!(n.default.as_deref(), Some(""));
    // Not JSON, or not an object: nothing to go on.
    assert!(template::parse_partial(src("{")).0.is_none());
    assert!(template::parse_partial(src("[]")).0.is_none());
    // A clean template has no diagnostics, and parse agrees.
    let (t, d) = template::parse_partial(src(r#"{"builders": [{"type": "null"}]}"#));
    assert!(t.is_some() && d.is_empty());
}

#[test]
fn resolve_partial_returns_what_resolved() {
    let t = tpl(r#"{"builders": [{"type": "null"}],
      "variables": {"pw": "{{env `KILN_TEST_PARTIAL_PW`}}", "bad": "{{user `nope`}}", "req": null},
      "sensitive-variables": ["pw"]}"#)
    .unwrap();
    std::env::set_var("KILN_TEST_PARTIAL_PW", "env-secret");
    let (v, d) = vars::resolve_partial(&t, &[]);
    assert_eq!(d.0.len(), 2, "{d}");
    assert_eq!(v.values["pw"], "env-secret");
    assert_eq!(v.secrets(), vec!["env-secret".to_string()]);
    assert!(!v.values.contains_key("bad"));
    assert!(vars::resolve(&t, &[]).is_err());
}

#[test]
fn early_secrets_before_parsing_and_resolution() {
    let dir = tempfile::tempdir().unwrap();
    // Not a valid template (unknown root key), still valid JSON.
    let t = write(
        &dir,
        "t.json",
        r#"{"bogus": 1, "variables": {"pw": "default-pw", "other": "public", "tok": null},
            "sensitive-variables": ["pw", "tok"], "builders": []}"#,
    );
    let vf = write(
        &dir,
        "v.json",
        r#"{"tok": "file-token", "other": "also-public"}"#,
    );
    let got = vars::early_secrets(
        &t,
        &[
            parse_var_flag("pw=flag-pw").unwrap(),
            parse_var_flag("other=flag-public").unwrap(),
            VarSource::File(vf),
            VarSource::File(dir.path().join("missing.json")),
            parse_var_flag("tok=").unwrap(),
        ],
    );
    assert_eq!(got, ["default-pw", "flag-pw", "file-token"]);
    // Not JSON: nothing is known.
    let bad = write(&dir, "bad.json", r#"{"sensitive-variables": ["pw"], "#);
    assert!(vars::early_secrets(&bad, &[parse_var_flag("pw=x").unwrap()]).is_empty());
    // No sensitive variables: nothing.
    let plain = write(&dir, "plain.json", r#"{"variables": {"pw": "x"}}"#);
    assert!(vars::early_secrets(&plain, &[]).is_empty());
}

#[test]
fn templated_max_retries_resolves_with_user_variables() {
    let t = tpl(r#"{"builders": [{"type": "null"}],
      "variables": {"n": "2"},
      "provisioners": [
        {"type": "shell-local", "max_retries": "{{user `n`}}"},
        {"type": "shell-local", "max_retries": 5},
        {"type": "shell-local", "max_retries": "{{user `word`}}"}
      ]}"#)
    .unwrap();
    let mut ctx = Context::new(std::env::temp_dir());
    let mut user = BTreeMap::new();
    user.insert("n".to_string(), "2".to_string());
    user.insert("word".to_string(), "two".to_string());
    ctx.user_vars = Arc::new(user);
    assert_eq!(t.provisioners[0].max_retries, 0);
    assert_eq!(t.provisioners[0].resolved_max_retries(&ctx).unwrap(), 2);
    assert_eq!(t.provisioners[1].resolved_max_retries(&ctx).unwrap(), 5);
    let e = t.provisioners[2].resolved_max_retries(&ctx).unwrap_err();
    assert!(e.to_string().contains("must be a valid integer"), "{e}");
}

#[test]
fn decoder_warnings_are_separate_from_errors() {
    let node = json::parse(src(r#"{"a": 1, "nested": {"b": 2}}"#)).unwrap();
    let ctx = Context::new(std::env::temp_dir());
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&node, &ctx, &mut diags);
    let _ = d.int("a");
    d.warn("top-level warning");
    let _ = d.nested("nested", |n| {
        let _ = n.int("b");
        n.warn("nested warning");
    });
    let w = d.finish_with_warnings();
    assert!(diags.is_empty(), "{diags}");
    let w: Vec<&str> = w.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(w, ["top-level warning", "nested warning"]);
}

#[test]
fn render_option_names_the_option_and_keeps_the_cause() {
    use kiln_template::interp::{render_option, Context};
    let ctx = Context::new(std::env::temp_dir()).with("Name", "x");
    assert_eq!(render_option("output", "plain {", &ctx).unwrap(), "plain {");
    assert_eq!(render_option("output", "a-{{.Name}}", &ctx).unwrap(), "a-x");
    let e = render_option("output", "{{ nope }}", &ctx).unwrap_err();
    assert_eq!(e.option, "output");
    assert_eq!(e.template, "{{ nope }}");
    assert_eq!(
        e.to_string(),
        format!(
            "error interpolating `output` (\"{{{{ nope }}}}\"): {}",
            e.source
        )
    );
}
