//! GPUs through NVML, behind [`GpuSource`] so that the sampler runs the same with a scripted
//! GPU ([`FakeGpu`]) on machines without one. Every read is fallible on its own: a GPU that
//! cannot report its power still reports its utilisation. A host without NVML gets no
//! source and one line saying why, never a failure.

use std::sync::atomic::{AtomicU64, Ordering};

use kvbench_common::agent::GpuInfo;
use kvbench_common::telemetry::{GpuField, GpuKey};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;

/// One read of one field: its value, or why it could not be read.
pub type Read<T> = Result<T, GpuReadError>;

/// A GPU reading the driver refused, in the driver's own words (`Not Supported`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GpuReadError(pub String);

impl From<&str> for GpuReadError {
    fn from(s: &str) -> Self {
        GpuReadError(s.to_owned())
    }
}

impl From<String> for GpuReadError {
    fn from(s: String) -> Self {
        GpuReadError(s)
    }
}

/// A field that could not be read, and why.
pub type FailedRead = (&'static str, String);

/// One GPU at one instant.
#[derive(Debug, Clone)]
pub struct GpuReading {
    /// SM busy share over NVML's last sample period, percent.
    pub util_pct: Read<f64>,
    /// Memory-controller busy share, percent.
    pub mem_util_pct: Read<f64>,
    pub mem_used_bytes: Read<f64>,
    pub mem_total_bytes: Read<f64>,
    pub power_w: Read<f64>,
    /// The driver's total energy counter since it loaded, millijoules (Volta and later).
    pub energy_mj: Read<f64>,
    pub temp_c: Read<f64>,
    pub sm_clock_mhz: Read<f64>,
    /// Compute processes: (pid, GPU memory in bytes where known).
    pub processes: Read<Vec<(u32, Option<u64>)>>,
}

impl GpuReading {
    /// The reading as [`GpuKey`]-named values, and `(field, error)` for each failed read.
    pub fn flatten(&self, index: u32) -> (Vec<(String, f64)>, Vec<FailedRead>) {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        let scalars: [(GpuField, &Read<f64>); 8] = [
            (GpuField::UtilPct, &self.util_pct),
            (GpuField::MemUtilPct, &self.mem_util_pct),
            (GpuField::MemUsedBytes, &self.mem_used_bytes),
            (GpuField::MemTotalBytes, &self.mem_total_bytes),
            (GpuField::PowerW, &self.power_w),
            (GpuField::EnergyMj, &self.energy_mj),
            (GpuField::TempC, &self.temp_c),
            (GpuField::SmClockMhz, &self.sm_clock_mhz),
        ];
        let key = |field| GpuKey::Field { index, field }.to_string();
        for (field, read) in scalars {
            match read {
                Ok(v) => values.push((key(field), *v)),
                Err(e) => errors.push((field.name(), e.0.clone())),
            }
        }
        match &self.processes {
            Ok(list) => {
                values.push((key(GpuField::Processes), list.len() as f64));
                for (pid, mem) in list {
                    if let Some(m) = mem {
                        let k = GpuKey::ProcessMem { index, pid: *pid };
                        values.push((k.to_string(), *m as f64));
                    }
                }
            }
            Err(e) => errors.push((GpuField::Processes.name(), e.0.clone())),
        }
        (values, errors)
    }
}

/// Where GPU readings come from.
pub trait GpuSource: Send + Sync + std::fmt::Debug {
    /// The GPUs to sample (indices 0..count).
    fn count(&self) -> u32;
    /// The inventory entry of GPU `index`.
    fn info(&self, index: u32) -> Read<GpuInfo>;
    /// Reads GPU `index` now. Blocking: call it off the async workers.
    fn read(&self, index: u32) -> GpuReading;
}

/// The real GPUs, through the NVIDIA driver's NVML library.
#[derive(Debug)]
pub struct NvmlSource {
    nvml: nvml_wrapper::Nvml,
    count: u32,
}

impl NvmlSource {
    /// Loads NVML; the error says why there is no GPU telemetry on this host.
    pub fn open() -> Result<NvmlSource, GpuReadError> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count failed: {e}"))?;
        Ok(NvmlSource { nvml, count })
    }
}

fn text(e: impl std::fmt::Display) -> GpuReadError {
    GpuReadError(e.to_string())
}

impl GpuSource for NvmlSource {
    fn count(&self) -> u32 {
        self.count
    }

    fn info(&self, index: u32) -> Read<GpuInfo> {
        let d = self.nvml.device_by_index(index).map_err(text)?;
        Ok(GpuInfo {
            index,
            name: d.name().unwrap_or_default(),
            uuid: d.uuid().unwrap_or_default(),
            memory_total_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
        })
    }

