//! Invalid configurations: each is refused with exit code 2 before any request leaves, and
//! the message says where the fault is (file, line and column, credential, field) and which
//! rule it breaks. A table of snippets, so that messages cannot silently degrade.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// One invalid config: a name for failure messages, the whole file (`{dir}` and `{url}` are
/// replaced; every snippet starts with its own `state_dir` line so line numbers are literal)
/// and the exact error text (`{dir}` for the test's directory), so that messages cannot
/// silently degrade. The table runs in-process; a few cases also run through the binary.
struct Case {
    name: &'static str,
    yaml: &'static str,
    expect: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "bad indentation",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    client_id: abc
   client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 6 column 4: did not find expected '-' indicator, while parsing a block collection at line 3 column 3",
    },
    Case {
        name: "tab indentation",
        yaml: "state_dir: {dir}/state\ncredentials:\n  - name: pharmacy\n\tprovider: yavapteke\n",
        expect: "invalid config `{dir}/config.yaml`: line 4 column 1: found a tab character that violates indentation, while scanning a plain scalar at line 3 column 11",
    },
    Case {
        name: "empty file",
        yaml: "",
        expect: "invalid config `{dir}/config.yaml`: the file is empty",
    },
    Case {
        name: "whitespace-only file",
        yaml: "\n   \n\n",
        expect: "invalid config `{dir}/config.yaml`: the file is empty",
    },
    Case {
        name: "unknown top-level key",
        yaml: r#"state_dir: {dir}/state
credentails:
  - name: pharmacy
"#,
        expect: "invalid config `{dir}/config.yaml`: line 2 column 1: unknown key `credentails`; did you mean `credentials`?",
    },
    Case {
        name: "unknown credential key",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: vandar-main
    provider: vandar
    refresh_tokn: { file: {dir}/secrets/vandar-refresh }
    base_url: {url}
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 5 column 5: credentials[0]: unknown key `refresh_tokn`; did you mean `refresh_token`?",
    },
    Case {
        name: "unknown output key",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
        mdoe: "0640"
"#,
        expect: "invalid config `{dir}/config.yaml`: line 10 column 9: credentials[0].outputs[0]: unknown key `mdoe`; did you mean `mode`?",
    },
    Case {
        name: "unknown secret source",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { fiel: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 7 column 20: credentials[0].client_secret: unknown secret source `fiel`; did you mean `file`?; a secret is a string, or one of {file: PATH}, {env: NAME}, {credential: NAME}",
    },
    Case {
        name: "unknown provider",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: vandar-main
    provider: vandr
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 4 column 15: credentials[0].provider: unknown value `vandr`; did you mean `vandar`?",
    },
    Case {
        name: "wrong type: outputs is a string",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 7 column 14: credentials[0].outputs: invalid type: string \"{dir}/out/pharmacy.token\", expected a sequence",
    },
    Case {
        name: "key of another provider",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    virtual_number: "30001234"
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `vandar-main` (line 3): `virtual_number` does not apply to provider vandar (it takes base_url, refresh_token, mobile, password, login_version)",
    },
    Case {
        name: "duplicate credential names",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/one.token
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/two.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy`: the name is used 2 times; names must be unique",
    },
    Case {
        name: "two outputs on one path in one credential",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/same.token
      - file: {dir}/out/same.token
        format: json
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy`: output `{dir}/out/same.token` collides with output `{dir}/out/same.token` of credential `pharmacy`; two outputs cannot write the same path",
    },
    Case {
        name: "two outputs on one path across credentials (spelled differently)",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/same.token
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    outputs:
      - file: {dir}/out/./x/../same.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `vandar-main`: output `{dir}/out/./x/../same.token` collides with output `{dir}/out/same.token` of credential `pharmacy`; two outputs cannot write the same path",
    },
    Case {
        name: "a file output inside a dir output",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - dir: {dir}/out/shared
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    outputs:
      - file: {dir}/out/shared/token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `vandar-main`: output `{dir}/out/shared/token` collides with output `{dir}/out/shared` of credential `pharmacy`; two outputs cannot write the same path",
    },
    Case {
        name: "an output inside state_dir",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/state/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy`: output `{dir}/state/pharmacy.token` is inside state_dir `{dir}/state`",
    },
    Case {
        name: "refresh.at 0%",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    refresh: { at: 0% }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `refresh.at` is 0%; it must be between 0% and 100%, exclusive",
    },
    Case {
        name: "refresh.at 100%",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    refresh: { at: 100% }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `refresh.at` is 100%; it must be between 0% and 100%, exclusive",
    },
    Case {
        name: "refresh.at 150% in defaults",
        yaml: r#"state_dir: {dir}/state
defaults:
  refresh: { at: 150% }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 5): `refresh.at` is 150%; it must be between 0% and 100%, exclusive",
    },
    Case {
        name: "refresh.jitter 100%",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    refresh: { jitter: 100% }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `refresh.jitter` is 100%; it must be from 0% to below 100%",
    },
    Case {
        name: "bad duration",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    timeout: 5x
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 8 column 14: credentials[0].timeout: `5x` is not a duration; write a number and a unit, like 500ms, 30s, 5m, 2h or 4d",
    },
    Case {
        name: "share without a percent sign",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    refresh: { at: 80 }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 8 column 20: credentials[0].refresh.at: `80` is not a share; write a percentage like 80%",
    },
    Case {
        name: "refresh.every longer than the documented lifetime",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    refresh: { every: 2h }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `refresh.every` (2h) must be shorter than the token lifetime (1h)",
    },
    Case {
        name: "refresh.every longer than the configured lifetime",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: any-idp
    provider: oauth2
    token_url: {url}/oauth2/token
    client_id: tokend
    client_secret: { file: {dir}/secrets/oauth }
    lifetime: 10m
    refresh: { every: 10m }
    outputs:
      - file: {dir}/out/idp.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `any-idp` (line 3): `refresh.every` (10m) must be shorter than the token lifetime (10m)",
    },
    Case {
        name: "token_valid_days 0",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { file: {dir}/secrets/saba }
    virtual_number: "30001234"
    token_valid_days: 0
    outputs:
      - file: {dir}/out/saba.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `saba-sms` (line 3): `token_valid_days` is 0; Saba accepts 1 to 365",
    },
    Case {
        name: "token_valid_days 366",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { file: {dir}/secrets/saba }
    virtual_number: "30001234"
    token_valid_days: 366
    outputs:
      - file: {dir}/out/saba.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `saba-sms` (line 3): `token_valid_days` is 366; Saba accepts 1 to 365",
    },
    Case {
        name: "missing secret file",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/no-such-file }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `client_secret`: cannot read secret file `{dir}/secrets/no-such-file`: no such file or directory",
    },
    Case {
        name: "empty secret file",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/empty }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `client_secret`: secret file `{dir}/secrets/empty` is empty",
    },
    Case {
        name: "unset environment variable",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { env: TOKEND_TEST_SURELY_UNSET }
    virtual_number: "30001234"
    outputs:
      - file: {dir}/out/saba.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `saba-sms` (line 3): `password`: environment variable `TOKEND_TEST_SURELY_UNSET` is not set",
    },
    Case {
        name: "systemd credential without CREDENTIALS_DIRECTORY",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { credential: saba-password }
    virtual_number: "30001234"
    outputs:
      - file: {dir}/out/saba.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `saba-sms` (line 3): `password`: `{credential: saba-password}` needs $CREDENTIALS_DIRECTORY, which is not set (run under systemd with LoadCredential=saba-password:PATH)",
    },
    Case {
        name: "upper-case name",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: Vandar_Main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `Vandar_Main` (line 3): `name` `Vandar_Main` is not valid: use lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 100 characters",
    },
    Case {
        name: "name with a slash",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: ../evil
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `../evil` (line 3): `name` `../evil` is not valid: use lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 100 characters",
    },
    Case {
        name: "no outputs",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): no `outputs`: say where the token should be written",
    },
    Case {
        name: "no credentials",
        yaml: "state_dir: {dir}/state\ncredentials: []\n",
        expect: "invalid config `{dir}/config.yaml`: `credentials`: no credentials are configured, so there is nothing to do",
    },
    Case {
        name: "output with file and dir",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
        dir: {dir}/out/pharmacy
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): outputs[0]: set `file` or `dir`, not both",
    },
    Case {
        name: "format template without template",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
        format: template
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): outputs[0]: `format: template` needs a `template:`",
    },
    Case {
        name: "unknown template placeholder",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
      - file: {dir}/out/pharmacy.header
        format: template
        template: "Authorization: Bearer {{tokn}}"
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): outputs[1]: `template` uses unknown placeholder(s) {{tokn}}; known: {{token}}, {{token_type}}, {{expires_at}}, {{credential}}",
    },
    Case {
        name: "vandar with neither refresh_token nor login",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `vandar-main` (line 3): vandar needs `refresh_token` (v3 chain) or `mobile` + `password` (v2 login), or both",
    },
    Case {
        name: "vandar mobile without password",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    mobile: "09123456789"
    outputs:
      - file: {dir}/out/vandar.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `vandar-main` (line 3): `mobile` is set but `password` is missing",
    },
    Case {
        name: "saba without username",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: saba-sms
    provider: saba
    base_url: {url}
    password: { file: {dir}/secrets/saba }
    virtual_number: "30001234"
    outputs:
      - file: {dir}/out/saba.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `saba-sms` (line 3): `username` is required",
    },
    Case {
        name: "oauth2 without token_url",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: any-idp
    provider: oauth2
    client_id: tokend
    client_secret: { file: {dir}/secrets/oauth }
    outputs:
      - file: {dir}/out/idp.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `any-idp` (line 3): `token_url` is required for provider oauth2 (or `issuer`, to discover it)",
    },
    Case {
        name: "token_url with an ftp scheme",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: ftp://example.com/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `token_url` ftp://example.com/token has scheme `ftp`; use https",
    },
    Case {
        name: "ha group with capitals",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: etcd
  group: Pay_Ments
  etcd: { endpoints: [http://127.0.0.1:2379] }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: `ha.group`: `Pay_Ments` may hold only lowercase letters, digits and `-` (it names etcd keys and Kubernetes objects)",
    },
    Case {
        name: "ha takeover shorter than the claim",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: etcd
  group: g1
  claim_ttl: 90s
  takeover_after: 30s
  etcd: { endpoints: [http://127.0.0.1:2379] }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: `ha.takeover_after`: 30s is shorter than `claim_ttl` (1m 30s): a claim could be taken over while its holder may still be sending",
    },
    Case {
        name: "ha unknown key",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: etcd
  group: g1
  leese: 15s
  etcd: { endpoints: [http://127.0.0.1:2379] }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: line 5 column 3: ha: unknown key `leese`; did you mean `lease`?",
    },
    Case {
        name: "ha etcd endpoint not a URL",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: etcd
  group: g1
  etcd: { endpoints: [127.0.0.1:2379] }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: `ha.etcd.endpoints`: `127.0.0.1:2379` is not an http:// or https:// URL",
    },
    // `check` prints the endpoints: a password written into one must be refused, unechoed.
    Case {
        name: "ha etcd endpoint with a password in it",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: etcd
  group: g1
  etcd: { endpoints: [https://root:Hunter2canary@10.0.0.5:2379] }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: `ha.etcd.endpoints`: endpoint 1 holds a user name or password (not shown); write it as `https://host:port` and set `username` and `password` (a secret)",
    },
    Case {
        name: "ha kubernetes state secret name",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: kubernetes
  group: g1
  kubernetes: { namespace: Apps }
credentials:
  - name: pharmacy_main
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml` (2 problems):\n  - credential `pharmacy_main`: its state Secret would be named `tokend-g1-pharmacy_main`, which Kubernetes refuses (lowercase letters, digits, `-` and `.` only); rename the credential\n  - `ha.kubernetes.namespace`: `Apps` is not a valid namespace name: lower-case letters, digits and `-`, at most 63 characters",
    },
    Case {
        name: "ha etcd user without password",
        yaml: r#"state_dir: {dir}/state
ha:
  backend: etcd
  group: g1
  etcd: { endpoints: [http://127.0.0.1:2379], username: tokend }
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: `ha.etcd`: `username` and `password` go together: configure both or neither",
    },
    Case {
        name: "invalid listen",
        yaml: r#"state_dir: {dir}/state
listen: 127.0.0.1
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: `listen`: `127.0.0.1` is not an address; write IP:PORT, like 127.0.0.1:9464",
    },
    Case {
        name: "retry.max shorter than retry.initial",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    retry: { initial: 10s, max: 1s }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): `retry.max` (1s) is shorter than `retry.initial` (10s)",
    },
    Case {
        name: "bad mode",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
        mode: "0999"
"#,
        expect: "invalid config `{dir}/config.yaml`: line 10 column 15: credentials[0].outputs[0].mode: `0999` is not a file mode; write it in octal, like \"0640\"",
    },
    Case {
        name: "setuid mode",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
        mode: "4755"
"#,
        expect: "invalid config `{dir}/config.yaml`: line 10 column 15: credentials[0].outputs[0].mode: file mode `4755` sets special bits (setuid, setgid or sticky); only 0000..0777 is allowed",
    },
    Case {
        name: "unknown group",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
        group: tokend-no-such-group
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): outputs[0]: group `tokend-no-such-group` does not exist on this host",
    },
    Case {
        name: "signal hook without pid_file",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
    on_refresh:
      - signal: HUP
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): on_refresh[0]: a `signal` hook needs `pid_file`",
    },
    Case {
        name: "bad signal name",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
    on_refresh:
      - exec: ["/bin/true"]
      - signal: HUPP
        pid_file: {dir}/app.pid
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): on_refresh[1]: `HUPP` is not a signal name (HUP, USR1, TERM, ...)",
    },
    Case {
        name: "exec hook with an empty program",
        yaml: r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
    on_refresh:
      - exec: []
"#,
        expect: "invalid config `{dir}/config.yaml`: credential `pharmacy` (line 3): on_refresh[0]: `exec` needs a program: [\"/path/to/program\", \"arg\", ...]",
    },
];

/// Writes the secrets the snippets refer to, so each snippet has exactly the fault it names.
fn write_secrets(env: &Env) {
    env.secret("yav", "yav-secret\n");
    env.secret("vandar-refresh", "def502seed\n");
    env.secret("saba", "saba-pass\n");
    env.secret("oauth", "oauth-secret\n");
    env.secret("empty", "\n");
}

/// The error `tokend::config::parse` gives for the snippet, as the binary would print it
/// after `tokend: `, with the test's directory written `{dir}`.
fn parse_error(case: &Case) -> String {
    let env = Env::new();
    write_secrets(&env);
    let path = env.raw_config(case.yaml);
    let text = std::fs::read_to_string(&path).unwrap();
    let dir = env.dir.path().display().to_string();
    match tokend::config::parse(
        &text,
        &path,
        &tokend::secret::ProcessEnv,
        tokend::config::Secrets::Resolve,
    ) {
        Ok(_) => "<accepted>".to_owned(),
        Err(e) => e
            .to_string()
            .replace(&dir, "{dir}")
            .replace(&env.url(), "{url}"),
    }
}

#[test]
fn table_of_invalid_configs_gives_exact_located_messages() {
    assert!(CASES.len() >= 20);
    // Every case runs even when one fails, so a regression shows its whole extent.
    let failed: Vec<String> = CASES
        .iter()
        .filter_map(|case| {
            let got = parse_error(case);
            (got != case.expect).then(|| {
                format!(
                    "case `{}`:\n  want: {}\n  got:  {}",
                    case.name, case.expect, got
                )
            })
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Runs `args` against the snippet and asserts exit 2, exactly `tokend: ` and the case's
/// text on stderr, and that nothing reached the emulator or an output.
#[track_caller]
fn assert_refused(env: &Env, case: &Case, args: &[&str]) -> Run {
    let dir = env.dir.path().display().to_string();
    let r = env.run(args);
    let context = format!(
        "case `{}` with `{}`\n--- stdout\n{}\n--- stderr\n{}",
        case.name,
        args.join(" "),
        r.stdout,
        r.stderr
    );
    assert_eq!(r.code, 2, "exit code, {context}");
    assert_eq!(
        r.stderr.trim_end(),
        format!("tokend: {}", case.expect.replace("{dir}", &dir)),
        "{context}"
    );
    assert_eq!(env.total_requests(), 0, "a request was sent, {context}");
    assert!(
        !env.path("out").exists(),
        "an output was written, {context}"
    );
    r
}

/// Through the binary, one case of each kind (YAML syntax, unknown key, bad value, a whole-
/// config rule, an unreadable secret): exit 2 before any request, for every command that
/// loads the config.
#[test]
fn invalid_configs_are_refused_with_exit_2_by_every_command() {
    for name in [
        "bad indentation",
        "unknown credential key",
        "bad duration",
        "duplicate credential names",
        "missing secret file",
    ] {
        let case = CASES.iter().find(|c| c.name == name).unwrap();
        let env = Env::new();
        write_secrets(&env);
        env.raw_config(case.yaml);
        assert_refused(&env, case, &["once"]);
        assert_refused(&env, case, &["once", "--force"]);
        let r = assert_refused(&env, case, &["check"]);
        assert!(r.stdout.is_empty(), "check printed a plan: {}", r.stdout);
    }
}

#[test]
fn run_refuses_invalid_configs_with_exit_2() {
    for name in [
        "unknown credential key",
        "refresh.at 150% in defaults",
        "missing secret file",
    ] {
        let case = CASES.iter().find(|c| c.name == name).unwrap();
        let env = Env::new();
        write_secrets(&env);
        env.raw_config(case.yaml);
        let mut d = env.daemon();
        assert_eq!(
            d.wait_exit(Duration::from_secs(10)),
            Some(2),
            "case `{name}`: {}",
            d.log()
        );
        let log = d.log();
        let want = case
            .expect
            .replace("{dir}", &env.dir.path().display().to_string());
        assert!(
            log.contains(&want),
            "case `{name}`: log lacks `{want}`: {log}"
        );
        assert_eq!(env.total_requests(), 0, "case `{name}`");
    }
}

#[test]
fn three_independent_errors_are_reported_together() {
    let env = Env::new();
    write_secrets(&env);
    env.raw_config(
        r#"state_dir: {dir}/state
listen: nowhere
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    refresh: { at: 150% }
    outputs:
      - file: {dir}/out/pharmacy.token
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { file: {dir}/secrets/missing-saba }
    virtual_number: "30001234"
    outputs:
      - file: {dir}/out/saba.token
"#,
    );
    let dir = env.dir.path().display().to_string();
    for args in [&["check"][..], &["once"][..]] {
        let r = env.run(args);
        r.assert_code(2);
        assert!(r.stderr.contains("3 problems"), "{}", r.stderr);
        for want in [
            "`listen`".to_owned(),
            "`nowhere`".to_owned(),
            "credential `pharmacy` (line 4)".to_owned(),
            "`refresh.at` is 150%".to_owned(),
            "credential `saba-sms` (line 12)".to_owned(),
            format!("{dir}/secrets/missing-saba"),
        ] {
            assert!(r.stderr.contains(&want), "lacks `{want}`: {}", r.stderr);
        }
        // One problem per line, so that each can be read on its own.
        let problem_lines = r
            .stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("- "))
            .count();
        assert_eq!(problem_lines, 3, "{}", r.stderr);
    }
    assert_eq!(env.total_requests(), 0);
}

#[test]
fn unclosed_quote_points_at_the_quote() {
    let env = Env::new();
    write_secrets(&env);
    env.raw_config(
        r#"state_dir: {dir}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    client_id: "abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
"#,
    );
    for args in [&["check"][..], &["once"][..]] {
        let r = env.run(args);
        r.assert_code(2);
        assert!(
            r.stderr
                .contains(&env.path("config.yaml").display().to_string()),
            "{}",
            r.stderr
        );
        // libyaml reports the end of the file as the problem, and the opening quote
        // (line 5 column 16) as the context: the operator needs the latter.
        assert!(r.stderr.contains("line 5 column 16"), "{}", r.stderr);
        assert!(r.stderr.contains("quoted"), "{}", r.stderr);
    }
    assert_eq!(env.total_requests(), 0);
}

/// A value that parses as YAML but not as its type (a duration, a share, a mode) must be
/// located at its own line and named by its key, as an unknown key or provider is.
#[test]
fn bad_values_are_located_at_their_own_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("    timeout: 5x\n", "line 8 column 14", "timeout"),
        (
            "    refresh: { at: 80 }\n",
            "line 8 column 20",
            "refresh.at",
        ),
        ("    retry: { max: 5 }\n", "line 8 column 19", "retry.max"),
        (
            "    outputs:\n      - file: {dir}/out/p.json\n        mode: \"0999\"\n",
            "line 10 column 15",
            "mode",
        ),
    ];
    let mut wrong = Vec::new();
    for (line, location, key) in cases {
        let env = Env::new();
        write_secrets(&env);
        let outputs = if line.contains("outputs") {
            ""
        } else {
            "    outputs:\n      - file: {dir}/out/pharmacy.token\n"
        };
        env.raw_config(&format!(
            r#"state_dir: {{dir}}/state
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: {{ file: {{dir}}/secrets/yav }}
{line}{outputs}"#
        ));
        let r = env.run(&["check"]);
        r.assert_code(2);
        if !r.stderr.contains(location) || !r.stderr.contains(key) {
            wrong.push(format!(
                "`{}`: want `{location}` and `{key}`, got {}",
                line.trim(),
                r.stderr.trim()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// EnvFilter reads any word as a target name, so `level: inof` would be accepted and log
/// nothing at all: a typo that silences the daemon.
#[test]
fn misspelled_log_level_is_refused() {
    for level in ["inof", "loud", "warning"] {
        let env = Env::new();
        write_secrets(&env);
        env.raw_config(&format!(
            r#"state_dir: {{dir}}/state
log: {{ level: {level} }}
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    outputs:
      - file: {{dir}}/out/pharmacy.token
"#
        ));
        for args in [&["check"][..], &["once"][..]] {
            let r = env.run(args);
            r.assert_code(2);
            assert!(r.stderr.contains("`log.level`"), "{level}: {}", r.stderr);
            assert!(r.stderr.contains(&format!("`{level}`")), "{}", r.stderr);
        }
        assert_eq!(env.total_requests(), 0, "{level}");
    }
}

#[test]
fn missing_config_file_is_exit_2_naming_the_path() {
    let env = Env::new();
    let r = env.run(&["once"]);
    r.assert_code(2);
    assert!(
        r.stderr
            .contains(&env.path("config.yaml").display().to_string()),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no such file"), "{}", r.stderr);
    for args in [&["check"][..], &["status"][..]] {
        let r = env.run(args);
        r.assert_code(2);
        assert!(r.stderr.contains("config.yaml"), "{}", r.stderr);
    }
    let mut d = env.daemon();
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(2), "{}", d.log());
    assert_eq!(env.total_requests(), 0);
}

fn bare_tokend(env: &Env) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG")
        .env_remove("TOKEND_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .current_dir(env.dir.path());
    cmd
}

#[test]
fn tokend_config_env_var_is_used_without_config_flag() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let path = env.path("config.yaml");
    // Moved away from the working directory's config.yaml, so only TOKEND_CONFIG finds it.
    let elsewhere = env.path("elsewhere.yaml");
    std::fs::rename(&path, &elsewhere).unwrap();

    let r = Run::from(
        bare_tokend(&env)
            .arg("check")
            .env("TOKEND_CONFIG", &elsewhere)
            .output()
            .unwrap(),
    );
    r.assert_code(0);
    assert!(r.stdout.contains("pharmacy"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&elsewhere.display().to_string()),
        "{}",
        r.stdout
    );

    let r = Run::from(
        bare_tokend(&env)
            .arg("once")
            .env("TOKEND_CONFIG", &elsewhere)
            .output()
            .unwrap(),
    );
    r.assert_code(0);
    assert!(!env.read("out/pharmacy.token").is_empty());

    // An unreadable TOKEND_CONFIG is reported by its own path, not the default's.
    let missing = env.path("missing.yaml");
    let r = Run::from(
        bare_tokend(&env)
            .arg("check")
            .env("TOKEND_CONFIG", &missing)
            .output()
            .unwrap(),
    );
    r.assert_code(2);
    assert!(
        r.stderr.contains(&missing.display().to_string()),
        "{}",
        r.stderr
    );

    // --config wins over TOKEND_CONFIG.
    let r = Run::from(
        bare_tokend(&env)
            .arg("--config")
            .arg(&elsewhere)
            .arg("check")
            .env("TOKEND_CONFIG", &missing)
            .output()
            .unwrap(),
    );
    r.assert_code(0);
}
