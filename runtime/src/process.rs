//! The process's own resource metrics, read from `/proc` at each scrape (Linux;
//! on a system without `/proc` the series are absent, not zero).
//!
//! - `process_cpu_seconds_total`: user and system CPU time (counter, seconds;
//!   `utime` + `stime` of `/proc/self/stat`, proc(5)).
//! - `process_resident_memory_bytes`: resident set size (gauge; `VmRSS` of
//!   `/proc/self/status`).
//! - `meridian_process_cpus`: CPUs the process may run on
//!   ([`std::thread::available_parallelism`]: affinity and cgroup quota), so that
//!   `rate(process_cpu_seconds_total[5m]) / meridian_process_cpus` is a
//!   utilisation in 0..1.
//! - `meridian_host_memory_bytes`: the host's memory (`MemTotal` of
//!   `/proc/meminfo`), so that RSS over it is a fraction.
//!
//! The first two are the names of the Prometheus client libraries' process
//! collectors, so dashboards made for those work. Nothing runs between scrapes.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The unit of `utime` and `stime` in `/proc/self/stat`: clock ticks of
/// `USER_HZ`, which the kernel fixes at 100 per second for user space on every
/// architecture Linux runs on (`sysconf(_SC_CLK_TCK)`).
pub const USER_HZ: u64 = 100;

/// Registers the process metrics in `registry`: read on each scrape.
/// Once per registry ([`crate::Health::register`] calls it).
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = |path| std::fs::read_to_string(path).ok();
        if let Some(cpu) = cpu_time_now() {
            let counter = ConstCounter::new(cpu.as_secs_f64());
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                read("/proc/self/status").as_deref().and_then(|s| kib_field(s, "VmRSS:")),
            ),
            (
                "meridian_process_cpus",
                "CPUs the process may run on (affinity and cgroup quota)",
                std::thread::available_parallelism().ok().and_then(|n| i64::try_from(n.get()).ok()),
            ),
            (
                "meridian_host_memory_bytes",
                "The host's memory (MemTotal), in bytes",
                read("/proc/meminfo").as_deref().and_then(|s| kib_field(s, "MemTotal:")),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// This process's user plus system CPU time so far (`/proc/self/stat`); `None`
/// where there is no `/proc` or it does not parse. The SFU's load sampler turns
/// it into cores used between heartbeats.
pub fn cpu_time_now() -> Option<Duration> {
    cpu_time(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User plus system CPU time from the text of `/proc/self/stat`, or `None` if it
/// does not parse. Fields are counted after the last `)`, since the command
/// name before it may hold spaces and parentheses.
fn cpu_time(stat: &str) -> Option<Duration> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After `)`: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    let whole = Duration::from_secs(ticks / USER_HZ);
    whole.checked_add(Duration::from_nanos((ticks % USER_HZ) * (1_000_000_000 / USER_HZ)))
}

/// The value of a `Key:   1234 kB` line of `/proc/self/status` or
/// `/proc/meminfo`, in bytes.
fn kib_field(text: &str, key: &str) -> Option<i64> {
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    let kib: i64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_in_ticks_of_a_hundredth_of_a_second() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (meridian (x) sfu) S 1 4242 4242 0 -1 4194560 1990 0 0 0 1234 567 0 0 20 0 9 0 123 1 2";
        assert_eq!(cpu_time(stat), Some(Duration::from_millis(18_010)));
        assert_eq!(cpu_time("4242 (short) S 1"), None, "too few fields");
        assert_eq!(cpu_time("no parenthesis"), None);
        let overflow = format!("1 (x) S 1 1 1 0 -1 0 0 0 0 0 {} 1 0", u64::MAX);
        assert_eq!(cpu_time(&overflow), None, "a sum that overflows is no value, not a wrapped one");
    }

    #[test]
    fn memory_fields_are_read_in_kib_and_given_in_bytes() {
        let status = "Name:\tmeridian\nVmPeak:\t  200000 kB\nVmRSS:\t   24576 kB\nThreads:\t9\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(24576 * 1024));
        assert_eq!(kib_field("MemTotal:       16318852 kB\n", "MemTotal:"), Some(16_318_852 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        assert_eq!(kib_field("VmRSS:\t12 pages\n", "VmRSS:"), None, "only kB is understood");
    }

    #[test]
    fn a_registry_with_the_collector_renders_the_process_series() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("meridian_process_cpus "), "{text}");
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
            assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
            assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
            assert!(text.contains("\nmeridian_host_memory_bytes "), "{text}");
        }
    }
}
