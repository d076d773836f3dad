//! Memory probes from `/proc/PID/status` (Linux).

/// A `kB` field of `/proc/PID/status`.
fn status_field_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("reading /proc/{pid}/status: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no {field}"))?;
    let value = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .map_err(|e| anyhow::anyhow!("/proc/{pid}/status {field}: {e}"))?;
    Ok(value)
}

/// Current resident set size (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field_kib(pid, "VmRSS")
}

/// Peak resident set size since the process started (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field_kib(pid, "VmHWM")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let rss = super::rss_kib(pid).expect("rss");
        let peak = super::peak_rss_kib(pid).expect("peak");
        assert!(rss > 0 && peak >= rss, "rss {rss} peak {peak}");
    }
}
