//! `tokend demo`: the provider emulators on loopback with short token lifetimes, and the
//! daemon keeping three credentials fresh against them, writing into a directory you can watch.

use std::path::Path;
use std::time::Duration;

use crate::commands::Exit;
use crate::config::{self, Secrets};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::{daemon, logging};

pub async fn run(dir: &Path) -> Exit {
    logging::init(config::LogFormat::Text, "info");
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let emulator_config = EmulatorConfig {
        vandar_lifetime: Duration::from_secs(20),
        // Saba tokens are asked for 1 day, but the emulator's JWT says 30 s: tokend
        // believes the JWT, which is the point of reading `exp`.
        saba_lifetime_cap: Some(Duration::from_secs(30)),
        yavapteke_lifetime: Duration::from_secs(15),
        ..EmulatorConfig::default()
    };
    let emulator = match Emulator::start(
        "127.0.0.1:0".parse().expect("literal address"),
        emulator_config.clone(),
    )
    .await
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tokend: cannot start the demo emulators: {e}");
            return Exit::Failed;
        }
    };
    // Each run starts new emulators that know nothing of the last run's refresh tokens.
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let config_path = match write_demo_files(&dir, &emulator, &emulator_config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "tokend: cannot prepare the demo directory `{}`: {e}",
                dir.display()
            );
            return Exit::Failed;
        }
    };
    let config = match config::load(&config_path, &crate::secret::ProcessEnv, Secrets::Resolve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tokend: the demo config is invalid (a bug): {e}");
            return Exit::Failed;
        }
    };
    eprintln!(
        "tokend demo: emulators on {}, tokens in {}/out (lifetimes 15-30 s). \
         Watch them rotate: `watch -n1 cat {}/out/*`. Ctrl-C stops.",
        emulator.url(),
        dir.display(),
        dir.display()
    );
    daemon::run(config_path, config).await
}

fn write_demo_files(
    dir: &Path,
    emulator: &Emulator,
    cfg: &EmulatorConfig,
) -> std::io::Result<std::path::PathBuf> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    let write_secret = |name: &str, value: &str| {
        crate::atomic::write_file(
            &secrets.join(name),
            value.as_bytes(),
            crate::atomic::Access::PRIVATE,
        )
    };
    write_secret("vandar-password", &cfg.vandar_password)?;
    write_secret("saba-password", &cfg.saba_password)?;
    write_secret("yavapteke-secret", &cfg.yavapteke_client_secret)?;
    // The seed only matters the first time; afterwards the chain lives in state.
    let seed = cfg
        .vandar_refresh_seeds
        .first()
        .cloned()
        .unwrap_or_default();
    write_secret("vandar-refresh", &seed)?;
    let url = emulator.url();
    let config = format!(
        r#"# Written by `tokend demo`; the emulators' port changes on every run.
state_dir: {dir}/state
log:
  format: text
  level: info
defaults:
  retry:
    initial: 500ms
    max: 5s
credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: {{ file: secrets/vandar-refresh }}
    mobile: "{mobile}"
    password: {{ file: secrets/vandar-password }}
    outputs:
      - file: out/vandar.token
      - file: out/vandar.env
        format: env
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: {saba_user}
    password: {{ file: secrets/saba-password }}
    virtual_number: "{vn}"
    token_valid_days: 1
    outputs:
      - file: out/saba.header
        format: template
        template: "Authorization: Bearer {{{{token}}}}\n"
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: {client_id}
    client_secret: {{ file: secrets/yavapteke-secret }}
    refresh: {{ at: 75% }}
    outputs:
      - file: out/pharmacy.json
        format: json
        mode: "0640"
      - dir: out/pharmacy
"#,
        dir = dir.display(),
        mobile = cfg.vandar_mobile,
        saba_user = cfg.saba_username,
        vn = cfg.saba_virtual_number,
        client_id = cfg.yavapteke_client_id,
    );
    let path = dir.join("config.yaml");
    crate::atomic::write_file(
        &path,
        config.as_bytes(),
        crate::atomic::Access {
            mode: 0o644,
            gid: None,
        },
    )?;
    Ok(path)
}
