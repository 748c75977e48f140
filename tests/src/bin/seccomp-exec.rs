//! `seccomp-exec ALLOWED -- PROGRAM ARGS...`: loads, through libseccomp, the system-call filter a
//! systemd unit's `SystemCallFilter=` lines amount to -- only the calls named in the file ALLOWED
//! (one per line) are allowed, every other fails with EPERM (`SystemCallErrorNumber=EPERM`), on the
//! native architecture only (`SystemCallArchitectures=native`) -- then execs PROGRAM under it, as
//! systemd's exec does.
//!
//! `seccomp-exec ALLOWED --probe PID` (ALLOWED `-`: without a filter): under the filter, tries to reach into process PID the ways
//! the unit denies (read and write its memory, attach to it, take its descriptor 0) and prints one
//! line per call, `name: ok` or `name: <errno>`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use std::os::unix::process::CommandExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: seccomp-exec ALLOWED -- PROGRAM ARGS... | seccomp-exec ALLOWED --probe PID"
        );
        std::process::exit(2);
    }
    // `-`: no filter (the control run of a probe).
    if args[1] != "-" {
        let allowed = std::fs::read_to_string(&args[1]).unwrap_or_else(|e| {
            eprintln!("seccomp-exec: {}: {e}", args[1]);
            std::process::exit(2)
        });
        load(&allowed);
    }
    match args[2].as_str() {
        "--" => {
            let e = std::process::Command::new(&args[3]).args(&args[4..]).exec();
            eprintln!("seccomp-exec: cannot exec {}: {e}", args[3]);
            std::process::exit(126);
        }
        "--probe" => probe(args[3].parse().unwrap_or_else(|_| std::process::exit(2))),
        _ => std::process::exit(2),
    }
}

fn load(allowed: &str) {
    let fail = |what: &str, e: libseccomp::error::SeccompError| -> ! {
        eprintln!("seccomp-exec: {what}: {e}");
        std::process::exit(2)
    };
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(libc_eperm()))
        .unwrap_or_else(|e| fail("new filter", e));
    // As root (CAP_SYS_ADMIN), without no_new_privs, as systemd and Docker load it: file
    // capabilities of what is exec'd later still apply.
    if nix::unistd::geteuid().is_root() {
        filter
            .set_ctl_nnp(false)
            .unwrap_or_else(|e| fail("no_new_privs off", e));
    }
    let (mut known, mut unknown) = (0, 0);
    for name in allowed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // Names of other architectures (arm_fadvise64_64, ...) do not resolve here.
        match ScmpSyscall::from_name(name) {
            Ok(call) if filter.add_rule(ScmpAction::Allow, call).is_ok() => known += 1,
            _ => unknown += 1,
        }
    }
    filter.load().unwrap_or_else(|e| fail("load", e));
    eprintln!(
        "seccomp-exec: filter loaded: {known} calls allowed ({unknown} names not on this architecture)"
    );
}

const fn libc_eperm() -> i32 {
    1
}

fn probe(pid: i32) {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
    use std::io::{IoSlice, IoSliceMut};
    let target = nix::unistd::Pid::from_raw(pid);
    let report = |name: &str, result: Result<(), nix::errno::Errno>| match result {
        Ok(()) => println!("{name}: ok"),
        Err(e) => println!("{name}: {}", e.desc()),
    };
    // A writable address of the target's: its stack, which stays writable. (Its first
    // read-write mapping, taken before, may be one the loader is about to make read-only:
    // RELRO, while a just-started target is still being linked. The write then failed.)
    let base = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .and_then(|m| {
            let line = m
                .lines()
                .find(|l| {
                    l.ends_with("[stack]")
                        && l.split_whitespace()
                            .nth(1)
                            .is_some_and(|p| p.starts_with("rw"))
                })?
                .to_owned();
            usize::from_str_radix(line.split('-').next()?, 16).ok()
        })
        .unwrap_or(0);
    let mut buf = [0u8; 8];
    let remote = [RemoteIoVec { base, len: 8 }];
    report(
        "process_vm_readv",
        process_vm_readv(target, &mut [IoSliceMut::new(&mut buf)], &remote).map(drop),
    );
    // Writes back what was read: harmless if it were allowed.
    report(
        "process_vm_writev",
        process_vm_writev(target, &[IoSlice::new(&buf)], &remote).map(drop),
    );
    report(
        "ptrace",
        nix::sys::ptrace::seize(target, nix::sys::ptrace::Options::empty()),
    );
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).unwrap_or_else(|| std::process::exit(2)),
        rustix::process::PidfdFlags::empty(),
    );
    match pidfd {
        Ok(pidfd) => report(
            "pidfd_getfd",
            rustix::process::pidfd_getfd(&pidfd, 0, rustix::process::PidfdGetfdFlags::empty())
                .map(drop)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error())),
        ),
        Err(e) => println!("pidfd_open: {e}"),
    }
}
