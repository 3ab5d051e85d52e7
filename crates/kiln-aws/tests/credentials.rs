//! Credential and region resolution: files, environment, precedence, as
//! Packer 1.6.6 (aws-sdk-go-base, the Go SDK) resolves them. No network:
//! every case here is settled before any request (assumed roles and
//! instance metadata are tested against the lab in lab_client.rs).
use kiln_aws::config::AccessConfig;
use kiln_aws::credentials::{env_credentials, resolve_region, SharedFiles};
use kiln_aws::{Aws, Env};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(credentials: &str, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(dir.path().join(".aws/config"), config).unwrap();
        Files { dir }
    }
    /// An environment whose home holds the files.
    fn env(&self) -> Env {
        Env {
            vars: Default::default(),
            home: Some(self.dir.path().to_path_buf()),
        }
        .with("AWS_EC2_METADATA_DISABLED", "true")
    }
}

async fn source(c: &AccessConfig, env: Env) -> Result<(String, String, String), String> {
    let a = Aws::connect_with(c, env).await.map_err(|e| e.to_string())?;
    let cr = a.creds.get().await.map_err(|e| e.to_string())?;
    Ok((cr.access_key_id, cr.source, a.region))
}

const CREDS: &str = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s-default\n\n[dev]\naws_access_key_id = AKIDDEV\naws_secret_access_key = s-dev\naws_session_token = tok-dev\n";
const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile dev]\nregion = us-west-2\n\n[profile cfgonly]\naws_access_key_id = AKIDCFG\naws_secret_access_key = s-cfg\nregion = ap-south-1\n\n[profile loop]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = loop2\n\n[profile loop2]\nrole_arn = arn:aws:iam::1:role/y\nsource_profile = loop\n\n[profile nosource]\nrole_arn = arn:aws:iam::1:role/z\n";

