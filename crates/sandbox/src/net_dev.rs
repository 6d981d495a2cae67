//! The network counters of a namespace, as `/proc/PID/net/dev` shows them to a process in it
//! (the pod's pause, for a pod's stats).

use std::path::Path;

/// The counters of one network interface (`/proc/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace of process `pid`, loopback left out; `None` when
/// the process is gone or the file cannot be read.
pub fn read_net_dev(pid: i32) -> Option<Vec<InterfaceCounters>> {
    let text = std::fs::read_to_string(Path::new(&format!("/proc/{pid}/net/dev"))).ok()?;
    Some(parse_net_dev(&text))
}

/// The interfaces of a `/proc/net/dev` table, loopback left out.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let c: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if name == "lo" || c.len() < 12 {
                return None;
            }
            Some(InterfaceCounters {
                name: name.to_string(),
                rx_bytes: c[0],
                rx_packets: c[1],
                rx_errors: c[2],
                rx_dropped: c[3],
                tx_bytes: c[8],
                tx_packets: c[9],
                tx_errors: c[10],
                tx_dropped: c[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn net_dev_lists_interfaces_but_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     560       8    0    0    0     0          0         0      560       8    0    0    0     0       0          0
  eth0:    1296      16    2    0    0     0          0         0      796      10    1    0    0     0       0          0
 net1: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
";
        let interfaces = parse_net_dev(text);
        let summary: Vec<_> = interfaces
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.rx_bytes,
                    i.rx_errors,
                    i.tx_bytes,
                    i.tx_errors,
                )
            })
            .collect();
        assert_eq!(summary, [("eth0", 1296, 2, 796, 1), ("net1", 5, 0, 6, 0)]);
        assert_eq!(
            (interfaces[0].rx_packets, interfaces[0].tx_packets),
            (16, 10)
        );
        assert_eq!((interfaces[1].rx_dropped, interfaces[1].tx_dropped), (0, 0));
    }

    #[test]
    fn this_process_sees_its_namespace() {
        // Loopback is left out; whatever else there is parses.
        let me = read_net_dev(std::process::id() as i32).unwrap();
        assert!(me.iter().all(|i| i.name != "lo"));
        assert_eq!(read_net_dev(i32::MAX), None);
    }
}
