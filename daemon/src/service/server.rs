//! Runs the gRPC server (the Checkpoint service plus server reflection
//! v1 and v1alpha, so generic clients work without the .proto) on the
//! listeners until shutdown. Unix-socket connections go through
//! [`AuthorityNormaliser`], so clients that send the socket path as
//! `:authority` are served too.

use rewind_proto::v1::checkpoint_server::CheckpointServer;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::admission::Admission;
use super::authority::AuthorityNormaliser;
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
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rewind_proto::v1::FILE_DESCRIPTOR_SET)
    };
    // v1 for grpcurl and tonic clients; v1alpha for grpcio-reflection,
    // grpcui, Postman and older grpcurl, which speak only that.
    let v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let v1alpha = reflection().build_v1alpha().map_err(ServeError::Reflection)?;
    Ok(Server::builder().add_service(CheckpointServer::new(service.clone())).add_service(v1).add_service(v1alpha))
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
    let admission = Admission::new(service.policy.allowed_uids.clone());
    let mut refused = 0u64;
    let unix_incoming = UnixListenerStream::new(unix).filter_map(move |accepted| match accepted {
        Err(e) => Some(Err(e)),
        Ok(stream) => {
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            match admission.admit(stream, uid) {
                Ok(conn) => Some(Ok(AuthorityNormaliser::new(conn))),
                // Dropping the stream closes it; the caller sees EOF and
                // may retry. Logged on the first refusal and every 100th,
                // so a flood does not flood the log as well.
                Err(why) => {
                    refused += 1;
                    if refused == 1 || refused.is_multiple_of(100) {
                        tracing::warn!("connection from uid {uid:?} refused ({why:?}; {refused} so far)");
                    }
                    None
                }
            }
        }
    });
    let unix_server = router(&service)?.serve_with_incoming_shutdown(unix_incoming, wait_for(shutdown.clone()));
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
