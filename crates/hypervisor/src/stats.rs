//! libvirt's bulk statistics call (`virConnectGetAllDomainStats`, what `virsh domstats` uses):
//! the state, CPU time, memory, vCPUs, block and network counters of every domain in one round
//! trip. `vmctl top` refreshes from it and `vmctl metrics` answers a scrape from it.
//!
//! The `virt` crate (0.5) hands the records back as raw pointers, so the one read of them is
//! here, in [`fetch`]: it copies every typed parameter out as a ([`Param`]) pair and frees the
//! list with libvirt's own `virDomainStatsRecordListFree`. Everything after is safe, pure code
//! ([`DomainStats::from_params`]) that the unit tests feed directly.

use serde::Serialize;

use crate::libvirt::State;

/// One typed parameter's value, as libvirt typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(String),
}

impl Value {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int(v) => u64::try_from(v).ok(),
            Self::UInt(v) => Some(v),
            _ => None,
        }
    }
}

/// One `field=value` of a domain's statistics (`cpu.time`, `net.0.rx.bytes`…).
pub type Param = (String, Value);

/// One domain's counters. A field is `None` when libvirt did not report it: an inactive domain
/// has only its state; the test driver reports little more.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DomainStats {
    pub name: String,
    pub state: State,
    /// Host CPU time the domain has used (`cpu.time`), in nanoseconds.
    pub cpu_time_ns: Option<u64>,
    /// vCPUs online (`vcpu.current`).
    pub vcpus: Option<u32>,
    /// Memory the guest has now (`balloon.current`), KiB.
    pub memory_kib: Option<u64>,
    /// Memory the guest may have (`balloon.maximum`), KiB.
    pub memory_max_kib: Option<u64>,
    /// The qemu process's resident memory on the host (`balloon.rss`), KiB.
    pub rss_kib: Option<u64>,
    /// Bytes read and written over all disks (`block.N.rd.bytes`, `block.N.wr.bytes`).
    pub block_read_bytes: Option<u64>,
    pub block_write_bytes: Option<u64>,
    /// Bytes received and sent over all NICs (`net.N.rx.bytes`, `net.N.tx.bytes`).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

fn add(slot: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *slot = Some(slot.unwrap_or(0).saturating_add(v));
    }
}

impl DomainStats {
    /// Reads one record's parameters (pure). Unknown fields are ignored.
    pub fn from_params(name: &str, params: &[Param]) -> Self {
        let mut s = DomainStats {
            name: name.to_string(),
            state: State::Unknown,
            ..Default::default()
        };
        for (field, value) in params {
            let v = value.as_u64();
            match field.as_str() {
                "state.state" => s.state = v.map_or(State::Unknown, state_from_number),
                "cpu.time" => s.cpu_time_ns = v,
                "vcpu.current" => s.vcpus = v.and_then(|n| u32::try_from(n).ok()),
                "balloon.current" => s.memory_kib = v,
                "balloon.maximum" => s.memory_max_kib = v,
                "balloon.rss" => s.rss_kib = v,
                f => {
                    // `block.<N>.rd.bytes`, `net.<N>.tx.bytes`: summed over devices.
                    let mut parts = f.split('.');
                    let (Some(group), Some(index), rest) =
                        (parts.next(), parts.next(), parts.collect::<Vec<_>>())
                    else {
                        continue;
                    };
                    if index.parse::<u32>().is_err() {
                        continue;
                    }
                    match (group, rest.as_slice()) {
                        ("block", ["rd", "bytes"]) => add(&mut s.block_read_bytes, v),
                        ("block", ["wr", "bytes"]) => add(&mut s.block_write_bytes, v),
                        ("net", ["rx", "bytes"]) => add(&mut s.net_rx_bytes, v),
                        ("net", ["tx", "bytes"]) => add(&mut s.net_tx_bytes, v),
                        _ => {}
                    }
                }
            }
        }
        if !s.state.is_active() {
            // libvirt 9.0 reports a `cpu.time` for a shut-off domain that is not the VM's (the
            // lab saw 0.82 s); a stopped VM has no counters.
            s = DomainStats {
                name: s.name,
                state: s.state,
                ..Default::default()
            };
        }
        s
    }
}

/// `virDomainState` numbers (libvirt-domain.h).
fn state_from_number(n: u64) -> State {
    match n {
        1 => State::Running,
        2 => State::Blocked,
        3 => State::Paused,
        4 => State::ShuttingDown,
        5 => State::ShutOff,
        6 => State::Crashed,
        7 => State::Suspended,
        _ => State::Unknown,
    }
}