#[tokio::test]
async fn template_keys_win_over_everything() {
    let f = Files::new(CREDS, CONFIG);
    let env = f
        .env()
        .with("AWS_ACCESS_KEY_ID", "AKIDENV")
        .with("AWS_SECRET_ACCESS_KEY", "s-env");
    let c = AccessConfig {
        access_key: Some("AKIDTPL".into()),
        secret_key: Some("s-tpl".into()),
        token: Some("t".into()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let (id, src, region) = source(&c, env).await.unwrap();
    assert_eq!((id.as_str(), region.as_str()), ("AKIDTPL", "us-east-1"));
    assert!(src.starts_with("template"), "{src}");
}

#[tokio::test]
async fn environment_before_files() {
    let f = Files::new(CREDS, CONFIG);
    let env = f
        .env()
        .with("AWS_ACCESS_KEY_ID", "AKIDENV")
        .with("AWS_SECRET_ACCESS_KEY", "s-env")
        .with("AWS_SESSION_TOKEN", "tok-env");
    let (id, src, region) = source(&AccessConfig::default(), env.clone()).await.unwrap();
    assert_eq!(
        (id.as_str(), src.as_str(), region.as_str()),
        ("AKIDENV", "environment", "eu-west-1")
    );
    let c = env_credentials(&env).unwrap();
    assert_eq!(c.session_token.as_deref(), Some("tok-env"));
    // The Go SDK's older names.
    let old = Env::default()
        .with("AWS_ACCESS_KEY", "AKIDOLD")
        .with("AWS_SECRET_KEY", "s");
    assert_eq!(env_credentials(&old).unwrap().access_key_id, "AKIDOLD");
    // Only half of a pair: not used.
    let half = f.env().with("AWS_ACCESS_KEY_ID", "AKIDHALF");
    let (id, _, _) = source(&AccessConfig::default(), half).await.unwrap();
    assert_eq!(id, "AKIDDEFAULT");
}

#[tokio::test]
async fn profiles_from_template_and_environment() {
    let f = Files::new(CREDS, CONFIG);
    let (id, src, region) = source(&AccessConfig::default(), f.env()).await.unwrap();
    assert_eq!((id.as_str(), region.as_str()), ("AKIDDEFAULT", "eu-west-1"));
    assert!(src.contains("profile default"), "{src}");
    let (id, _, region) = source(&AccessConfig::default(), f.env().with("AWS_PROFILE", "dev"))
        .await
        .unwrap();
    assert_eq!((id.as_str(), region.as_str()), ("AKIDDEV", "us-west-2"));
    let (id, _, _) = source(
        &AccessConfig::default(),
        f.env().with("AWS_DEFAULT_PROFILE", "dev"),
    )
    .await
    .unwrap();
    assert_eq!(id, "AKIDDEV");
    // The template's profile beats AWS_PROFILE.
    let c = AccessConfig {
        profile: Some("dev".into()),
        ..Default::default()
    };
    let (id, _, _) = source(&c, f.env().with("AWS_PROFILE", "default"))
        .await
        .unwrap();
    assert_eq!(id, "AKIDDEV");
    // Keys only in the config file.
    let c = AccessConfig {
        profile: Some("cfgonly".into()),
        ..Default::default()
    };
    let (id, src, region) = source(&c, f.env()).await.unwrap();
    assert_eq!((id.as_str(), region.as_str()), ("AKIDCFG", "ap-south-1"));
    assert!(src.starts_with("config file"), "{src}");
    // A session token from the file.
    let a = Aws::connect_with(&AccessConfig::default(), f.env().with("AWS_PROFILE", "dev"))
        .await
        .unwrap();
    assert_eq!(
        a.creds.get().await.unwrap().session_token.as_deref(),
        Some("tok-dev")
    );
}

#[tokio::test]
async fn file_locations() {
    let f = Files::new("", "");
    let other = tempfile::tempdir().unwrap();
    let creds = other.path().join("creds");
    let conf = other.path().join("conf");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = s\n",
    )
    .unwrap();
    std::fs::write(&conf, "[default]\nregion = sa-east-1\n").unwrap();
    let env = f
        .env()
        .with("AWS_SHARED_CREDENTIALS_FILE", &creds.to_string_lossy())
        .with("AWS_CONFIG_FILE", &conf.to_string_lossy());
    let (id, _, region) = source(&AccessConfig::default(), env).await.unwrap();
    assert_eq!((id.as_str(), region.as_str()), ("AKIDOTHER", "sa-east-1"));
    // shared_credentials_file beats AWS_SHARED_CREDENTIALS_FILE; ~ is the home.
    std::fs::write(
        f.dir.path().join("mine"),
        "[default]\naws_access_key_id = AKIDMINE\naws_secret_access_key = s\n",
    )
    .unwrap();
    let c = AccessConfig {
        shared_credentials_file: Some("~/mine".into()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let env = f
        .env()
        .with("AWS_SHARED_CREDENTIALS_FILE", &creds.to_string_lossy());
    let (id, _, _) = source(&c, env).await.unwrap();
    assert_eq!(id, "AKIDMINE");
}

#[tokio::test]
async fn region_precedence() {
    let f = Files::new(CREDS, CONFIG);
    let env = f.env();
    let files = SharedFiles::load(&AccessConfig::default(), &env).unwrap();
    assert_eq!(
        resolve_region(&AccessConfig::default(), &env, &files).as_deref(),
        Some("eu-west-1")
    );
    let env2 = env.clone().with("AWS_DEFAULT_REGION", "us-east-2");
    assert_eq!(
        resolve_region(&AccessConfig::default(), &env2, &files).as_deref(),
        Some("us-east-2")
    );
    let env3 = env2.clone().with("AWS_REGION", "ca-central-1");
    assert_eq!(
        resolve_region(&AccessConfig::default(), &env3, &files).as_deref(),
        Some("ca-central-1")
    );
    let c = AccessConfig {
        region: Some("me-south-1".into()),
        ..Default::default()
    };
    assert_eq!(
        resolve_region(&c, &env3, &files).as_deref(),
        Some("me-south-1")
    );
    let none = Files::new("", "");
    let e = Aws::connect_with(&AccessConfig::default(), none.env())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no AWS region"), "{e}");
}

#[tokio::test]
async fn errors_name_the_problem() {
    let f = Files::new(CREDS, CONFIG);
    let with = |p: &str| AccessConfig {
        profile: Some(p.into()),
        ..Default::default()
    };
    let e = source(&with("loop"), f.env().with("AWS_REGION", "us-east-1"))
        .await
        .unwrap_err();
    assert!(e.contains("chain too long"), "{e}");
    let e = source(&with("nosource"), f.env().with("AWS_REGION", "us-east-1"))
        .await
        .unwrap_err();
    assert!(
        e.contains("role_arn needs source_profile or credential_source"),
        "{e}"
    );
    let e = source(&with("missing"), f.env().with("AWS_REGION", "us-east-1"))
        .await
        .unwrap_err();
    assert!(
        e.contains("No valid credential sources") && e.contains("\"missing\""),
        "{e}"
    );
    // credential_source Environment without the variables.
    let g = Files::new("", "[profile envsrc]\nrole_arn = arn:aws:iam::1:role/e\ncredential_source = Environment\nregion = us-east-1\n");
    let e = source(&with("envsrc"), g.env()).await.unwrap_err();
    assert!(e.contains("credential_source Environment"), "{e}");
}
