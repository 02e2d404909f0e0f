//! The first thing to break if anything does: each provider end to end through `once`.

use crate::support::*;

#[test]
fn once_writes_a_yavapteke_token() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.run(&["once"]).assert_code(0);
    let token = env.read("out/pharmacy.token");
    assert!(env.emu.issued_tokens().contains(&token), "{token}");
    assert_eq!(mode(&env.path("out/pharmacy.token")), 0o600);
    assert_eq!(
        env.emu.last_yavapteke_secret_field().as_deref(),
        Some("client_secret")
    );
}
