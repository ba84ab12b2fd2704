//! The bad-flag corpus of the real `weft-lab` binary: flags it must refuse before it builds
//! anything (no root needed). Each case exits with the expected status (2 for what clap
//! refuses, 1 for what weft-lab refuses), names the flag and the fix on stderr, keeps stderr
//! short and never panics.

use std::process::{Command, Stdio};

use weft_testbed::corpus;

#[test]
fn bad_flags_are_refused_with_the_flag_named_and_no_panic() {
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["soak", "-o", "yaml"],
            2,
            "invalid value 'yaml' for '--output <OUTPUT>'",
        ),
        (
            &["demo", "-o", "yaml"],
            2,
            "invalid value 'yaml' for '--output <OUTPUT>'",
        ),
        (
            &["demo", "--nodes", "many"],
            2,
            "invalid value 'many' for '--nodes <N>'",
        ),
        (
            &["demo", "--pods-per-node", "0"],
            1,
            "--pods-per-node 0 is out of range: use 1 to 20 pods per node",
        ),
        (
            &["demo", "--pods", "0"],
            1,
            "--pods-per-node 0 is out of range",
        ),
        (
            &["soak", "--pods-per-node", "0"],
            1,
            "--pods-per-node 0 is out of range",
        ),
        (
            &["connectivity", "test", "-o", "yaml"],
            2,
            "invalid value 'yaml' for '--output <OUTPUT>'",
        ),
    ];
    corpus::assert_corpus(
        "weft-lab",
        cases,
        |(args, _, _)| args.join(" "),
        |(args, code, needle)| {
            let out = Command::new(env!("CARGO_BIN_EXE_weft-lab"))
                .args(*args)
                .stdin(Stdio::null())
                .output()
                .expect("run weft-lab");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut problems: Vec<String> = corpus::exit_problem(&out, *code).into_iter().collect();
            problems.extend(corpus::error_problems(&stderr, [needle], &[]));
            if !out.stdout.is_empty() {
                problems.push(format!(
                    "printed on stdout: {}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
            if !problems.is_empty() {
                problems.push(format!("stderr:\n{stderr}"));
            }
            problems
        },
    );
}

#[test]
fn every_command_has_help_and_old_spellings_are_named() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_weft-lab"))
            .args(args)
            .output()
            .expect("run weft-lab");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for sub in ["demo", "soak", "connectivity"] {
        assert!(top.contains(sub), "--help lacks {sub}: {top}");
    }
    for (args, canonical, old) in [
        (
            &["soak", "--help"][..],
            "--output",
            "`--json`, its old spelling",
        ),
        (
            &["demo", "--help"],
            "--pods-per-node",
            "`--pods` is the old spelling",
        ),
        (&["connectivity", "test", "--help"], "--testbed", ""),
    ] {
        let text = help(args);
        assert!(text.contains("Usage: weft-lab"), "{args:?}: {text}");
        assert!(text.contains(canonical), "{args:?}: {text}");
        assert!(text.contains(old), "{args:?}: {old:?} missing: {text}");
    }
}
