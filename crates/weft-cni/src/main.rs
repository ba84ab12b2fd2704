//! weft-cni: the CNI plugin binary (install as /opt/cni/bin/flannel). The runtime sets
//! CNI_* in the environment and writes the network config to stdin; the result or the CNI
//! error goes to stdout and the exit status says which.

use std::io::{Read, Write};
use std::process::ExitCode;

use weft_cni::env::RawEnv;
use weft_cni::invoke::ProcessExec;
use weft_cni::{Error, Response};

fn main() -> ExitCode {
    let raw = RawEnv::from_process();
    let mut stdin = Vec::new();
    let response = match std::io::stdin().lock().read_to_end(&mut stdin) {
        Ok(_) => weft_cni::run(&raw, &stdin, &ProcessExec),
        Err(source) => {
            let err = Error::ReadStdin { source };
            eprintln!("weft-cni: {err}");
            err.to_response("")
        }
    };
    emit(&response)
}

/// Prints the response and turns its status into the exit code.
fn emit(response: &Response) -> ExitCode {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(&response.stdout)
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::from(u8::try_from(response.exit_code).unwrap_or(1))
}
