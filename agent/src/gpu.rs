//! GPU inventory through NVML. Every read is fallible on its own; a host without NVML gets
//! an empty inventory and a note saying why, never a crash.

use kvbench_proto::v1::GpuInfo;

/// Reads the GPUs this host has. Blocking: call it off the async workers.
pub fn inventory() -> (Vec<GpuInfo>, Option<String>) {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => return (Vec::new(), Some(format!("NVML unavailable: {e}"))),
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Some(format!("NVML device count failed: {e}"))),
    };
    let mut gpus = Vec::new();
    let mut notes = Vec::new();
    for index in 0..count {
        match nvml.device_by_index(index) {
            Ok(d) => gpus.push(GpuInfo {
                index,
                name: d.name().unwrap_or_default(),
                uuid: d.uuid().unwrap_or_default(),
                memory_total_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
            }),
            Err(e) => notes.push(format!("GPU {index}: {e}")),
        }
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (gpus, note)
}