/// The statistics groups asked for: state, CPU total, balloon, vCPU, interface, block.
const GROUPS: u32 = virt::sys::VIR_DOMAIN_STATS_STATE
    | virt::sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | virt::sys::VIR_DOMAIN_STATS_BALLOON
    | virt::sys::VIR_DOMAIN_STATS_VCPU
    | virt::sys::VIR_DOMAIN_STATS_INTERFACE
    | virt::sys::VIR_DOMAIN_STATS_BLOCK;

/// Every domain's statistics in one `virConnectGetAllDomainStats` call, as (name, parameters).
#[allow(unsafe_code)]
pub(crate) fn fetch(
    conn: &virt::connect::Connect,
) -> Result<Vec<(String, Vec<Param>)>, virt::error::Error> {
    use std::ffi::CStr;
    use virt::sys;

    /// Frees the record list however the reading below ends.
    struct List(*mut sys::virDomainStatsRecordPtr);
    impl Drop for List {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the list came from virConnectGetAllDomainStats and is freed once.
                unsafe { sys::virDomainStatsRecordListFree(self.0) }
            }
        }
    }

    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is an open connection for the whole call; libvirt allocates `records`
    // (a NULL-terminated array of `n` records) and we free it with the matching call.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), GROUPS, &mut records, 0) };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let list = List(records);
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `i < n`, the number of records libvirt returned; each record, its domain and
        // its `nparams` parameters stay valid until the list is freed (after this loop). Names
        // are NUL-terminated C strings (the field is a fixed NUL-terminated buffer); a value is
        // read through the union member its `type_` names.
        unsafe {
            let rec = *list.0.add(i);
            if rec.is_null() {
                break;
            }
            let name_ptr = sys::virDomainGetName((*rec).dom);
            let name = if name_ptr.is_null() {
                continue;
            } else {
                CStr::from_ptr(name_ptr).to_string_lossy().into_owned()
            };
            let count = usize::try_from((*rec).nparams).unwrap_or(0);
            let mut params = Vec::with_capacity(count);
            for j in 0..count {
                let p = &*(*rec).params.add(j);
                let field = CStr::from_ptr(p.field.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                let value = match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => Value::Int(i64::from(p.value.i)),
                    sys::VIR_TYPED_PARAM_UINT => Value::UInt(u64::from(p.value.ui)),
                    sys::VIR_TYPED_PARAM_LLONG => Value::Int(p.value.l),
                    sys::VIR_TYPED_PARAM_ULLONG => Value::UInt(p.value.ul),
                    sys::VIR_TYPED_PARAM_DOUBLE => Value::Double(p.value.d),
                    sys::VIR_TYPED_PARAM_BOOLEAN => Value::Bool(p.value.b != 0),
                    sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                        Value::Str(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                    }
                    _ => continue,
                };
                params.push((field, value));
            }
            out.push((name, params));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(f: &str, v: u64) -> Param {
        (f.to_string(), Value::UInt(v))
    }

    #[test]
    fn a_running_domains_counters_are_read_and_devices_summed() {
        let params = vec![
            (String::from("state.state"), Value::Int(1)),
            (String::from("state.reason"), Value::Int(1)),
            u("cpu.time", 5_000_000_000),
            u("vcpu.current", 2),
            u("vcpu.maximum", 4),
            u("balloon.current", 2_097_152),
            u("balloon.maximum", 2_097_152),
            u("balloon.rss", 400_000),
            u("block.count", 2),
            (String::from("block.0.name"), Value::Str("vda".into())),
            u("block.0.rd.bytes", 1000),
            u("block.0.wr.bytes", 10),
            u("block.1.rd.bytes", 24),
            u("block.1.wr.bytes", 5),
            u("block.1.allocation", 999),
            u("net.count", 1),
            u("net.0.rx.bytes", 300),
            u("net.0.tx.bytes", 200),
            u("net.0.rx.pkts", 3),
        ];
        let s = DomainStats::from_params("vm1", &params);
        assert_eq!(
            s,
            DomainStats {
                name: "vm1".into(),
                state: State::Running,
                cpu_time_ns: Some(5_000_000_000),
                vcpus: Some(2),
                memory_kib: Some(2_097_152),
                memory_max_kib: Some(2_097_152),
                rss_kib: Some(400_000),
                block_read_bytes: Some(1024),
                block_write_bytes: Some(15),
                net_rx_bytes: Some(300),
                net_tx_bytes: Some(200),
            }
        );
    }

    #[test]
    fn an_inactive_domain_has_only_its_state_even_when_libvirt_reports_a_cpu_time() {
        let s = DomainStats::from_params(
            "off",
            &[
                (String::from("state.state"), Value::Int(5)),
                u("cpu.time", 820_000_000),
                u("balloon.maximum", 1_048_576),
            ],
        );
        assert_eq!(s.state, State::ShutOff);
        assert_eq!(s.cpu_time_ns, None);
        assert_eq!(s.net_rx_bytes, None);
        assert_eq!(s.memory_max_kib, None);
    }
}
