//! A process's memory as Linux reports it in `/proc/PID/status`.

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS`, `VmHWM`) in bytes; `None` when the process
/// is gone or the field is missing.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_field(&status, field)
}

/// Resident memory now, in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS")
}

/// Peak resident memory so far (the high-water mark), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM")
}

fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_bytes_and_this_process_has_memory() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_field(s, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_field(s, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_status_field(s, "VmSwap"), None);
        assert!(rss(std::process::id()).unwrap() > 0);
        assert!(peak_rss(std::process::id()).unwrap() >= rss(std::process::id()).unwrap() / 2);
    }
}
