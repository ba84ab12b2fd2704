//! weft-cni: the CNI plugin binary (install as /opt/cni/bin/flannel). The runtime sets
//! CNI_* in the environment and writes the network config to stdin; the result or the CNI
//! error goes to stdout and the exit status says which.

use std::io::Write;
use std::process::ExitCode;

use weft_cni::Response;
use weft_cni::env::RawEnv;
use weft_cni::invoke::ProcessExec;

fn main() -> ExitCode {
    let raw = RawEnv::from_process();
    let response = match weft_cni::read_stdin(std::io::stdin().lock()) {
        Ok(stdin) => weft_cni::run(&raw, &stdin, &ProcessExec),
        Err(err) => {
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