    fn read(&self, index: u32) -> GpuReading {
        let d = match self.nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => return GpuReading::failed(&e.to_string()),
        };
        let util = d.utilization_rates().map_err(text);
        let mem = d.memory_info().map_err(text);
        GpuReading {
            util_pct: util
                .as_ref()
                .map(|u| f64::from(u.gpu))
                .map_err(Clone::clone),
            mem_util_pct: util.map(|u| f64::from(u.memory)),
            mem_used_bytes: mem.as_ref().map(|m| m.used as f64).map_err(Clone::clone),
            mem_total_bytes: mem.map(|m| m.total as f64),
            power_w: d
                .power_usage()
                .map(|mw| f64::from(mw) / 1000.0)
                .map_err(text),
            energy_mj: d.total_energy_consumption().map(|e| e as f64).map_err(text),
            temp_c: d
                .temperature(TemperatureSensor::Gpu)
                .map(f64::from)
                .map_err(text),
            sm_clock_mhz: d.clock_info(Clock::SM).map(f64::from).map_err(text),
            processes: d
                .running_compute_processes()
                .map(|ps| {
                    ps.into_iter()
                        .map(|p| {
                            let mem = match p.used_gpu_memory {
                                UsedGpuMemory::Used(b) => Some(b),
                                UsedGpuMemory::Unavailable => None,
                            };
                            (p.pid, mem)
                        })
                        .collect()
                })
                .map_err(text),
        }
    }
}

impl GpuReading {
    /// A reading where every field failed the same way (the device itself is unreachable).
    pub fn failed(why: &str) -> GpuReading {
        let e = || Err(GpuReadError::from(why));
        GpuReading {
            util_pct: e(),
            mem_util_pct: e(),
            mem_used_bytes: e(),
            mem_total_bytes: e(),
            power_w: e(),
            energy_mj: e(),
            temp_c: e(),
            sm_clock_mhz: e(),
            processes: Err(why.into()),
        }
    }
}

/// A scripted GPU for tests and for hosts without one: constant utilisation and power, an
/// energy counter that advances with the wall clock at that power, and fields that can be
/// made to fail. The numbers it reports are its script, not measurements.
#[derive(Debug)]
pub struct FakeGpu {
    pub gpus: u32,
    pub util_pct: f64,
    pub power_w: f64,
    pub mem_used_bytes: f64,
    pub mem_total_bytes: f64,
    /// Fields whose reads fail ("power_w", "energy_mj", ...).
    pub failing: Vec<&'static str>,
    start: std::time::Instant,
    reads: AtomicU64,
}

impl FakeGpu {
    pub fn new(gpus: u32, util_pct: f64, power_w: f64) -> FakeGpu {
        FakeGpu {
            gpus,
            util_pct,
            power_w,
            mem_used_bytes: 40e9,
            mem_total_bytes: 80e9,
            failing: Vec::new(),
            start: std::time::Instant::now(),
            reads: AtomicU64::new(0),
        }
    }

    /// How many readings were taken.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn field(&self, name: &str, v: f64) -> Read<f64> {
        if self.failing.contains(&name) {
            Err("Not Supported".into())
        } else {
            Ok(v)
        }
    }
}

impl GpuSource for FakeGpu {
    fn count(&self) -> u32 {
        self.gpus
    }

    fn info(&self, index: u32) -> Read<GpuInfo> {
        Ok(GpuInfo {
            index,
            name: "kvbench fake GPU".into(),
            uuid: format!("GPU-fake-{index}"),
            memory_total_bytes: self.mem_total_bytes as u64,
        })
    }

    fn read(&self, _index: u32) -> GpuReading {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let elapsed = self.start.elapsed().as_secs_f64();
        GpuReading {
            util_pct: self.field("util_pct", self.util_pct),
            mem_util_pct: self.field("mem_util_pct", self.util_pct / 2.0),
            mem_used_bytes: self.field("mem_used_bytes", self.mem_used_bytes),
            mem_total_bytes: self.field("mem_total_bytes", self.mem_total_bytes),
            power_w: self.field("power_w", self.power_w),
            energy_mj: self.field("energy_mj", 1.0e9 + self.power_w * elapsed * 1000.0),
            temp_c: self.field("temp_c", 55.0),
            sm_clock_mhz: self.field("sm_clock_mhz", 1980.0),
            processes: if self.failing.contains(&"processes") {
                Err("Not Supported".into())
            } else {
                Ok(vec![(4242, Some(self.mem_used_bytes as u64))])
            },
        }
    }
}

/// The inventory of a source's GPUs, and a note for those it could not read.
pub fn inventory(source: &dyn GpuSource) -> (Vec<GpuInfo>, Option<String>) {
    let mut gpus = Vec::new();
    let mut notes = Vec::new();
    for index in 0..source.count() {
        match source.info(index) {
            Ok(g) => gpus.push(g),
            Err(e) => notes.push(format!("GPU {index}: {e}")),
        }
    }
    (gpus, (!notes.is_empty()).then(|| notes.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_field_leaves_the_others() {
        let mut g = FakeGpu::new(1, 80.0, 300.0);
        g.failing = vec!["power_w", "processes"];
        let (values, errors) = g.read(0).flatten(3);
        let keys: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"gpu3.util_pct"));
        assert!(keys.contains(&"gpu3.energy_mj"));
        assert!(!keys.contains(&"gpu3.power_w"));
        assert!(!keys.contains(&"gpu3.processes"));
        assert_eq!(
            errors.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            ["power_w", "processes"]
        );
    }

    #[test]
    fn processes_report_their_memory() {
        let g = FakeGpu::new(1, 10.0, 100.0);
        let (values, errors) = g.read(0).flatten(0);
        assert!(errors.is_empty());
        let get = |k: &str| values.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("gpu0.processes"), Some(1.0));
        assert_eq!(get("gpu0.pid4242.mem_bytes"), Some(40e9));
    }
}
