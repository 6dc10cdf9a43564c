//! Runs the gRPC server (the Checkpoint service plus reflection, so
//! grpcurl-like clients work without the .proto) on the listeners until
//! shutdown.

use rewind_proto::v1::checkpoint_server::CheckpointServer;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::CheckpointService;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("Cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("The gRPC server on {transport} failed")]
    Serve {
        transport: &'static str,
        #[source]
        source: tonic::transport::Error,
    },
}

fn router(service: &CheckpointService) -> Result<tonic::transport::server::Router, ServeError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rewind_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    Ok(Server::builder().add_service(CheckpointServer::new(service.clone())).add_service(reflection))
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    // A dropped sender also means shutdown.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves until `shutdown` turns true (or its sender is dropped).
pub async fn serve(
    service: CheckpointService,
    unix: tokio::net::UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let unix_server =
        router(&service)?.serve_with_incoming_shutdown(UnixListenerStream::new(unix), wait_for(shutdown.clone()));
    let unix_server =
        async { unix_server.await.map_err(|source| ServeError::Serve { transport: "the Unix socket", source }) };
    match tcp {
        None => unix_server.await,
        Some(listener) => {
            let tcp_server =
                router(&service)?.serve_with_incoming_shutdown(TcpIncoming::from(listener), wait_for(shutdown));
            let tcp_server =
                async { tcp_server.await.map_err(|source| ServeError::Serve { transport: "TCP", source }) };
            tokio::try_join!(unix_server, tcp_server).map(|_| ())
        }
    }
}
