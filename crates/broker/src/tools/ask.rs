//! `permission-broker ask`: one permission check sent to a running broker through the client
//! crate, exactly as an embedding runtime would.

use crate::settings::DEFAULT_SOCKET;
use permission_broker_protocol::Permission;
use std::path::PathBuf;
use std::process::ExitCode;

#[allow(clippy::print_stdout)]
pub fn run(
    socket: Option<PathBuf>,
    require_uid: Option<u32>,
    any_answer: bool,
    permission: Permission,
    value: Option<String>,
) -> ExitCode {
    use permission_broker_client::{BROKER_PATH_VAR, Client};
    let path = socket
        .or_else(|| std::env::var_os(BROKER_PATH_VAR).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let client = match require_uid {
        Some(uid) => Client::connect_requiring_uid(path, uid),
        None => Client::connect(path),
    };
    let decision = client.check(permission, value.as_deref());
    let denied = if any_answer {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    match (decision.is_allowed(), decision.reason) {
        (true, _) => {
            println!("allow");
            ExitCode::SUCCESS
        }
        (false, Some(reason)) => {
            println!("deny: {reason}");
            denied
        }
        (false, None) => {
            println!("deny");
            denied
        }
    }
}
