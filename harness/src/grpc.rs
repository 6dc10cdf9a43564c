//! Blocking gRPC access to rewindd in a running guest, through the
//! forwarded loopback port (`Target::grpc_endpoint`). Scenarios are plain
//! synchronous code; this owns a small tokio runtime for the calls.

use std::future::Future;
use std::time::{Duration, Instant};

use rewind_proto::v1 as pb;
use rewind_proto::v1::checkpoint_client::CheckpointClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("Starting the gRPC client runtime")]
    Runtime(#[source] std::io::Error),
    #[error("Bad gRPC endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("Cannot connect to rewindd at {endpoint} within {waited:?}")]
    Connect {
        endpoint: String,
        waited: Duration,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("rewindd answered {rpc} with {code:?}: {message}")]
    Rpc { rpc: &'static str, code: tonic::Code, message: String },
}

pub struct Grpc {
    rt: tokio::runtime::Runtime,
    client: CheckpointClient<Channel>,
    pub endpoint: String,
}

impl Grpc {
    /// Connects, retrying until `timeout` (rewindd may still be starting).
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Grpc, GrpcError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(GrpcError::Runtime)?;
        let ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|source| GrpcError::Endpoint { endpoint: endpoint.to_string(), source })?
            .connect_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let channel = loop {
            match rt.block_on(ep.connect()) {
                Ok(c) => break c,
                Err(source) if started.elapsed() >= timeout => {
                    return Err(GrpcError::Connect {
                        endpoint: endpoint.to_string(),
                        waited: started.elapsed(),
                        source,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Ok(Grpc { rt, client: CheckpointClient::new(channel), endpoint: endpoint.to_string() })
    }

    /// Runs any call on the client: `g.call("GetHistory", |c| async move { c.get_history(..).await })`.
    pub fn call<T, F, Fut>(&mut self, rpc: &'static str, f: F) -> Result<T, GrpcError>
    where
        F: FnOnce(CheckpointClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client.clone();
        self.rt.block_on(f(client)).map(tonic::Response::into_inner).map_err(|s| GrpcError::Rpc {
            rpc,
            code: s.code(),
            message: s.message().to_string(),
        })
    }

    pub fn status(&mut self) -> Result<pb::Status, GrpcError> {
        self.call("GetStatus", |mut c| async move { c.get_status(pb::GetStatusRequest {}).await })
    }

    pub fn needs_rollback(&mut self) -> Result<bool, GrpcError> {
        self.call("NeedsRollback", |mut c| async move { c.needs_rollback(pb::NeedsRollbackRequest {}).await })
            .map(|r| r.value)
    }

    pub fn history(&mut self) -> Result<pb::History, GrpcError> {
        self.call("GetHistory", |mut c| async move { c.get_history(pb::GetHistoryRequest {}).await })
    }
}
