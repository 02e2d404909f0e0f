//! The one config builder: a credential of each provider flow, good or with wrong secrets,
//! with its timeout, extra keys and outputs, written as YAML with its secret file beside it.

use std::path::PathBuf;

use crate::support::{EmulatorConfig, Endpoint, Env};

/// A client secret full of characters that form and Basic encoding must escape.
pub const OAUTH_SECRET: &str = "a:b%c+d e&f=g";
/// What the emulated Vandar login and Saba answer for a wrong password.
pub const PERSIAN_WRONG_CREDENTIALS: &str = "نام کاربری یا رمز عبور اشتباه وارد شده است";

/// The credentials under test: one per provider flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    VandarChain,
    VandarLogin,
    Saba,
    Yavapteke,
    OAuth2Post,
    OAuth2Basic,
}

pub const ALL: [Kind; 6] = [
    Kind::VandarChain,
    Kind::VandarLogin,
    Kind::Saba,
    Kind::Yavapteke,
    Kind::OAuth2Post,
    Kind::OAuth2Basic,
];

pub fn emulator() -> EmulatorConfig {
    EmulatorConfig {
        oauth2_client_secret: OAUTH_SECRET.into(),
        ..EmulatorConfig::default()
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::VandarChain => "vandar-chain",
            Kind::VandarLogin => "vandar-login",
            Kind::Saba => "saba-sms",
            Kind::Yavapteke => "pharmacy",
            Kind::OAuth2Post => "idp-post",
            Kind::OAuth2Basic => "idp-basic",
        }
    }

    pub fn endpoint(self) -> Endpoint {
        match self {
            Kind::VandarChain => Endpoint::VandarRefresh,
            Kind::VandarLogin => Endpoint::VandarLogin,
            Kind::Saba => Endpoint::Saba,
            Kind::Yavapteke => Endpoint::Yavapteke,
            Kind::OAuth2Post | Kind::OAuth2Basic => Endpoint::OAuth2,
        }
    }

    /// The default output, relative to the temp dir.
    pub fn out(self) -> String {
        format!("out/{}.token", self.name())
    }

    pub fn secret(self, good: bool) -> &'static str {
        match (self, good) {
            (Kind::VandarChain, true) => "def502seed",
            (Kind::VandarChain, false) => "def502never-issued",
            (Kind::VandarLogin, true) => "vandar-pass",
            (Kind::Saba, true) => "saba-pass",
            (Kind::Yavapteke, true) => "yav-secret",
            (Kind::OAuth2Post | Kind::OAuth2Basic, true) => OAUTH_SECRET,
            (_, false) => "wrong-secret",
        }
    }

    /// What stderr must show when the credentials are wrong: the provider's own words.
    pub fn rejection(self) -> &'static [&'static str] {
        match self {
            Kind::VandarChain => &[
                "provider rejected the refresh token (HTTP 401)",
                "unauthorized",
                "dashboard",
            ],
            Kind::VandarLogin => &["HTTP 400", PERSIAN_WRONG_CREDENTIALS],
            Kind::Saba => &[
                "HTTP 401",
                PERSIAN_WRONG_CREDENTIALS,
                "Username or password is incorrect",
            ],
            Kind::Yavapteke | Kind::OAuth2Post | Kind::OAuth2Basic => &["invalid_client"],
        }
    }

    pub fn cred(self) -> Cred {
        Cred {
            kind: self,
            good: true,
            timeout: "2s",
            extra: String::new(),
            outputs: format!("      - file: {{dir}}/{}\n", self.out()),
            name: self.name().to_owned(),
            secret_file: self.name().to_owned(),
            secret: None,
        }
    }
}

/// One credential block of a config, built per test.
pub struct Cred {
    pub kind: Kind,
    pub good: bool,
    pub timeout: &'static str,
    pub extra: String,
    pub outputs: String,
    pub name: String,
    /// The file under `secrets/` holding the secret (its path must not contain the secret).
    pub secret_file: String,
    /// Overrides [`Kind::secret`].
    pub secret: Option<String>,
}

impl Cred {
    pub fn bad(mut self) -> Cred {
        self.good = false;
        self
    }

    pub fn timeout(mut self, timeout: &'static str) -> Cred {
        self.timeout = timeout;
        self
    }

    /// Extra credential keys, each line indented four spaces.
    pub fn extra(mut self, extra: &str) -> Cred {
        self.extra.push_str(extra);
        self
    }

    /// Output list items, each starting with `      - `.
    pub fn outputs(mut self, outputs: &str) -> Cred {
        self.outputs = outputs.to_owned();
        self
    }

    /// The credential's name (default: the kind's).
    pub fn named(mut self, name: &str) -> Cred {
        self.name = name.to_owned();
        self
    }

    /// The secret in `secrets/FILE` (default: the kind's good or bad secret in a file named
    /// after the kind).
    pub fn secret_in(mut self, file: &str, value: &str) -> Cred {
        self.secret_file = file.to_owned();
        self.secret = Some(value.to_owned());
        self
    }

    /// Writes this credential's secret file and returns its YAML block.
    pub fn yaml(&self, env: &Env) -> String {
        let value = self
            .secret
            .as_deref()
            .unwrap_or(self.kind.secret(self.good));
        env.secret(&self.secret_file, &format!("{value}\n"));
        self.block()
    }

    /// The YAML block alone, for a test that writes the secret itself.
    pub fn block(&self) -> String {
        let name = &self.name;
        let secret = format!("{{ file: {{dir}}/secrets/{} }}", self.secret_file);
        let keys = match self.kind {
            Kind::VandarChain => format!(
                "    provider: vandar\n    base_url: {{url}}\n    refresh_token: {secret}\n"
            ),
            // The v2 login of the seed: no chain, one login per token.
            Kind::VandarLogin => format!(
                "    provider: vandar\n    base_url: {{url}}\n    mobile: \"09123456789\"\n    password: {secret}\n    login_version: v2\n"
            ),
            Kind::Saba => format!(
                "    provider: saba\n    base_url: {{url}}\n    username: sabauser\n    password: {secret}\n    virtual_number: \"30001234\"\n"
            ),
            Kind::Yavapteke => format!(
                "    provider: yavapteke\n    token_url: {{url}}/YavaptekeAPI/connect/token\n    client_id: 3f37b142-e371-461e-924c-a913ff878534\n    client_secret: {secret}\n"
            ),
            Kind::OAuth2Post | Kind::OAuth2Basic => {
                let auth = if self.kind == Kind::OAuth2Post {
                    "client_secret_post"
                } else {
                    "client_secret_basic"
                };
                format!(
                    "    provider: oauth2\n    token_url: {{url}}/oauth2/token\n    client_id: tokend\n    client_secret: {secret}\n    auth: {auth}\n"
                )
            }
        };
        format!(
            "  - name: {name}\n{keys}    timeout: {}\n    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}\n{}    outputs:\n{}",
            self.timeout, self.extra, self.outputs
        )
    }
}

pub fn write_config(env: &Env, creds: &[Cred]) -> PathBuf {
    let blocks: String = creds.iter().map(|c| c.yaml(env)).collect();
    env.config(&format!("credentials:\n{blocks}"))
}
