//! `ValidatedConfig::parse` on arbitrary text: TOML, then every validation
//! step (core: entitlements, tools, operations, services, notify, OIDC; then
//! each provider section and entitlement target by its kind).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server reads the file as UTF-8 and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = airlock_providers::ValidatedConfig::parse(text) {
        // What the server does next with a loaded catalog: look names up.
        for name in config.users.keys() {
            let _ = config.check_login_name(name);
        }
        for name in config.entitlements.keys() {
            let _ = config.entitlement(name.as_str());
        }
    }
});
