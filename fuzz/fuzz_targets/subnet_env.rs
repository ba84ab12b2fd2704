#![no_main]
//! subnet.env as weftd (previous subnet), weft-core and the CNI plugin read it: any text gives
//! a result or a short error, never a panic, and an accepted file renders back to itself.

use libfuzzer_sys::fuzz_target;
use weft_core::subnet_env::{SubnetEnv, previous_network, previous_subnet};

/// The bad-input corpus's limit on an error message (crates/weft-core/tests/bad_input.rs).
const MAX_MESSAGE_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = previous_subnet(text);
    let _ = previous_network(text);
    match weft_cni::subnet::parse(text) {
        Ok(env) => assert!(!env.networks.is_empty() || !env.ipv6_networks.is_empty()),
        Err(msg) => assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len()),
    }
    let env = match SubnetEnv::parse(text) {
        Ok(env) => env,
        Err(err) => {
            let msg = err.to_string();
            assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len());
            return;
        }
    };
    let rendered = env.render();
    let again = SubnetEnv::parse(&rendered)
        .unwrap_or_else(|e| panic!("the rendered file does not parse: {e}\n{rendered}"));
    assert_eq!(
        again, env,
        "the rendered file reads back differently:\n{rendered}"
    );
});
