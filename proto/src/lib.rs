//! Wire types of the `rewind.v1` gRPC API. Nothing but generated code and the
//! descriptor set used for server reflection.

pub mod v1 {
    tonic::include_proto!("rewind.v1");

    /// Encoded `FileDescriptorSet` for tonic-reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rewind_v1_descriptor");
}
