//! The gRPC adapter: the agent's one boundary between the wire and its core. Requests
//! become domain types here (through `kvbench_proto::convert`), the core's `RoundEvent`s
//! become wire events here, each refusal becomes a status code here, and nothing else in
//! the agent names a generated type. Also the server itself: [`serve`] and [`spawn`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvbench_common::agent::RoundRequest;
use kvbench_proto::v1::{self, agent_server::Agent, agent_server::AgentServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request as GrpcRequest, Response, Status};

use crate::core::{AgentCore, RoundRefused};
use crate::AgentConfig;

/// The service as tonic serves it (datasets travel with their rounds: large requests are
/// allowed).
fn grpc(core: AgentCore) -> AgentServer<AgentService> {
    AgentServer::new(AgentService {
        core: Arc::new(core),
    })
    .max_decoding_message_size(512 << 20)
}

/// The agent's service as tonic serves it: the core, converted.
#[derive(Debug)]
pub struct AgentService {
    core: Arc<AgentCore>,
}

fn refused(e: &RoundRefused) -> Status {
    if e.is_bad_request() {
        Status::invalid_argument(e.to_string())
    } else {
        Status::failed_precondition(e.to_string())
    }
}

type WireEvents =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::RoundEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn restart_engine(
        &self,
        _req: GrpcRequest<v1::RestartEngineRequest>,
    ) -> Result<Response<v1::RestartEngineResponse>, Status> {
        Ok(Response::new((&self.core.restart_outcome().await).into()))
    }

    async fn hello(
        &self,
        req: GrpcRequest<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        let r = req.get_ref();
        let info = self
            .core
            .hello(r.protocol_version, r.engine_status)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new((&info).into()))
    }

    type RunRoundStream = WireEvents;

    async fn run_round(
        &self,
        req: GrpcRequest<v1::RunRoundRequest>,
    ) -> Result<Response<Self::RunRoundStream>, Status> {
        let request = RoundRequest::try_from(req.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let spec = self
            .core
            .round_spec(request)
            .await
            .map_err(|e| refused(&e))?;
        let events =
            ReceiverStream::new(self.core.start_round(spec)).map(|e| Ok(v1::RoundEvent::from(&e)));
        Ok(Response::new(Box::pin(events)))
    }

    async fn stop_round(
        &self,
        req: GrpcRequest<v1::StopRoundRequest>,
    ) -> Result<Response<v1::StopRoundResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(v1::StopRoundResponse {
            stopped: self.core.stop_round(&r.scenario_id, r.round),
        }))
    }

    async fn clear_cache(
        &self,
        _req: GrpcRequest<v1::ClearCacheRequest>,
    ) -> Result<Response<v1::ClearCacheResponse>, Status> {
        Ok(Response::new((&self.core.clear_outcome().await).into()))
    }
}

/// Serves the agent protocol on a bound listener until `shutdown` is cancelled; rounds in
/// progress stop sending load then.
pub async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let choice = config.telemetry.gpu.clone();
    let (source, gpus, gpu_note) = tokio::task::spawn_blocking(move || open_gpus(choice))
        .await
        .unwrap_or_else(|e| (None, Vec::new(), Some(format!("GPU inventory failed: {e}"))));
    if let Some(note) = &gpu_note {
        tracing::info!("no GPU telemetry: {note}");
    }
    let unapplied = crate::scheduling::apply(&config.scheduling);
    for p in &unapplied {
        tracing::warn!("{p}");
    }
    let (nice, cpus) = crate::scheduling::current();
    tracing::info!(nice, cpus = ?cpus, "scheduling");
    let core = AgentCore::new(config, source, gpus, gpu_note, shutdown.child_token())
        .with_start_warnings(unapplied);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        .add_service(grpc(core))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

/// Opens the GPU source an agent samples, and reads its inventory. Blocking.
fn open_gpus(
    choice: crate::telemetry::GpuChoice,
) -> (
    Option<std::sync::Arc<dyn crate::telemetry::gpu::GpuSource>>,
    Vec<kvbench_common::agent::GpuInfo>,
    Option<String>,
) {
    let source: std::sync::Arc<dyn crate::telemetry::gpu::GpuSource> = match choice {
        crate::telemetry::GpuChoice::Off => {
            return (
                None,
                Vec::new(),
                Some("GPU sampling is off (telemetry.gpu: false)".into()),
            )
        }
        crate::telemetry::GpuChoice::Source(s) => s,
        crate::telemetry::GpuChoice::Nvml => match crate::telemetry::gpu::NvmlSource::open() {
            Ok(s) => std::sync::Arc::new(s),
            Err(e) => return (None, Vec::new(), Some(e.to_string())),
        },
    };
    let (gpus, note) = crate::telemetry::gpu::inventory(&*source);
    (Some(source), gpus, note)
}

/// An agent running in this process (the embedded default, and tests).
#[derive(Debug)]
pub struct AgentHandle {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl AgentHandle {
    /// `http://127.0.0.1:PORT`, for a gRPC channel.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts an agent on `127.0.0.1:0`.
pub async fn spawn(config: AgentConfig) -> std::io::Result<AgentHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, config, shutdown.clone()));
    Ok(AgentHandle {
        addr,
        shutdown,
        task,
    })
}
