//! The supervisor's platform-specific parts, all in this one file: the
//! child subreaper, listing a process's children, tying a service to the
//! supervisor's life (`PR_SET_PDEATHSIG`), naming who listens on a TCP
//! address, a process's memory, and the abstract socket namespace. On Linux they read `/proc` and call `prctl(2)`; elsewhere
//! (macOS) there is no subreaper, no `/proc` and no death signal, and each
//! function does the little it can, as its doc says.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::Command;

use nix::unistd::Pid;

cfg_if::cfg_if! {
    if #[cfg(target_os = "linux")] {
        use std::net::{Ipv4Addr, Ipv6Addr, IpAddr};
        use std::os::unix::process::CommandExt as _;

        /// Makes orphaned descendants children of this process (Linux's
        /// child subreaper), so they are reaped and stopped with the rest
        /// even when stigmer is not PID 1.
        pub(crate) fn become_subreaper() {
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::debug!("cannot become a child subreaper: {e}");
            }
        }

        /// Whether this process has one thread (`/proc/self/task`; assumed
        /// without `/proc`).
        pub(crate) fn single_threaded() -> bool {
            std::fs::read_dir("/proc/self/task").map_or(true, |d| d.count() == 1)
        }

        /// A pipe whose two ends are close-on-exec.
        pub(crate) fn cloexec_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        }

        /// The live (not zombie) children of `parent`, from `/proc/*/stat`.
        pub(crate) fn children(parent: Pid) -> Vec<Pid> {
            let mut found = Vec::new();
            let Ok(dir) = std::fs::read_dir("/proc") else { return found };
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                if let Some((state, ppid)) = state_and_ppid(&stat) {
                    if ppid == parent.as_raw() && state != 'Z' && state != 'X' {
                        found.push(Pid::from_raw(pid));
                    }
                }
            }
            found
        }

        /// The state letter and the parent of a `/proc/PID/stat` line
        /// ("pid (comm) S ppid ..."; comm may hold spaces and parentheses).
        fn state_and_ppid(stat: &str) -> Option<(char, i32)> {
            let rest = stat.rsplit_once(')')?.1;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            Some((state, fields.next()?.parse().ok()?))
        }

        /// The name of process `pid` (its `comm`), if it can be read.
        pub(crate) fn name(pid: Pid) -> Option<String> {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some(comm.trim_end().to_owned())
        }

        /// Has the service started by `cmd` killed when the thread that
        /// spawns it ends: `prctl(PR_SET_PDEATHSIG, SIGKILL)` in the child,
        /// then a check that its parent did not die before that took effect.
        ///
        /// The death signal fires when the *thread* that forked the child
        /// ends, not the process: spawn only from a thread that lives as long
        /// as the supervisor (its main thread, the one in `block_on`).
        pub(crate) fn tie_to_parent(cmd: &mut Command) {
            let parent = nix::unistd::getpid();
            // SAFETY: the closure runs in the child between fork and exec. It
            // makes only raw system calls (prctl(2), getppid(2)), which are
            // async-signal-safe; `parent` is a plain copied value, and an
            // `io::Error` made from an errno does not allocate, so nothing is
            // allocated and no lock is taken.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                    // The supervisor died between fork and prctl: the signal
                    // will never come. An error here makes std's child end
                    // with `_exit` before the exec.
                    if nix::unistd::getppid() != parent {
                        return Err(nix::errno::Errno::ESRCH.into());
                    }
                    Ok(())
                });
            }
        }

        /// Who listens on `addr`, as "pid N (name)", when `/proc` tells:
        /// the listening socket's inode from `/proc/net/tcp{,6}`, then the
        /// process holding a descriptor on it. `None` when it cannot tell
        /// (another user's process, another network namespace).
        pub(crate) fn who_listens(addr: SocketAddr) -> Option<String> {
            let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
                .iter()
                .filter_map(|table| std::fs::read_to_string(table).ok())
                .find_map(|text| listening_inode(&text, addr))?;
            let target = format!("socket:[{inode}]");
            for entry in std::fs::read_dir("/proc").ok()?.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
                let holds = fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.as_os_str() == std::ffi::OsStr::new(&target))
                });
                if holds {
                    let pid = Pid::from_raw(pid);
                    return Some(match name(pid) {
                        Some(n) => format!("pid {pid} ({n})"),
                        None => format!("pid {pid}"),
                    });
                }
            }
            None
        }

        /// The control channel's socket address in the abstract namespace
        /// (unix(7)): no file, so it needs nothing writable; it lives as long
        /// as the socket, in this network namespace.
        pub(crate) fn abstract_address(name: &str) -> Option<std::os::unix::net::SocketAddr> {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name).ok()
        }

        /// The uid and pid of the process at the other end of `stream`
        /// (`SO_PEERCRED`, unix(7)).
        pub(crate) fn peer_cred(
            stream: &std::os::unix::net::UnixStream,
        ) -> Option<(u32, Option<u32>)> {
            use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
            let cred = getsockopt(stream, PeerCredentials).ok()?;
            Some((cred.uid(), u32::try_from(cred.pid()).ok().filter(|&p| p != 0)))
        }

        /// The resident memory of process `pid` in bytes (`VmRSS` of
        /// `/proc/PID/status`).
        pub(crate) fn rss(pid: Pid) -> Option<u64> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            let kb: u64 = kb.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kb * 1024)
        }

        /// The inode of the socket listening on `addr` (or on the wildcard
        /// address of its family, same port) in a `/proc/net/tcp{,6}` table.
        fn listening_inode(table: &str, addr: SocketAddr) -> Option<u64> {
            table.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                if f.len() < 10 || f[3] != "0A" {
                    return None;
                }
                let (ip, port) = f[1].split_once(':')?;
                if u16::from_str_radix(port, 16).ok()? != addr.port() {
                    return None;
                }
                let ip = parse_ip(ip)?;
                let matches = ip == addr.ip()
                    || ip.is_unspecified()
                    || matches!((ip, addr.ip()), (IpAddr::V6(v6), IpAddr::V4(v4))
                        if v6.to_ipv4_mapped() == Some(v4));
                matches.then(|| f[9].parse().ok()).flatten()
            })
        }

        /// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in hex,
        /// each in the host's byte order.
        fn parse_ip(hex: &str) -> Option<IpAddr> {
            let words: Option<Vec<[u8; 4]>> = hex
                .as_bytes()
                .chunks(8)
                .map(|w| {
                    let w = std::str::from_utf8(w).ok()?;
                    Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
                })
                .collect();
            let bytes: Vec<u8> = words?.concat();
            match bytes.len() {
                4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
                16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))),
                _ => None,
            }
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn reads_proc_net_tcp() {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let who = who_listens(addr).expect("this test process listens");
                assert_eq!(who, format!("pid {} ({})", std::process::id(),
                    name(nix::unistd::getpid()).unwrap()));
                drop(listener);
                assert_eq!(who_listens(addr), None);
            }

            #[test]
            fn reads_its_own_rss() {
                let rss = rss(nix::unistd::getpid()).unwrap();
                assert!(rss > 1 << 20, "{rss}");
            }

            #[test]
            fn parses_stat_lines_with_odd_names() {
                assert_eq!(state_and_ppid("12 (a) b (c)) S 7 12 12"), Some(('S', 7)));
                let me = nix::unistd::getpid();
                assert!(children(nix::unistd::getppid()).contains(&me));
            }
        }
    } else {
        /// Unknown without `/proc`: assumed.
        pub(crate) fn single_threaded() -> bool {
            true
        }

        /// A pipe whose two ends are close-on-exec. There is no `pipe2`
        /// here: the flag is set right after, which is safe while the
        /// process has one thread (the guard's split), as nothing can fork
        /// in between.
        pub(crate) fn cloexec_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
            use nix::fcntl::{FcntlArg, FdFlag, fcntl};
            let (read, write) = nix::unistd::pipe()?;
            for fd in [&read, &write] {
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
            }
            Ok((read, write))
        }

        /// There is no subreaper here: orphans go to PID 1.
        pub(crate) fn become_subreaper() {}

        /// Without `/proc` the children of a process are not listed; those
        /// that end are still reaped.
        pub(crate) fn children(_parent: Pid) -> Vec<Pid> {
            Vec::new()
        }

        /// Unknown without `/proc`.
        pub(crate) fn name(_pid: Pid) -> Option<String> {
            None
        }

        /// There is no death signal here: a service outlives a supervisor
        /// killed with SIGKILL (the guard cannot see it either).
        pub(crate) fn tie_to_parent(_cmd: &mut Command) {}

        /// Unknown without `/proc`.
        pub(crate) fn who_listens(_addr: SocketAddr) -> Option<String> {
            None
        }

        /// There is no abstract socket namespace here: the control socket
        /// needs its folder.
        pub(crate) fn abstract_address(_name: &str) -> Option<std::os::unix::net::SocketAddr> {
            None
        }

        /// Only abstract sockets need it, and there are none here.
        pub(crate) fn peer_cred(
            _stream: &std::os::unix::net::UnixStream,
        ) -> Option<(u32, Option<u32>)> {
            None
        }

        /// Unknown without `/proc`.
        pub(crate) fn rss(_pid: Pid) -> Option<u64> {
            None
        }
    }
}
