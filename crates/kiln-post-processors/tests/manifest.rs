mod common;
use common::*;
use kiln_core::PostProcessor;
use kiln_post_processors::manifest::{
    to_go_json, BuildEntry, Config, FileEntry, Manifest, ManifestFile,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn manifest(env: &Env, out: &str) -> Manifest {
    Manifest {
        config: Config {
            output: env.path(out),
            strip_path: false,
            strip_time: false,
            custom_data: None,
            force: false,
        },
    }
}

fn read(p: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[tokio::test]
async fn writes_packer_shape_and_appends() {
    let env = Env::new("web", "qemu");
    let img = env.write("output/disk.qcow2", &[0u8; 1234]);
    let mut ctx = env.ctx();
    ctx.interp
        .data
        .insert("PACKER_RUN_UUID".into(), "run-1".into());
    let pp = manifest(&env, "packer-manifest.json");
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let out = pp
        .post_process(&ctx, artifact(vec![img.clone()]))
        .await
        .unwrap();
    assert!(out.keep && out.force_keep);
    assert_eq!(out.artifact.unwrap().builder_id(), "kiln.test");
    let m = read(&env.path("packer-manifest.json"));
    let b = &m["builds"][0];
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut want = vec![
        "artifact_id",
        "build_time",
        "builder_type",
        "custom_data",
        "files",
        "name",
        "packer_run_uuid",
    ];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(b["name"], "web");
    assert_eq!(b["builder_type"], "qemu");
    assert_eq!(
        b["files"],
        json!([{"name": img.display().to_string(), "size": 1234}])
    );
    assert_eq!(b["artifact_id"], "test-id");
    assert_eq!(b["packer_run_uuid"], "run-1");
    assert_eq!(b["custom_data"], Value::Null);
    assert!(b["build_time"].as_i64().unwrap() >= before);
    assert_eq!(m["last_run_uuid"], "run-1");

    // A second build of the same run (and of another run, without -force)
    // is appended.
    let pp2 = Manifest {
        config: Config {
            strip_path: true,
            strip_time: true,
            custom_data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
            ..pp.config.clone()
        },
    };
    ctx.interp
        .data
        .insert("PACKER_RUN_UUID".into(), "run-2".into());
    pp2.post_process(&ctx, artifact(vec![img.clone()]))
        .await
        .unwrap();
    let m = read(&env.path("packer-manifest.json"));
    assert_eq!(m["builds"].as_array().unwrap().len(), 2);
    let b = &m["builds"][1];
    assert!(b.get("build_time").is_none(), "strip_time omits build_time");
    assert_eq!(b["files"], json!([{"name": "disk.qcow2", "size": 1234}]));
    assert_eq!(b["custom_data"], json!({"k": "v"}));
    assert_eq!(m["last_run_uuid"], "run-2");
    assert!(!env.path("packer-manifest.json.lock").exists());
}

#[tokio::test]
async fn force_starts_afresh_only_for_another_run() {
    let env = Env::new("b", "null");
    let mut ctx = env.ctx();
    let mut pp = manifest(&env, "m.json");
    pp.config.force = true;
    ctx.interp.data.insert("PACKER_RUN_UUID".into(), "A".into());
    pp.post_process(&ctx, artifact(vec![])).await.unwrap();
    pp.post_process(&ctx, artifact(vec![])).await.unwrap();
    assert_eq!(
        read(&env.path("m.json"))["builds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    ctx.interp.data.insert("PACKER_RUN_UUID".into(), "B".into());
    pp.post_process(&ctx, artifact(vec![])).await.unwrap();
    let m = read(&env.path("m.json"));
    assert_eq!(m["builds"].as_array().unwrap().len(), 1);
    // No files: Go's nil slice.
    assert_eq!(m["builds"][0]["files"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_builds_all_land() {
    let env = Env::new("b", "null");
    let pp = std::sync::Arc::new(manifest(&env, "m.json"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pp = pp.clone();
        let build = env.build.clone();
        let interp = env.interp();
        tasks.push(tokio::spawn(async move {
            let ctx = kiln_core::PostProcessCtx {
                build: &build,
                interp,
            };
            pp.post_process(&ctx, artifact(vec![])).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let m = read(&env.path("m.json"));
    assert_eq!(m["builds"].as_array().unwrap().len(), 8);
    // Without an engine-provided id, one UUID per process.
    let ids: std::collections::BTreeSet<String> = m["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["packer_run_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn corrupt_manifest_is_an_error_naming_it() {
    let env = Env::new("b", "null");
    let p = env.write("m.json", b"{not json");
    let err = manifest(&env, "m.json")
        .post_process(&env.ctx(), artifact(vec![]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&p.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), b"{not json");
}

#[test]
fn formatted_as_go_marshal_indent() {
    let m = ManifestFile {
        builds: Some(vec![BuildEntry {
            name: "a<b>&c".into(),
            builder_type: "null".into(),
            build_time: 1600000000,
            files: Some(vec![FileEntry {
                name: "x\ty\u{1}".into(),
                size: 3,
            }]),
            artifact_id: "".into(),
            packer_run_uuid: "u".into(),
            custom_data: Some(BTreeMap::from([
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
            ])),
        }]),
        last_run_uuid: "u".into(),
    };
    let want = r#"{
  "builds": [
    {
      "name": "a\u003cb\u003e\u0026c",
      "builder_type": "null",
      "build_time": 1600000000,
      "files": [
        {
          "name": "x\ty\u0001",
          "size": 3
        }
      ],
      "artifact_id": "",
      "packer_run_uuid": "u",
      "custom_data": {
        "a": "1",
        "b": "2"
      }
    }
  ],
  "last_run_uuid": "u"
}"#;
    assert_eq!(to_go_json(&m), want);
    // And it reads back to the same value.
    let back: ManifestFile = serde_json::from_str(want).unwrap();
    assert_eq!(back, m);
}
